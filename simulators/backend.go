// Package simulators runs fleets of simulated devices in one process: each
// device is the real agent (package agent) with simulated hardware facts,
// an in-memory state store and a simulated inference backend, driven by a
// synthetic workload. Only the hardware and the model arithmetic are fake;
// protocol, queueing, telemetry and reconnects are the real code.
package simulators

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
)

// Behavior is how a simulated model version performs: latency drawn from a
// log-normal distribution with the given median and 95th percentile, and a
// share of runs that fail.
type Behavior struct {
	P50       time.Duration `json:"p50"`
	P95       time.Duration `json:"p95"`
	ErrorRate float64       `json:"error_rate"`
}

// DefaultBehavior is a small keyword-spotting model on a Pi-class CPU.
var DefaultBehavior = Behavior{P50: 4 * time.Millisecond, P95: 7 * time.Millisecond}

func (b Behavior) check() error {
	if b.P50 < 0 || b.P95 < b.P50 {
		return fmt.Errorf("latency p50 %v and p95 %v: need 0 <= p50 <= p95", b.P50, b.P95)
	}
	if math.IsNaN(b.ErrorRate) || b.ErrorRate < 0 || b.ErrorRate > 1 {
		return fmt.Errorf("error rate %v is outside 0..1", b.ErrorRate)
	}
	return nil
}

// sample draws one latency.
func (b Behavior) sample(r *rand.Rand) time.Duration {
	if b.P50 <= 0 {
		return 0
	}
	// p95 = p50·e^(1.645σ) for a log-normal.
	sigma := 0.0
	if b.P95 > b.P50 {
		sigma = math.Log(float64(b.P95)/float64(b.P50)) / 1.6448536269514722
	}
	return time.Duration(float64(b.P50) * math.Exp(sigma*r.NormFloat64()))
}

// ModelFile is the content of a simulated model artifact: the model's name
// and version, and optionally its behavior, so a model pushed to the
// registry can carry "this version is slow" with it.
type ModelFile struct {
	Format   string    `json:"format"` // always "edgefleet-sim"
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Behavior *Behavior `json:"behavior,omitempty"`
}

// ModelFormat is the Format value of a ModelFile.
const ModelFormat = "edgefleet-sim"

// Encode returns the model file bytes.
func (m ModelFile) Encode() []byte {
	m.Format = ModelFormat
	b, _ := json.Marshal(m) // a struct of strings and numbers always marshals
	return b
}

// maxModelFile bounds what Open parses.
const maxModelFile = 64 << 10

// BackendConfig configures a simulated backend.
type BackendConfig struct {
	// Name it reports; default "sim". The simulator names its backends
	// after the real ones ("tflite", "onnxruntime") so simulated devices
	// report what their profiles offer.
	Name string
	// Formats it claims to run; default tflite and onnx, so the agent picks
	// it for any model.
	Formats []string
	// Behaviors by "name@version" override what a model file says.
	Behaviors map[string]Behavior
	// Seed makes latencies and errors reproducible.
	Seed uint64
}

// Backend is a simulated inference backend implementing runtime.Backend.
// One Backend may be shared by many simulated devices: it is immutable
// after NewBackend.
type Backend struct {
	cfg      BackendConfig
	sessions atomic.Uint64 // seeds each session's generator differently
}

// NewBackend returns a simulated backend.
func NewBackend(cfg BackendConfig) (*Backend, error) {
	if cfg.Name == "" {
		cfg.Name = "sim"
	}
	if len(cfg.Formats) == 0 {
		cfg.Formats = []string{"tflite", "onnx"}
	}
	for k, b := range cfg.Behaviors {
		if err := b.check(); err != nil {
			return nil, fmt.Errorf("simulated behavior of %s: %w", k, err)
		}
	}
	return &Backend{cfg: cfg}, nil
}

// Name implements runtime.Backend.
func (b *Backend) Name() string { return b.cfg.Name }

// Version implements runtime.Backend.
func (b *Backend) Version() string { return "0.1.0-sim" }

// Formats implements runtime.Backend.
func (b *Backend) Formats() []string { return b.cfg.Formats }

// Available implements runtime.Backend.
func (b *Backend) Available() error { return nil }

// The tensors of every simulated model: four float32 features in, two
// float32 scores out.
var (
	simInputs  = []runtime.TensorInfo{{Name: "features", DType: runtime.Float32, Shape: []int{1, 4}}}
	simOutputs = []runtime.TensorInfo{{Name: "scores", DType: runtime.Float32, Shape: []int{1, 2}}}
)

// Input returns a valid input for every simulated model.
func Input() []runtime.Tensor {
	return []runtime.Tensor{{DType: runtime.Float32, Shape: []int{1, 4}, Data: make([]byte, 16)}}
}

// Open implements runtime.Backend: it parses a ModelFile.
func (b *Backend) Open(ctx context.Context, data []byte, _ runtime.Options) (runtime.Model, error) {
	mf, err := parseModelFile(data)
	if err != nil {
		return nil, err
	}
	return b.open(mf.Name, mf.Version, mf.Behavior)
}

