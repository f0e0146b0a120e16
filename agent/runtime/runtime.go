// Package runtime is the agent's inference backend interface and registry,
// in the style of database/sql/driver: a backend (the built-in TFLite engine,
// ONNX Runtime, ...) implements Backend and registers itself from init;
// the agent picks one by name and by what the device offers.
//
// A Backend opens a Model from bytes. A Model is immutable and can be shared;
// it hands out Sessions, each with its own working memory, which run one
// inference at a time. Optional abilities are separate interfaces found by
// type assertion.
package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// Backend is one way of running models.
type Backend interface {
	// Name is the name the backend registered under, e.g. "tflite".
	Name() string
	// Version is the backend's version, e.g. "1.23.2" for ONNX Runtime.
	Version() string
	// Formats lists the model formats it runs: "tflite", "onnx".
	Formats() []string
	// Available returns nil when the backend can run on this device, or an
	// error wrapping ErrUnavailable that says why not.
	Available() error
	// Open parses and prepares a model. The model bytes may be retained by
	// the returned Model; the caller must not modify them afterwards.
	// A corrupt model returns an error wrapping ErrBadModel; an operator the
	// backend lacks, one wrapping ErrUnsupported.
	Open(ctx context.Context, model []byte, opts Options) (Model, error)
}

// Options tune how a model is opened.
type Options struct {
	// Threads is the number of threads one inference may use. 0 means 1:
	// a gateway's cores belong to its applications first.
	Threads int
	// ArenaLimit bounds the working memory of one session in bytes; 0 means
	// the backend's default. Opening a model that needs more fails.
	ArenaLimit int64
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
}

// Model is an opened model. Its methods are safe for concurrent use.
type Model interface {
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	// NewSession returns a session with its own working memory.
	NewSession() (Session, error)
	// Close releases the model. Sessions still running finish first; later
	// runs return ErrClosed.
	Close() error
}

// Session runs inferences one at a time. It is not safe for concurrent use;
// open one session per concurrent caller.
type Session interface {
	// Run reads inputs, in the model's input order, and writes outputs, in
	// output order. len(outputs) must equal the number of outputs. Run sets
	// each output's DType and Shape, and reuses its Data when it has the
	// capacity, so a caller that keeps its output tensors across runs
	// allocates nothing per run. Inputs of the wrong dtype, shape or size
	// return an error wrapping ErrInput that says what was expected.
	Run(ctx context.Context, inputs []Tensor, outputs []Tensor) error
	Close() error
}

// Factory makes a backend from its configuration.
type Factory func(cfg Config) Backend

// Config is what the agent knows that a backend may need.
type Config struct {
	// Settings are backend-specific settings from the agent config and the
	// firmware profile, e.g. "library" for the path of a shared library.
	Settings map[string]string
	Logger   *slog.Logger
}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a backend available by name. It panics if Register is
// called twice with the same name or with a nil factory: both are
// programming errors found at start.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if f == nil {
		panic("runtime: Register factory is nil for " + name)
	}
	if _, dup := factories[name]; dup {
		panic("runtime: Register called twice for backend " + name)
	}
	factories[name] = f
}

// New returns the backend registered as name, configured with cfg.
func New(name string, cfg Config) (Backend, error) {
	mu.RLock()
	f, ok := factories[name]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q (registered: %v)", ErrUnknownBackend, name, Names())
	}
	return f(cfg), nil
}

// Names returns the registered backend names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ForFormat returns the available backends that run the given format, in
// the order of preference given (names not registered are skipped), then any
// other registered backend for the format. Unavailable backends are returned
// in skipped with the reason.
func ForFormat(format string, cfg Config, prefer ...string) (usable []Backend, skipped map[string]error) {
	skipped = map[string]error{}
	seen := map[string]bool{}
	order := append(append([]string(nil), prefer...), Names()...)
	for _, n := range order {
		if seen[n] {
			continue
		}
		seen[n] = true
		b, err := New(n, cfg)
		if err != nil {
			continue
		}
		if !runsFormat(b, format) {
			continue
		}
		if err := b.Available(); err != nil {
			skipped[n] = err
			continue
		}
		usable = append(usable, b)
	}
	return usable, skipped
}

func runsFormat(b Backend, format string) bool {
	for _, f := range b.Formats() {
		if f == format {
			return true
		}
	}
	return false
}
