package telemetry

import (
	"sort"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// MaxErrorKinds bounds the distinct error kinds counted per model; further
// kinds are counted as "other". Kinds come from code, but a backend's
// errors could otherwise grow the map without end.
const MaxErrorKinds = 16

// maxModels bounds the model versions a Recorder tracks in one window,
// matching what a telemetry window may carry.
const maxModels = proto.MaxModels

// Recorder collects per-model inference figures for the current window.
// It is safe for concurrent use; Infer calls it on every request.
type Recorder struct {
	mu     sync.Mutex
	models map[modelKey]*modelStats
}

type modelKey struct{ name, version string }

type modelStats struct {
	requests, errors, rejects uint64
	errorsByKind              map[string]uint64
	latency                   Histogram
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{models: map[modelKey]*modelStats{}}
}

func (r *Recorder) stats(name, version string) *modelStats {
	k := modelKey{name, version}
	s, ok := r.models[k]
	if !ok {
		if len(r.models) >= maxModels {
			return nil
		}
		s = &modelStats{}
		r.models[k] = s
	}
	return s
}

// Observe records one request to a model version: its latency and, when
// errKind is not empty, that it failed with an error of that kind.
func (r *Recorder) Observe(name, version string, d time.Duration, errKind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats(name, version)
	if s == nil {
		return
	}
	s.requests++
	s.latency.Observe(d)
	if errKind != "" {
		s.errors++
		if s.errorsByKind == nil {
			s.errorsByKind = map[string]uint64{}
		}
		if _, ok := s.errorsByKind[errKind]; !ok && len(s.errorsByKind) >= MaxErrorKinds-1 {
			errKind = "other"
		}
		s.errorsByKind[errKind]++
	}
}

// Reject records a request turned away before it ran (queue full, deadline
// unreachable). It is not a request and has no latency.
func (r *Recorder) Reject(name, version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.stats(name, version); s != nil {
		s.rejects++
	}
}

// Flush returns the figures of the window that ends now, sorted by model
// name and version, and starts a new window. Model versions without any
// request or reject in the window are left out.
func (r *Recorder) Flush() []*proto.ModelStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*proto.ModelStats
	for k, s := range r.models {
		if s.requests == 0 && s.rejects == 0 {
			// Forget idle versions so a device that cycles through
			// versions does not keep them forever.
			delete(r.models, k)
			continue
		}
		ms := &proto.ModelStats{
			Name:     k.name,
			Version:  k.version,
			Requests: s.requests,
			Errors:   s.errors,
			Rejects:  s.rejects,
			Latency:  s.latency.Proto(),
			P50Ms:    s.latency.Quantile(0.50),
			P95Ms:    s.latency.Quantile(0.95),
			P99Ms:    s.latency.Quantile(0.99),
		}
		if len(s.errorsByKind) > 0 {
			ms.ErrorsByKind = make(map[string]uint64, len(s.errorsByKind))
			for kind, n := range s.errorsByKind {
				ms.ErrorsByKind[kind] = n
			}
		}
		out = append(out, ms)
		s.requests, s.errors, s.rejects = 0, 0, 0
		clear(s.errorsByKind)
		s.latency.Reset()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Version < out[j].Version
	})
	return out
}
