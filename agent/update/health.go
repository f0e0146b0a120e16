package update

import (
	"fmt"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/telemetry"
)

// HealthPolicy decides whether a new version is healthy, by comparing
// what it did in the health window with what the previous version did
// before the switch.
type HealthPolicy struct {
	// Window is how long the new version is watched; default 60 s.
	Window time.Duration
	// MinRequests is the evidence needed for a verdict on either side: a
	// new version with fewer requests in the window passes (there is
	// nothing to hold against it), and a previous version with fewer
	// gives no latency baseline. Default 20.
	MinRequests uint64
	// MaxErrorRateIncrease is how much higher the new version's error rate
	// may be than the previous one's, in absolute terms; default 0.05.
	MaxErrorRateIncrease float64
	// MaxLatencyRatio is how many times the previous version's p95 the new
	// version's p95 may be; default 2.
	MaxLatencyRatio float64
}

func (p *HealthPolicy) defaults() error {
	if p.Window == 0 {
		p.Window = 60 * time.Second
	}
	if p.MinRequests == 0 {
		p.MinRequests = 20
	}
	if p.MaxErrorRateIncrease == 0 {
		p.MaxErrorRateIncrease = 0.05
	}
	if p.MaxLatencyRatio == 0 {
		p.MaxLatencyRatio = 2
	}
	if p.Window < 0 || p.MaxErrorRateIncrease < 0 || p.MaxLatencyRatio < 1 {
		return fmt.Errorf("%w: health window %v, error rate increase %v, latency ratio %v: need a window >= 0, an increase >= 0 and a ratio >= 1",
			ErrConfig, p.Window, p.MaxErrorRateIncrease, p.MaxLatencyRatio)
	}
	return nil
}

// maxTracked bounds the model versions the health tracker counts; the
// agent serves at most a few models, each with a current and a previous
// version.
const maxTracked = 128

// health counts requests, errors and latencies per model version since
// the version was last reset. The agent feeds it from Infer.
type health struct {
	mu sync.Mutex
	m  map[versionKey]*versionStats
}

type versionKey struct{ name, version string }

type versionStats struct {
	requests, errors uint64
	h                telemetry.Histogram
}

// Figures is what one model version did.
type Figures struct {
	Requests, Errors uint64
	P95Ms            float64
}

// ErrorRate is Errors/Requests, 0 without requests.
func (f Figures) ErrorRate() float64 {
	if f.Requests == 0 {
		return 0
	}
	return float64(f.Errors) / float64(f.Requests)
}

func (h *health) observe(name, version string, d time.Duration, failed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := versionKey{name, version}
	s := h.m[k]
	if s == nil {
		if len(h.m) >= maxTracked {
			return
		}
		s = &versionStats{}
		h.m[k] = s
	}
	s.requests++
	if failed {
		s.errors++
	}
	s.h.Observe(d)
}

func (h *health) figures(name, version string) Figures {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.m[versionKey{name, version}]
	if s == nil {
		return Figures{}
	}
	return Figures{Requests: s.requests, Errors: s.errors, P95Ms: s.h.Quantile(0.95)}
}

// reset starts counting a version afresh and forgets versions of the
// model other than keep, so the map holds what a verdict needs.
func (h *health) reset(name, version string, keep ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k := range h.m {
		if k.name != name || k.version == version {
			continue
		}
		kept := false
		for _, v := range keep {
			kept = kept || k.version == v
		}
		if !kept {
			delete(h.m, k)
		}
	}
	h.m[versionKey{name, version}] = &versionStats{}
}

// verdict compares the new version's figures with the previous one's and
// returns nil, or an error wrapping ErrHealth that gives the numbers.
func (p HealthPolicy) verdict(cur, prev Figures) error {
	if cur.Requests < p.MinRequests {
		return nil
	}
	if inc := cur.ErrorRate() - prev.ErrorRate(); inc > p.MaxErrorRateIncrease {
		return fmt.Errorf("%w: error rate %.1f%% (%d of %d) vs %.1f%% before, allowed increase %.1f points",
			ErrHealth, 100*cur.ErrorRate(), cur.Errors, cur.Requests, 100*prev.ErrorRate(), 100*p.MaxErrorRateIncrease)
	}
	if prev.Requests >= p.MinRequests && prev.P95Ms > 0 && cur.P95Ms > p.MaxLatencyRatio*prev.P95Ms {
		return fmt.Errorf("%w: p95 latency %.2f ms vs %.2f ms before, %.1fx over the allowed %.1fx",
			ErrHealth, cur.P95Ms, prev.P95Ms, cur.P95Ms/prev.P95Ms, p.MaxLatencyRatio)
	}
	return nil
}
