package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// batchSizer is an optional ability of a runtime.Model whose declared batch
// dimension is 1 but which runs a batch of up to MaxBatch rows along
// dimension 0. Models with a dynamic (-1) dimension 0 batch without it.
type batchSizer interface {
	MaxBatch() int
}

// version is one loaded version of a model: the runtime model, a pool of
// sessions, and a count of the runs using it. Its model is closed after it
// has been replaced and its last run has finished.
type version struct {
	model, name string
	m           runtime.Model
	inputs      []runtime.TensorInfo
	outputs     []runtime.TensorInfo
	log         *slog.Logger

	// The fields below are guarded by the owning entry's mu (refs, retired)
	// or by mu (sessions, batch).
	refs    int
	retired bool

	mu sync.Mutex
	// batch is the most rows one run takes; 1 means requests run one at a
	// time, concurrently on separate sessions. It drops to 1 if a batched
	// run is refused by the backend.
	batch    int
	free     []runtime.Session
	maxFree  int
	closed   bool
	closeErr error
}

// newVersion checks that m can be served and opens one session up front so
// a model that cannot run fails at Swap, not on the first request.
func newVersion(model, name string, m runtime.Model, maxBatch, workers int, log *slog.Logger) (*version, error) {
	if model == "" || name == "" {
		return nil, fmt.Errorf("%w: model name and version must not be empty", ErrBadModel)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: %s@%s: nil model", ErrBadModel, model, name)
	}
	v := &version{
		model: model, name: name, m: m,
		inputs: m.Inputs(), outputs: m.Outputs(),
		maxFree: workers, log: log,
	}
	if len(v.inputs) == 0 || len(v.outputs) == 0 {
		return nil, fmt.Errorf("%w: %s@%s has %d inputs and %d outputs", ErrBadModel, model, name, len(v.inputs), len(v.outputs))
	}
	v.batch = batchCapacity(m, v.inputs, v.outputs, maxBatch)
	s, err := m.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%w: %s@%s: opening a session: %w", ErrBadModel, model, name, err)
	}
	v.free = append(v.free, s)
	return v, nil
}

// batchCapacity is how many rows one run may take: maxBatch when every
// input and output is batched along dimension 0 (dynamic, or 1 with the
// model's say-so), else 1.
func batchCapacity(m runtime.Model, in, out []runtime.TensorInfo, maxBatch int) int {
	if maxBatch <= 1 {
		return 1
	}
	dynamic, fixedOne := true, true
	for _, ti := range append(append([]runtime.TensorInfo(nil), in...), out...) {
		if len(ti.Shape) == 0 {
			return 1
		}
		dynamic = dynamic && ti.Shape[0] == -1
		fixedOne = fixedOne && ti.Shape[0] == 1
	}
	if dynamic {
		return maxBatch
	}
	if bs, ok := m.(batchSizer); ok && fixedOne && bs.MaxBatch() > 1 {
		return min(maxBatch, bs.MaxBatch())
	}
	return 1
}

func (v *version) maxBatch() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.batch
}

// disableBatching makes later runs take one request each; called when the
// backend refuses a batch that the model's shapes suggested it would take.
func (v *version) disableBatching(err error) {
	v.mu.Lock()
	was := v.batch
	v.batch = 1
	v.mu.Unlock()
	if was > 1 {
		v.log.Warn("backend refused a batched run; running requests one at a time", "model", v.model, "version", v.name, "err", err)
	}
}

func (v *version) session() (runtime.Session, error) {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil, fmt.Errorf("%w: %s@%s", ErrClosed, v.model, v.name)
	}
	if n := len(v.free); n > 0 {
		s := v.free[n-1]
		v.free = v.free[:n-1]
		v.mu.Unlock()
		return s, nil
	}
	v.mu.Unlock()
	s, err := v.m.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%w: %s@%s: opening a session: %w", ErrRun, v.model, v.name, err)
	}
	return s, nil
}

func (v *version) putSession(s runtime.Session) {
	v.mu.Lock()
	if !v.closed && len(v.free) < v.maxFree {
		v.free = append(v.free, s)
		s = nil
	}
	v.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}

// close closes the pooled sessions and the model. It is called once no run
// holds the version any more.
func (v *version) close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return v.closeErr
	}
	v.closed = true
	free := v.free
	v.free = nil
	v.mu.Unlock()
	var errs []error
	for _, s := range free {
		errs = append(errs, s.Close())
	}
	errs = append(errs, v.m.Close())
	err := errors.Join(errs...)
	v.mu.Lock()
	v.closeErr = err
	v.mu.Unlock()
	if err != nil {
		v.log.Warn("closing model version", "model", v.model, "version", v.name, "err", err)
	} else {
		v.log.Info("model version closed", "model", v.model, "version", v.name)
	}
	return err
}

// discardSessions closes the pooled sessions of a version that was never
// installed; the model stays open because the caller still owns it.
func (v *version) discardSessions() {
	v.mu.Lock()
	free := v.free
	v.free, v.closed = nil, true
	v.mu.Unlock()
	for _, s := range free {
		_ = s.Close()
	}
}