// OpenNamed opens any artifact as the named model version, as the update
// engine does when it installs one (agent/update.NamedOpener): a
// simulated device "loads" whatever bytes the registry serves, real model
// files included, and behaves as configured for name@version, else as a
// ModelFile in the bytes says, else as DefaultBehavior.
func (b *Backend) OpenNamed(ctx context.Context, name, version string, data []byte, _ runtime.Options) (runtime.Model, error) {
	if name == "" || version == "" {
		return nil, fmt.Errorf("%w: simulated model needs a name and a version", runtime.ErrBadModel)
	}
	var beh *Behavior
	if mf, err := parseModelFile(data); err == nil {
		beh = mf.Behavior
	}
	return b.open(name, version, beh)
}

// SkipSelfTest implements agent/update.SelfTestExempt: simulated outputs
// are not the model's, so a sample's expected output cannot match them.
func (b *Backend) SkipSelfTest() string { return "simulated backend: outputs are not the model's" }

func parseModelFile(data []byte) (ModelFile, error) {
	var mf ModelFile
	if len(data) > maxModelFile {
		return mf, fmt.Errorf("%w: simulated model file is %d bytes, limit %d", runtime.ErrBadModel, len(data), maxModelFile)
	}
	if err := json.Unmarshal(data, &mf); err != nil {
		return mf, fmt.Errorf("%w: not a simulated model file: %v", runtime.ErrBadModel, err)
	}
	if mf.Format != ModelFormat || mf.Name == "" || mf.Version == "" {
		return mf, fmt.Errorf("%w: simulated model file needs format %q, a name and a version", runtime.ErrBadModel, ModelFormat)
	}
	return mf, nil
}

func (b *Backend) open(name, version string, fileBehavior *Behavior) (runtime.Model, error) {
	beh := DefaultBehavior
	if fileBehavior != nil {
		beh = *fileBehavior
	}
	if o, ok := b.cfg.Behaviors[name+"@"+version]; ok {
		beh = o
	}
	if err := beh.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", runtime.ErrBadModel, err)
	}
	return &model{backend: b, behavior: beh}, nil
}

type model struct {
	backend  *Backend
	behavior Behavior
	closed   atomic.Bool
	running  sync.WaitGroup
}

func (m *model) Inputs() []runtime.TensorInfo  { return simInputs }
func (m *model) Outputs() []runtime.TensorInfo { return simOutputs }

func (m *model) NewSession() (runtime.Session, error) {
	if m.closed.Load() {
		return nil, runtime.ErrClosed
	}
	n := m.backend.sessions.Add(1)
	return &session{m: m, rng: rand.New(rand.NewPCG(m.backend.cfg.Seed, n))}, nil
}

func (m *model) Close() error {
	m.closed.Store(true)
	m.running.Wait()
	return nil
}

type session struct {
	m   *model
	rng *rand.Rand
}

// ErrSimulated is the failure a simulated model returns ErrorRate of the time.
var ErrSimulated = fmt.Errorf("simulated inference failure")

func (s *session) Run(ctx context.Context, inputs, outputs []runtime.Tensor) error {
	if s.m.closed.Load() {
		return runtime.ErrClosed
	}
	s.m.running.Add(1)
	defer s.m.running.Done()
	if len(inputs) != 1 || len(outputs) != 1 {
		return fmt.Errorf("%w: simulated model takes 1 input and 1 output, got %d and %d", runtime.ErrInput, len(inputs), len(outputs))
	}
	if err := runtime.CheckInput(simInputs[0], inputs[0]); err != nil {
		return err
	}
	d := s.m.behavior.sample(s.rng)
	fail := s.rng.Float64() < s.m.behavior.ErrorRate
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if fail {
		return ErrSimulated
	}
	out := &outputs[0]
	out.DType, out.Shape = runtime.Float32, []int{1, 2}
	if cap(out.Data) >= 8 {
		out.Data = out.Data[:8]
	} else {
		out.Data = make([]byte, 8)
	}
	// Score = sum of the input bytes, so outputs depend on inputs.
	var sum uint32
	for _, c := range inputs[0].Data {
		sum += uint32(c)
	}
	bits := math.Float32bits(float32(sum))
	for i := 0; i < 4; i++ {
		out.Data[i] = byte(bits >> (8 * i))
		out.Data[4+i] = 0
	}
	return nil
}

func (s *session) Close() error { return nil }

var (
	_ runtime.Backend       = (*Backend)(nil)
	_ update.NamedOpener    = (*Backend)(nil)
	_ update.SelfTestExempt = (*Backend)(nil)
	_ runtime.Model         = (*model)(nil)
	_ runtime.Session       = (*session)(nil)
)

// SampleLatency draws one latency from b, for tests and tools that model
// a device without running it.
func SampleLatency(b Behavior, r *rand.Rand) time.Duration { return b.sample(r) }
