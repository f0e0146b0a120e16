package state

import (
	"context"
	"fmt"
	"sync"

	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
)

// Memory is a store that lives in the process: nothing survives a restart.
// The simulator uses it; its footprint is the queued windows plus a few
// words.
type Memory struct {
	mu      sync.Mutex
	id      string
	session uint64
	seq     uint64
	dropped uint64
	models  []Model
	queue   []memWindow // oldest first
	head    int         // queue[:head] are removed
	bytes   int64
	closed  bool
	// deploys and desired are the update engine's records (deploy.go).
	deploys map[string][]byte
	desired *proto.DesiredDeployment
}

type memWindow struct {
	seq     uint64
	payload []byte
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory { return &Memory{} }

func (m *Memory) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// DeviceID returns the device id: want when it is not empty (and stores
// it), else the stored one, else a new one that it stores.
func (m *Memory) DeviceID(ctx context.Context, want string) (string, error) {
	if err := m.lock(ctx); err != nil {
		return "", err
	}
	defer m.mu.Unlock()
	switch {
	case want != "":
		m.id = want
	case m.id == "":
		m.id = NewDeviceID()
	}
	return m.id, nil
}

// NextSession increments and returns the session counter.
func (m *Memory) NextSession(ctx context.Context) (uint64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	m.session++
	return m.session, nil
}

// NextTelemetrySeq increments and returns the telemetry sequence.
func (m *Memory) NextTelemetrySeq(ctx context.Context) (uint64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	m.seq++
	return m.seq, nil
}

// Models returns the installed models.
func (m *Memory) Models(ctx context.Context) ([]Model, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	return append([]Model(nil), m.models...), nil
}

// SetModels replaces the installed models.
func (m *Memory) SetModels(ctx context.Context, models []Model) error {
	if len(models) > MaxModels {
		return fmt.Errorf("%w: %d installed models, limit %d", ErrTooMany, len(models), MaxModels)
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.models = append([]Model(nil), models...)
	return nil
}

// AppendWindow implements telemetry.QueueStore.
func (m *Memory) AppendWindow(ctx context.Context, seq uint64, payload []byte, maxCount int, maxBytes int64) (int, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	if n := len(m.queue); n > m.head && m.queue[n-1].seq >= seq {
		return 0, fmt.Errorf("%w: %d after %d", ErrSeqOrder, seq, m.queue[n-1].seq)
	}
	m.queue = append(m.queue, memWindow{seq: seq, payload: append([]byte(nil), payload...)})
	m.seq = max(m.seq, seq)
	m.bytes += int64(len(payload))
	dropped := 0
	for len(m.queue)-m.head > 1 && (len(m.queue)-m.head > maxCount || m.bytes > maxBytes) {
		m.bytes -= int64(len(m.queue[m.head].payload))
		m.queue[m.head] = memWindow{}
		m.head++
		dropped++
	}
	m.dropped += uint64(dropped)
	m.compact()
	return dropped, nil
}

// compact reuses the slice's front once half of it is dead, so a queue
// that drains and fills forever stays bounded.
func (m *Memory) compact() {
	if m.head > 0 && m.head >= len(m.queue)/2 {
		n := copy(m.queue, m.queue[m.head:])
		clear(m.queue[n:])
		m.queue = m.queue[:n]
		m.head = 0
	}
}

// FirstWindow implements telemetry.QueueStore.
func (m *Memory) FirstWindow(ctx context.Context) (uint64, []byte, bool, error) {
	if err := m.lock(ctx); err != nil {
		return 0, nil, false, err
	}
	defer m.mu.Unlock()
	if len(m.queue) == m.head {
		return 0, nil, false, nil
	}
	w := m.queue[m.head]
	return w.seq, w.payload, true, nil
}

// RemoveWindow implements telemetry.QueueStore.
func (m *Memory) RemoveWindow(ctx context.Context, seq uint64) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for i := m.head; i < len(m.queue); i++ {
		if m.queue[i].seq == seq {
			m.bytes -= int64(len(m.queue[i].payload))
			if i == m.head {
				m.queue[i] = memWindow{}
				m.head++
			} else {
				m.queue = append(m.queue[:i], m.queue[i+1:]...)
			}
			m.compact()
			return nil
		}
		if m.queue[i].seq > seq {
			break
		}
	}
	return nil
}

// QueueStats implements telemetry.QueueStore.
func (m *Memory) QueueStats(ctx context.Context) (telemetry.QueueStats, error) {
	if err := m.lock(ctx); err != nil {
		return telemetry.QueueStats{}, err
	}
	defer m.mu.Unlock()
	return telemetry.QueueStats{Windows: len(m.queue) - m.head, Bytes: m.bytes, Dropped: m.dropped}, nil
}

// Close makes later calls fail with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.queue, m.models = nil, nil
	return nil
}

var _ telemetry.QueueStore = (*Memory)(nil)
