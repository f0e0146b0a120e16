package telemetry

import (
	"context"
	"fmt"
	"log/slog"
)

// QueueStore keeps the queued windows where they survive a restart. The
// agent's state store implements it: bbolt on a real device, memory in the
// simulator.
type QueueStore interface {
	// AppendWindow stores payload under seq, which is larger than every
	// stored seq, then drops the oldest windows until at most maxCount
	// windows of at most maxBytes payload bytes in total remain, and adds
	// the number dropped to the persistent drop counter, all in one
	// transaction. It returns how many it dropped.
	AppendWindow(ctx context.Context, seq uint64, payload []byte, maxCount int, maxBytes int64) (dropped int, err error)
	// FirstWindow returns the oldest stored window; ok is false when the
	// queue is empty.
	FirstWindow(ctx context.Context) (seq uint64, payload []byte, ok bool, err error)
	// RemoveWindow deletes the window stored under seq; removing a window
	// that is not there is not an error.
	RemoveWindow(ctx context.Context, seq uint64) error
	// QueueStats reports the stored windows and the drop counter.
	QueueStats(ctx context.Context) (QueueStats, error)
}

// QueueStats describe a queue.
type QueueStats struct {
	Windows int
	Bytes   int64
	// Dropped counts windows dropped because the queue was full, since
	// the state was created.
	Dropped uint64
}

// Limits bound the queue.
type Limits struct {
	MaxWindows int
	MaxBytes   int64
}

// DefaultLimits keep about 2 h 45 min of 10 s windows, or 4 MiB.
var DefaultLimits = Limits{MaxWindows: 1000, MaxBytes: 4 << 20}

// minQueueBytes is the smallest MaxBytes accepted: a queue must hold at
// least one window of a typical size.
const minQueueBytes = 16 << 10

// Queue is the bounded, persistent FIFO of encoded windows waiting for the
// broker's PUBACK. Windows leave it only by Remove (after delivery) or by
// being the oldest when a new one does not fit.
type Queue struct {
	store  QueueStore
	limits Limits
	log    *slog.Logger
	ready  chan struct{}
}

// NewQueue returns a queue over store. A nil logger discards.
func NewQueue(store QueueStore, limits Limits, log *slog.Logger) (*Queue, error) {
	if limits.MaxWindows < 1 {
		return nil, fmt.Errorf("%w: telemetry queue max windows %d must be at least 1", ErrLimits, limits.MaxWindows)
	}
	if limits.MaxBytes < minQueueBytes {
		return nil, fmt.Errorf("%w: telemetry queue max bytes %d must be at least %d", ErrLimits, limits.MaxBytes, minQueueBytes)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Queue{store: store, limits: limits, log: log, ready: make(chan struct{}, 1)}, nil
}

// Push appends an encoded window. A window larger than the byte bound is
// refused with ErrWindowTooLarge rather than emptying the queue for it.
func (q *Queue) Push(ctx context.Context, seq uint64, payload []byte) error {
	if int64(len(payload)) > q.limits.MaxBytes {
		return fmt.Errorf("%w: window %d is %d bytes, queue bound %d", ErrWindowTooLarge, seq, len(payload), q.limits.MaxBytes)
	}
	dropped, err := q.store.AppendWindow(ctx, seq, payload, q.limits.MaxWindows, q.limits.MaxBytes)
	if err != nil {
		return fmt.Errorf("queue telemetry window %d: %w", seq, err)
	}
	if dropped > 0 {
		q.log.Warn("telemetry queue full; dropped oldest windows", "dropped", dropped, "seq", seq,
			"max_windows", q.limits.MaxWindows, "max_bytes", q.limits.MaxBytes)
	}
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return nil
}

// Peek returns the oldest window without removing it.
func (q *Queue) Peek(ctx context.Context) (seq uint64, payload []byte, ok bool, err error) {
	seq, payload, ok, err = q.store.FirstWindow(ctx)
	if err != nil {
		return 0, nil, false, fmt.Errorf("read telemetry queue: %w", err)
	}
	return seq, payload, ok, nil
}

// Remove deletes a delivered window.
func (q *Queue) Remove(ctx context.Context, seq uint64) error {
	if err := q.store.RemoveWindow(ctx, seq); err != nil {
		return fmt.Errorf("remove delivered telemetry window %d: %w", seq, err)
	}
	return nil
}

// Stats reports the queue's contents and drop counter.
func (q *Queue) Stats(ctx context.Context) (QueueStats, error) { return q.store.QueueStats(ctx) }

// Ready receives a value after a Push, so a sender waiting on an empty
// queue wakes up. It is a hint: check with Peek.
func (q *Queue) Ready() <-chan struct{} { return q.ready }
