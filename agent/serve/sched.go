package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Request options for Infer.
type InferOptions struct {
	// Deadline is how long the caller will wait, from now; 0 means the
	// server's default. It is capped at Options.MaxDeadline.
	Deadline time.Duration
	// Quantize marks float32 inputs for quantized model inputs: they are
	// quantized with the parameters of the version that runs them.
	Quantize bool
	// Dequantize asks for quantized outputs as float32.
	Dequantize bool
	// Arrived is when the request arrived, which the deadline counts from;
	// zero means now. The HTTP API sets it before reading the body.
	Arrived time.Time
}

// Result is the answer to one request.
type Result struct {
	// Version is the model version that ran the request; ServedBy is the
	// lighter variant's name when one stood in under overload.
	Version, ServedBy string
	// Outputs are in the order of OutputInfo, the outputs of Version.
	Outputs    []runtime.Tensor
	OutputInfo []runtime.TensorInfo
	// Queue is the time spent queued; Compute the time of the run.
	Queue, Compute time.Duration
	// Batch is the number of requests in the run.
	Batch int
}

// BusyError is returned for requests turned away because of load: rejected
// at admission (ErrQueueFull, ErrDeadlineUnmeetable) or expired in the
// queue (ErrExpired). RetryAfter is the current estimate of the queue wait.
type BusyError struct {
	Err        error
	Model      string
	RetryAfter time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("model %q: %v; retry after %v", e.Model, e.Err, e.RetryAfter.Round(time.Millisecond))
}

func (e *BusyError) Unwrap() error { return e.Err }

// Request states: a worker or the caller's cancellation claims a queued
// request exactly once.
const (
	stateQueued int32 = iota
	stateRunning
	stateCanceled
)

type request struct {
	model      string
	inputs     []runtime.Tensor
	rows       int
	bytes      int64 // input data held while queued
	quantize   bool
	dequantize bool
	servedBy   string
	enqueued   time.Time
	deadline   time.Time
	state      atomic.Int32

	done chan struct{}
	res  *Result
	err  error
}

// entry is one model name: its active version, its queue and its workers.
type entry struct {
	s    *Server
	name string

	mu      sync.Mutex
	active  *version
	variant string
	closing bool
	// replaced lists the versions replaced by Swap, oldest first, whose
	// metric series are still kept.
	replaced []string

	queue chan *request
	stop  chan struct{}
	wg    sync.WaitGroup

	// taken counts requests a worker holds but has not finished;
	// queuedBytes the input bytes of the requests in the queue.
	taken, queuedBytes atomic.Int64
	// estExec is a moving average of one run's duration and estItem of a
	// run's duration divided by its requests, in nanoseconds; zero until
	// the first run.
	estExec, estItem atomic.Int64
	// overSince is when the current overload began (unix ns), 0 if none;
	// degradedUntil ends the current routing to the variant (unix ns).
	overSince, degradedUntil atomic.Int64
}

func newEntry(s *Server, name string) *entry {
	return &entry{s: s, name: name, queue: make(chan *request, s.opts.QueueSize), stop: make(chan struct{})}
}

func (e *entry) start() {
	for range e.s.opts.Workers {
		e.wg.Add(1)
		go e.work()
	}
}

// swap installs v and returns the version it replaced, which is closed
// here if no run holds it, else by the last release.
func (e *entry) swap(v *version) *version {
	e.mu.Lock()
	old := e.active
	e.active = v
	closeOld := false
	var forget []string
	if old != nil {
		old.retired = true
		closeOld = old.refs == 0
		if old.name != v.name {
			e.replaced = append(e.replaced, old.name)
		}
		e.replaced = slices.DeleteFunc(e.replaced, func(n string) bool { return n == v.name })
		if n := len(e.replaced) - keptVersions; n > 0 {
			forget = append(forget, e.replaced[:n]...)
			e.replaced = append([]string(nil), e.replaced[n:]...)
		}
	}
	e.mu.Unlock()
	for _, name := range forget {
		e.s.met.forgetVersion(e.name, name)
	}
	if closeOld {
		_ = old.close()
	}
	return old
}

func (e *entry) acquire() (*version, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.active
	if v == nil || e.closing {
		return nil, fmt.Errorf("%w: model %q is no longer served", ErrClosed, e.name)
	}
	v.refs++
	return v, nil
}

