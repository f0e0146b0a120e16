// Package serve is the agent's local inference API: the models the agent
// serves, the per-model queues and workers that run them through
// agent/runtime, and the HTTP API (TCP on loopback and a unix socket) that
// applications on the gateway call.
//
// Each model name has an active version. Swap installs a new one atomically:
// new requests go to it, requests already running finish on the version they
// started on, and the old model is closed after its last run. Requests are
// admitted to a bounded per-model queue only if their deadline can be met at
// the current load; otherwise they are rejected at once (HTTP 429 with
// Retry-After) instead of waiting in vain. Workers, cores-1 by default and
// shared by all models, take requests from the queue; for models whose batch
// dimension allows it they run several requests as one batch.
//
// "Batching" for a backend that only takes batch 1 is not batching: such a
// model's requests run one per session, concurrently on the worker pool, and
// the model list reports max_batch 1 for it.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Options configure a Server. The zero value serves with the defaults
// documented on each field.
type Options struct {
	// Addr is the TCP address Run listens on; it must be a loopback
	// address unless AllowRemote is set. Default "127.0.0.1:8470";
	// "-" disables TCP.
	Addr string
	// AllowRemote lets Addr be a non-loopback address. The API has no
	// authentication: it is meant for callers on the gateway itself.
	AllowRemote bool
	// Socket is the unix socket path Run listens on; "" disables it.
	Socket string
	// SocketMode is the socket's file mode; default 0660, so that only the
	// agent's user and group can call it.
	SocketMode uint32

	// Workers is how many runs may execute at once, across all models.
	// Default: the number of CPUs minus one, at least 1, so the gateway's
	// own applications keep a core.
	Workers int
	// QueueSize bounds each model's queue; default 64.
	QueueSize int
	// MaxQueuedBytes bounds the input bytes waiting in each model's queue;
	// default 64 MiB.
	MaxQueuedBytes int64
	// MaxBatch is the most requests one run may take for a model whose batch
	// dimension allows it; default 1 (no batching).
	MaxBatch int
	// MaxQueueDelay is how long a worker waits for more requests to fill a
	// batch; default 0: only what is already waiting is batched.
	MaxQueueDelay time.Duration
	// DefaultDeadline applies to requests that name none; default 1s.
	DefaultDeadline time.Duration
	// MaxDeadline caps the deadline a request may ask for; default 60s.
	MaxDeadline time.Duration
	// DegradeAfter is how long a model must stay overloaded (its queue at
	// least half full, or rejecting) before requests go to its variant
	// (see SetVariant); default 2s.
	DegradeAfter time.Duration

	// MaxJSONBytes bounds a JSON request body; default 1 MiB.
	MaxJSONBytes int64
	// MaxBodyBytes bounds a binary request body; default 8 MiB (a 1080p
	// RGB frame of uint8 is 6.2 MB).
	MaxBodyBytes int64
	// MaxReceiving bounds the inference requests whose bodies are being
	// read at once, and so the memory that requests not yet queued take
	// (at most MaxReceiving × MaxBodyBytes); past it requests get 429.
	// Default 16.
	MaxReceiving int

	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Observer, if set, is told about every request (see Observer).
	Observer Observer
	// Registry receives the Prometheus metrics served on /metrics; nil
	// makes a new one.
	Registry *prometheus.Registry
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8470"
	}
	if o.SocketMode == 0 {
		o.SocketMode = 0o660
	}
	if o.Workers <= 0 {
		o.Workers = max(1, goruntime.NumCPU()-1)
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 64
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1
	}
	if o.DefaultDeadline <= 0 {
		o.DefaultDeadline = time.Second
	}
	if o.MaxDeadline <= 0 {
		o.MaxDeadline = time.Minute
	}
	if o.DefaultDeadline > o.MaxDeadline {
		o.DefaultDeadline = o.MaxDeadline
	}
	if o.DegradeAfter <= 0 {
		o.DegradeAfter = 2 * time.Second
	}
	if o.MaxJSONBytes <= 0 {
		o.MaxJSONBytes = 1 << 20
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 8 << 20
	}
	if o.MaxReceiving <= 0 {
		o.MaxReceiving = 16
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return o
}

// Server serves models. Create it with New, install models with Swap, serve
// HTTP with Serve or Run, and stop it with Close.
type Server struct {
	opts Options
	log  *slog.Logger
	met  *metrics
	// slots holds one token per running run: it keeps all models together
	// within Options.Workers.
	slots chan struct{}
	// bodies holds one token per inference request being received.
	bodies chan struct{}
	// runCtx is passed to backend runs and cancelled by Close.
	runCtx    context.Context
	cancelRun context.CancelFunc

	// stopping is set when Serve begins its shutdown, for /readyz.
	stopping atomic.Bool

	mu      sync.Mutex
	entries map[string]*entry
	closed  bool
}

