package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// loadedModel is an opened model with a bounded pool of sessions. Sessions
// are created on demand up to max and reused, so an idle model holds one
// session's working memory and a busy one at most max.
type loadedModel struct {
	name, version, backend string
	model                  runtime.Model

	slots chan struct{}        // a token per session that may exist
	idle  chan runtime.Session // sessions not in use
	mu    sync.Mutex
	all   []runtime.Session
	// inflight counts Infer calls using the model, so close waits for
	// them instead of closing a session under a running inference.
	inflight sync.WaitGroup
}

func newLoadedModel(name, version, backend string, m runtime.Model, max int) *loadedModel {
	lm := &loadedModel{
		name: name, version: version, backend: backend, model: m,
		slots: make(chan struct{}, max),
		idle:  make(chan runtime.Session, max),
	}
	for i := 0; i < max; i++ {
		lm.slots <- struct{}{}
	}
	return lm
}

// acquire returns an idle session, or a new one while under the bound, or
// waits for one to be released.
func (lm *loadedModel) acquire(ctx context.Context) (runtime.Session, error) {
	select {
	case s := <-lm.idle:
		return s, nil
	default:
	}
	select {
	case s := <-lm.idle:
		return s, nil
	case <-lm.slots:
		s, err := lm.model.NewSession()
		if err != nil {
			lm.slots <- struct{}{}
			return nil, err
		}
		lm.mu.Lock()
		lm.all = append(lm.all, s)
		lm.mu.Unlock()
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (lm *loadedModel) release(s runtime.Session) { lm.idle <- s }

func (lm *loadedModel) close() error {
	lm.inflight.Wait()
	lm.mu.Lock()
	defer lm.mu.Unlock()
	var errs []error
	for _, s := range lm.all {
		errs = append(errs, s.Close())
	}
	lm.all = nil
	errs = append(errs, lm.model.Close())
	return errors.Join(errs...)
}

// ModelInfo describes a served model.
type ModelInfo struct {
	Name, Version, Backend string
	Inputs, Outputs        []runtime.TensorInfo
}

// Models lists the served models.
func (a *Agent) Models() []ModelInfo {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]ModelInfo, 0, len(a.models))
	for _, lm := range a.models {
		out = append(out, ModelInfo{Name: lm.name, Version: lm.version, Backend: lm.backend, Inputs: lm.model.Inputs(), Outputs: lm.model.Outputs()})
	}
	return out
}

// Infer runs the active version of the named model on inputs, writing
// outputs (see runtime.Session.Run), and records the request in the next
// telemetry window. It waits for a free session when all are busy, for as
// long as ctx allows; a request that never got a session is counted as a
// reject, not an error.
func (a *Agent) Infer(ctx context.Context, model string, inputs, outputs []runtime.Tensor) error {
	a.mu.RLock()
	if a.closed {
		a.mu.RUnlock()
		return ErrClosed
	}
	lm := a.models[model]
	if lm != nil {
		// Under the read lock, so Close (which takes the write lock
		// first) waits for this call.
		lm.inflight.Add(1)
		defer lm.inflight.Done()
	}
	a.mu.RUnlock()
	if lm == nil {
		return fmt.Errorf("%w: %q", ErrUnknownModel, model)
	}
	start := a.clock.Now()
	s, err := lm.acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			a.rec.Reject(lm.name, lm.version)
			return fmt.Errorf("infer %s: no free session: %w", model, err)
		}
		a.rec.Observe(lm.name, lm.version, a.clock.Now().Sub(start), "session")
		return fmt.Errorf("infer %s: new session: %w", model, err)
	}
	err = s.Run(ctx, inputs, outputs)
	lm.release(s)
	took := a.clock.Now().Sub(start)
	a.rec.Observe(lm.name, lm.version, took, errorKind(err))
	a.observeUpdate(lm.name, lm.version, took, err)
	if err != nil {
		return fmt.Errorf("infer %s %s: %w", lm.name, lm.version, err)
	}
	return nil
}

// errorKind names an inference error for the errors_by_kind counters the
// rollout gates read. The set is small and fixed.
func errorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, runtime.ErrInput):
		return "input"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, runtime.ErrClosed):
		return "closed"
	case errors.Is(err, runtime.ErrUnsupported):
		return "unsupported"
	case errors.Is(err, runtime.ErrArenaLimit):
		return "memory"
	}
	return "internal"
}