func (e *entry) release(v *version) {
	e.mu.Lock()
	v.refs--
	last := v.retired && v.refs == 0
	e.mu.Unlock()
	if last {
		_ = v.close()
	}
}

func (e *entry) activeVersion() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active == nil {
		return ""
	}
	return e.active.name
}

// shutdown stops the workers, fails whatever is still queued and closes the
// active version once no run holds it.
func (e *entry) shutdown() error {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil
	}
	e.closing = true
	close(e.stop)
	e.mu.Unlock()
	e.wg.Wait()
	// No request can be enqueued once closing is set (Infer checks it under
	// mu), so this drains everything that is left.
	for {
		select {
		case r := <-e.queue:
			e.queuedBytes.Add(-r.bytes)
			if r.state.CompareAndSwap(stateQueued, stateRunning) {
				e.finish(r, nil, fmt.Errorf("%w: model %q was removed or the agent is stopping", ErrClosed, e.name), e.activeVersion(), ran{})
			}
			continue
		default:
		}
		break
	}
	e.s.met.queueLen.DeleteLabelValues(e.name)
	e.mu.Lock()
	v := e.active
	closeNow := false
	if v != nil {
		v.retired = true
		closeNow = v.refs == 0
	}
	e.mu.Unlock()
	if closeNow {
		return v.close()
	}
	return nil
}

// Infer runs inputs, in the model's input order, on the active version of
// model. It returns a *BusyError when the request is turned away for load,
// errors wrapping ErrBadInput for inputs that do not fit the model, and
// ErrUnknownModel or ErrClosed when the model is not served.
func (s *Server) Infer(ctx context.Context, model string, inputs []runtime.Tensor, opts InferOptions) (*Result, error) {
	e, err := s.lookup(model)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	arrived := opts.Arrived
	if arrived.IsZero() || arrived.After(now) {
		arrived = now
	}
	deadline := opts.Deadline
	if deadline <= 0 {
		deadline = s.opts.DefaultDeadline
	}
	deadline = min(deadline, s.opts.MaxDeadline)
	due := arrived.Add(deadline)
	if d, ok := ctx.Deadline(); ok && d.Before(due) {
		due = d
	}
	var size int64
	for _, t := range inputs {
		size += int64(len(t.Data))
	}
	r := &request{
		model: model, inputs: inputs, rows: rowsOf(inputs), bytes: size,
		quantize: opts.Quantize, dequantize: opts.Dequantize,
		enqueued: now, deadline: due, done: make(chan struct{}),
	}
	target := e
	if v := e.degradeTo(now); v != nil {
		target, r.servedBy = v, v.name
	}
	if err := target.admit(r, now); err != nil {
		return nil, err
	}
	// The caller stops waiting at its deadline even if no worker comes
	// round to drop the request (all of them busy with long runs).
	timer := time.NewTimer(time.Until(r.deadline))
	defer timer.Stop()
	select {
	case <-r.done:
		return r.res, r.err
	case <-timer.C:
		if r.state.CompareAndSwap(stateQueued, stateCanceled) {
			s.observe(Event{Model: model, Version: target.activeVersion(), ServedBy: r.servedBy, Outcome: OutcomeExpired, Queue: time.Since(r.enqueued)})
			return nil, &BusyError{Err: ErrExpired, Model: model, RetryAfter: max(target.waitEstimate(), time.Millisecond)}
		}
		<-r.done // running: it finishes soon after its deadline
		return r.res, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateCanceled) {
			// The worker that dequeues it skips it; account for it here.
			s.observe(Event{Model: model, Version: target.activeVersion(), ServedBy: r.servedBy, Outcome: OutcomeCanceled})
			return nil, fmt.Errorf("model %q: request canceled while queued: %w", model, ctx.Err())
		}
		<-r.done // a worker is running it; runs are bounded, so wait
		return r.res, r.err
	}
}

func rowsOf(inputs []runtime.Tensor) int {
	if len(inputs) == 0 || len(inputs[0].Shape) == 0 || inputs[0].Shape[0] < 1 {
		return 1
	}
	return inputs[0].Shape[0]
}