// New returns a Server with no models.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		met:       newMetrics(opts.Registry),
		slots:     make(chan struct{}, opts.Workers),
		bodies:    make(chan struct{}, opts.MaxReceiving),
		runCtx:    ctx,
		cancelRun: cancel,
		entries:   map[string]*entry{},
	}
}

// Options returns the options in force, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// Registry returns the Prometheus registry of the server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.opts.Registry }

// Swap makes m, as version, the active version of model name, installing
// the model if it is new. Requests admitted from now on run on m; runs in
// progress finish on the version they started on, which is closed after the
// last of them. On error nothing changes and m is not closed.
func (s *Server) Swap(name, version string, m runtime.Model) error {
	v, err := newVersion(name, version, m, s.opts.MaxBatch, s.opts.Workers, s.log)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		v.discardSessions()
		return fmt.Errorf("%w: cannot install %s@%s", ErrClosed, name, version)
	}
	e, ok := s.entries[name]
	if !ok {
		e = newEntry(s, name)
		s.entries[name] = e
		e.start()
	}
	s.mu.Unlock()
	old := e.swap(v)
	if old != nil {
		s.log.Info("model version switched", "model", name, "from", old.name, "to", version, "max_batch", v.maxBatch())
	} else {
		s.log.Info("model installed", "model", name, "version", version, "max_batch", v.maxBatch())
	}
	return nil
}

// SetVariant names a lighter model (installed with Swap under its own name)
// to route name's requests to while name is overloaded; "" turns it off.
// The variant must take the same inputs.
func (s *Server) SetVariant(name, variant string) error {
	e := s.entry(name)
	if e == nil {
		return fmt.Errorf("%w: %q", ErrUnknownModel, name)
	}
	if variant == name {
		return fmt.Errorf("%w: model %q cannot be its own variant", ErrBadModel, name)
	}
	e.mu.Lock()
	e.variant = variant
	e.mu.Unlock()
	return nil
}

// Remove stops serving model name: queued requests fail with ErrClosed,
// running ones finish, then its model is closed.
func (s *Server) Remove(name string) error {
	s.mu.Lock()
	e, ok := s.entries[name]
	delete(s.entries, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownModel, name)
	}
	return e.shutdown()
}

// Close stops all workers, fails queued requests with ErrClosed and closes
// every model once its runs have finished. It waits for all of that. Stop
// the HTTP side first (Serve does) so that callers get answers, not errors.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	entries := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		entries = append(entries, e)
	}
	s.entries = map[string]*entry{}
	s.mu.Unlock()
	defer s.cancelRun()
	var errs []error
	for _, e := range entries {
		errs = append(errs, e.shutdown())
	}
	return errors.Join(errs...)
}

// lookup returns the entry of a served model, ErrClosed once the server is
// closing, or ErrUnknownModel.
func (s *Server) lookup(name string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%w: the agent is stopping", ErrClosed)
	}
	if e := s.entries[name]; e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownModel, name)
}

func (s *Server) entry(name string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[name]
}

// ModelInfo describes a served model's active version.
type ModelInfo struct {
	Name, Version   string
	Inputs, Outputs []runtime.TensorInfo
	// MaxBatch is the most requests one run takes; 1 when not batched.
	MaxBatch int
	// Variant is the lighter model used under overload, or "".
	Variant string
}

// Models lists the served models, sorted by name.
func (s *Server) Models() []ModelInfo {
	s.mu.Lock()
	entries := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		entries = append(entries, e)
	}
	s.mu.Unlock()
	out := make([]ModelInfo, 0, len(entries))
	for _, e := range entries {
		e.mu.Lock()
		v, variant := e.active, e.variant
		e.mu.Unlock()
		if v == nil {
			continue
		}
		out = append(out, ModelInfo{Name: e.name, Version: v.name, Inputs: v.inputs, Outputs: v.outputs, MaxBatch: v.maxBatch(), Variant: variant})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Model returns the active version of one model.
func (s *Server) Model(name string) (ModelInfo, error) {
	e, err := s.lookup(name)
	if err != nil {
		return ModelInfo{}, err
	}
	e.mu.Lock()
	v, variant := e.active, e.variant
	e.mu.Unlock()
	if v == nil {
		return ModelInfo{}, fmt.Errorf("%w: %q", ErrUnknownModel, name)
	}
	return ModelInfo{Name: name, Version: v.name, Inputs: v.inputs, Outputs: v.outputs, MaxBatch: v.maxBatch(), Variant: variant}, nil
}

func (s *Server) observe(ev Event) {
	s.met.record(ev)
	if s.opts.Observer != nil {
		s.opts.Observer.Observe(ev)
	}
}