// degradeTo returns the variant to route to, or nil. Once e has been
// overloaded for DegradeAfter, requests go to an installed variant (that is
// not overloaded itself) for the next DegradeAfter; then e gets traffic
// again and must stay overloaded another DegradeAfter to degrade again. The
// hold keeps the routing from flapping on every drained queue.
func (e *entry) degradeTo(now time.Time) *entry {
	e.mu.Lock()
	variant := e.variant
	e.mu.Unlock()
	if variant == "" {
		return nil
	}
	hold := now.UnixNano() < e.degradedUntil.Load()
	if !hold {
		since := e.overSince.Load()
		if since == 0 || now.Sub(time.Unix(0, since)) < e.s.opts.DegradeAfter {
			return nil
		}
	}
	ve := e.s.entry(variant)
	if ve == nil || ve.overSince.Load() != 0 {
		return nil
	}
	if !hold {
		e.degradedUntil.Store(now.Add(e.s.opts.DegradeAfter).UnixNano())
		e.overSince.Store(0)
		e.s.log.Warn("model overloaded; routing to its lighter variant", "model", e.name, "variant", variant, "for", e.s.opts.DegradeAfter)
	}
	return ve
}

// waitEstimate is the expected wait of a request queued now: the work ahead
// of it spread over the workers.
func (e *entry) waitEstimate() time.Duration {
	ahead := int64(len(e.queue)) + e.taken.Load()
	return time.Duration(e.estItem.Load() * ahead / int64(e.s.opts.Workers))
}

// admit queues r, or rejects it at once when the queue is full or its
// deadline cannot be met.
func (e *entry) admit(r *request, now time.Time) error {
	wait := e.waitEstimate()
	exec := time.Duration(e.estExec.Load())
	e.trackOverload(now)
	if wait+exec > r.deadline.Sub(now) {
		e.markOverload(now)
		return e.reject(r, OutcomeDeadlineUnmeetable, ErrDeadlineUnmeetable, wait+exec)
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		e.s.observe(Event{Model: r.model, Version: e.activeVersion(), ServedBy: r.servedBy, Outcome: OutcomeUnavailable})
		return fmt.Errorf("%w: model %q is no longer served", ErrClosed, e.name)
	}
	// The queue's memory is bounded in bytes as well as in requests; a
	// request alone in the queue may use the whole budget and more.
	if held := e.queuedBytes.Add(r.bytes); held > e.s.opts.MaxQueuedBytes && held != r.bytes {
		e.queuedBytes.Add(-r.bytes)
		e.mu.Unlock()
		e.markOverload(now)
		return e.reject(r, OutcomeQueueFull, fmt.Errorf("%w: queued inputs would exceed %d bytes", ErrQueueFull, e.s.opts.MaxQueuedBytes), max(wait, exec))
	}
	select {
	case e.queue <- r:
		e.mu.Unlock()
		e.s.met.queueLen.WithLabelValues(e.name).Set(float64(len(e.queue)))
		return nil
	default:
		e.queuedBytes.Add(-r.bytes)
		e.mu.Unlock()
		e.markOverload(now)
		return e.reject(r, OutcomeQueueFull, ErrQueueFull, max(wait, exec))
	}
}

func (e *entry) reject(r *request, o Outcome, err error, retry time.Duration) error {
	e.s.observe(Event{Model: r.model, Version: e.activeVersion(), ServedBy: r.servedBy, Outcome: o})
	return &BusyError{Err: err, Model: r.model, RetryAfter: max(retry, time.Millisecond)}
}

// trackOverload ends an overload once the queue has drained; markOverload
// starts one (if none is running) when a request is rejected or the queue
// is at least half full.
func (e *entry) trackOverload(now time.Time) {
	n := len(e.queue)
	switch {
	case n == 0 && e.taken.Load() < int64(e.s.opts.Workers):
		e.overSince.Store(0)
	case 2*n >= cap(e.queue):
		e.markOverload(now)
	}
}

func (e *entry) markOverload(now time.Time) {
	e.overSince.CompareAndSwap(0, now.UnixNano())
}

// work is one worker: it takes the oldest request, gathers a batch if the
// active version batches, waits for a run slot and runs it.
func (e *entry) work() {
	defer e.wg.Done()
	var carry *request
	for {
		first := carry
		carry = nil
		if first == nil {
			// Stopping wins over a waiting request: shutdown answers what
			// is queued with ErrClosed instead of running it.
			select {
			case <-e.stop:
				return
			default:
			}
			select {
			case first = <-e.queue:
				e.queuedBytes.Add(-first.bytes)
				e.taken.Add(1) // a carried request was counted by gather
			case <-e.stop:
				return
			}
		}
		v, err := e.acquire()
		if err != nil {
			e.taken.Add(-1)
			if first.state.CompareAndSwap(stateQueued, stateRunning) {
				e.finish(first, nil, err, "", ran{})
			}
			continue
		}
		batch := []*request{first}
		if limit := v.maxBatch(); limit > 1 {
			batch, carry = e.gather(batch, limit)
		}
		e.s.met.queueLen.WithLabelValues(e.name).Set(float64(len(e.queue)))
		select {
		case e.s.slots <- struct{}{}:
		case <-e.stop:
			for _, r := range batch {
				if r.state.CompareAndSwap(stateQueued, stateRunning) {
					e.finish(r, nil, fmt.Errorf("%w: model %q was removed or the agent is stopping", ErrClosed, e.name), v.name, ran{})
				}
			}
			e.taken.Add(-int64(len(batch)))
			if carry != nil {
				e.taken.Add(-1)
				if carry.state.CompareAndSwap(stateQueued, stateRunning) {
					e.finish(carry, nil, fmt.Errorf("%w: model %q was removed or the agent is stopping", ErrClosed, e.name), v.name, ran{})
				}
			}
			e.release(v)
			return
		}
		e.runBatch(v, batch)
		<-e.s.slots
		e.taken.Add(-int64(len(batch)))
		e.release(v)
	}
}

// gather adds waiting requests to batch up to limit rows, waiting up to
// MaxQueueDelay for more. A request that would overflow the batch is
// returned as carry, to start the worker's next batch.
func (e *entry) gather(batch []*request, limit int) (_ []*request, carry *request) {
	rows := batch[0].rows
	var timer <-chan time.Time
	if d := e.s.opts.MaxQueueDelay; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	for rows < limit {
		var r *request
		select {
		case r = <-e.queue:
		default:
			if timer == nil {
				return batch, nil
			}
			select {
			case r = <-e.queue:
			case <-timer:
				return batch, nil
			case <-e.stop:
				return batch, nil
			}
		}
		e.queuedBytes.Add(-r.bytes)
		e.taken.Add(1)
		if rows+r.rows > limit {
			return batch, r
		}
		batch = append(batch, r)
		rows += r.rows
	}
	return batch, nil
}

// runBatch claims the batch's requests, drops those that can no longer meet
// their deadline, prepares the rest for v and runs them: as one batched run
// when v batches, else one by one.
func (e *entry) runBatch(v *version, batch []*request) {
	now := time.Now()
	exec := time.Duration(e.estExec.Load())
	ready := batch[:0:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(stateQueued, stateRunning) {
			continue // canceled by its caller while queued
		}
		if left := r.deadline.Sub(now); left <= 0 || left < exec {
			e.finish(r, nil, e.expired(r, "dropped before its run"), v.name, ran{})
			continue
		}
		inputs, err := prepareInputs(v, r.inputs, r.quantize)
		if err != nil {
			e.finish(r, nil, err, v.name, ran{})
			continue
		}
		r.inputs = inputs
		ready = append(ready, r)
	}
	if len(ready) == 0 {
		return
	}
	if len(ready) > 1 {
		err := e.runBatched(v, ready)
		switch {
		case err == nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			for _, r := range ready {
				e.finish(r, nil, e.expired(r, "its deadline passed during its batched run"), v.name, ran{})
			}
			return
		case errors.Is(err, runtime.ErrInput) || errors.Is(err, runtime.ErrUnsupported) || errors.Is(err, errBatchShape):
			v.disableBatching(err)
		default:
			v.log.Warn("batched run failed; running its requests one by one", "model", v.model, "version", v.name, "err", err)
		}
	}
	for _, r := range ready {
		start := time.Now()
		outs, d, err := e.runOne(v, r)
		e.finish(r, outs, err, v.name, ran{outputs: v.outputs, start: start, compute: d, batch: 1})
	}
}

// runOne runs one request. The run is cancelled at the request's deadline:
// nobody waits for the answer after it.
func (e *entry) runOne(v *version, r *request) ([]runtime.Tensor, time.Duration, error) {
	sess, err := v.session()
	if err != nil {
		return nil, 0, err
	}
	outs := make([]runtime.Tensor, len(v.outputs))
	ctx, cancel := context.WithDeadline(e.s.runCtx, r.deadline)
	start := time.Now()
	err = sess.Run(ctx, r.inputs, outs)
	d := time.Since(start)
	cancel()
	if err != nil && ctx.Err() == context.DeadlineExceeded && e.s.runCtx.Err() == nil {
		_ = sess.Close()
		return nil, d, e.expired(r, "its deadline passed during its run")
	}
	if err != nil {
		// A session that failed for a reason other than its inputs may be
		// in a bad state; open a fresh one next time.
		if errors.Is(err, runtime.ErrInput) {
			v.putSession(sess)
			return nil, d, fmt.Errorf("%w: %s@%s: %w", ErrBadInput, v.model, v.name, err)
		}
		_ = sess.Close()
		return nil, d, fmt.Errorf("%w: %s@%s: %w", ErrRun, v.model, v.name, err)
	}
	v.putSession(sess)
	e.learn(d, 1)
	return outs, d, nil
}

// expired is the error for a request whose deadline passed.
func (e *entry) expired(r *request, why string) error {
	return &BusyError{Err: fmt.Errorf("%w: %s", ErrExpired, why), Model: r.model, RetryAfter: max(e.waitEstimate(), time.Millisecond)}
}

// learn updates the run-time estimates that admission uses, as moving
// averages weighted 1/8 towards the newest run.
func (e *entry) learn(d time.Duration, requests int) {
	update := func(a *atomic.Int64, x int64) {
		for {
			old := a.Load()
			nv := x
			if old != 0 {
				nv = old + (x-old)/8
			}
			if a.CompareAndSwap(old, nv) {
				return
			}
		}
	}
	update(&e.estExec, int64(d))
	update(&e.estItem, int64(d)/int64(max(requests, 1)))
}

// ran describes the run a request was part of; the zero value means it did
// not run.
type ran struct {
	outputs []runtime.TensorInfo
	start   time.Time
	compute time.Duration
	batch   int
}

// finish answers r and reports it to metrics and the observer.
func (e *entry) finish(r *request, outs []runtime.Tensor, err error, version string, run ran) {
	ev := Event{Model: r.model, Version: version, ServedBy: r.servedBy, Compute: run.compute, Batch: run.batch}
	if run.start.IsZero() {
		ev.Queue = time.Since(r.enqueued)
	} else {
		ev.Queue = run.start.Sub(r.enqueued)
	}
	if err == nil && time.Now().After(r.deadline) {
		// The run finished, but after the deadline (a backend that does
		// not honour cancellation, or a batch-mate's longer deadline):
		// the caller asked not to get answers this late.
		outs, err = nil, e.expired(r, "its run finished after its deadline")
	}
	if err == nil {
		res := &Result{Version: version, ServedBy: r.servedBy, Outputs: outs, OutputInfo: run.outputs,
			Queue: ev.Queue, Compute: run.compute, Batch: run.batch}
		if r.dequantize {
			res.Outputs, res.OutputInfo = dequantizeOutputs(res.Outputs, res.OutputInfo)
		}
		ev.Outcome = OutcomeOK
		r.res = res
	} else {
		ev.Outcome = outcomeOf(err)
		r.err = err
	}
	e.s.observe(ev)
	close(r.done)
}

func outcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrExpired):
		return OutcomeExpired
	case errors.Is(err, ErrQueueFull):
		return OutcomeQueueFull
	case errors.Is(err, ErrDeadlineUnmeetable):
		return OutcomeDeadlineUnmeetable
	case errors.Is(err, ErrBadInput), errors.Is(err, runtime.ErrInput):
		return OutcomeBadInput
	case errors.Is(err, ErrClosed):
		return OutcomeUnavailable
	case errors.Is(err, context.Canceled):
		return OutcomeCanceled
	default:
		return OutcomeRunError
	}
}
