package runtimetest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// The suite is tested against playback, a backend that knows the shared
// models and answers each case with its reference outputs. Played back
// faithfully it must pass every check; with one flaw at a time it must fail
// the check meant to catch that flaw.

type flaws struct {
	wrongOutput    bool // flips a byte of output 0
	noInputCheck   bool // runs whatever it is given
	runAfterClose  bool // keeps running after the model is closed
	wrongDType     bool // reports input 0 as int16
	panicOnCorrupt bool // panics on bytes it does not know
	hangOnCorrupt  bool // blocks forever on bytes it does not know
}

type playback struct {
	models map[[32]byte]Model
	flaws  flaws
	hang   chan struct{}
}

func newPlayback(t *testing.T, f flaws) *playback {
	p := &playback{models: map[[32]byte]Model{}, flaws: f, hang: make(chan struct{})}
	t.Cleanup(func() { close(p.hang) })
	for _, format := range []string{"tflite", "onnx"} {
		for _, m := range Models(t, format) {
			p.models[sha256.Sum256(m.Bytes(t))] = m
		}
	}
	return p
}

func (p *playback) Name() string      { return "playback" }
func (p *playback) Version() string   { return "0" }
func (p *playback) Formats() []string { return []string{"tflite", "onnx"} }
func (p *playback) Available() error  { return nil }

func (p *playback) Open(ctx context.Context, data []byte, _ runtime.Options) (runtime.Model, error) {
	m, ok := p.models[sha256.Sum256(data)]
	if !ok {
		switch {
		case p.flaws.panicOnCorrupt:
			panic("playback: unknown model bytes")
		case p.flaws.hangOnCorrupt:
			<-p.hang
		}
		return nil, fmt.Errorf("%w: not one of the shared models", runtime.ErrBadModel)
	}
	pm := &playbackModel{p: p, m: m}
	for _, in := range m.Inputs {
		pm.in = append(pm.in, in.TensorInfo)
	}
	for _, out := range m.Outputs {
		pm.out = append(pm.out, out.TensorInfo)
	}
	if p.flaws.wrongDType {
		pm.in[0].DType = runtime.Int16
	}
	return pm, nil
}

type playbackModel struct {
	p       *playback
	m       Model
	in, out []runtime.TensorInfo
	mu      sync.RWMutex // held for reading by each run, so Close waits for them
	closed  bool
}

func (pm *playbackModel) Inputs() []runtime.TensorInfo  { return pm.in }
func (pm *playbackModel) Outputs() []runtime.TensorInfo { return pm.out }

func (pm *playbackModel) NewSession() (runtime.Session, error) {
	pm.mu.RLock()
	defer pm.mu.RUnlock()
	if pm.closed {
		return nil, runtime.ErrClosed
	}
	return &playbackSession{pm: pm}, nil
}

func (pm *playbackModel) Close() error {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.closed = true
	return nil
}

type playbackSession struct{ pm *playbackModel }

func (s *playbackSession) Close() error { return nil }

func (s *playbackSession) Run(ctx context.Context, inputs, outputs []runtime.Tensor) error {
	pm := s.pm
	pm.mu.RLock()
	defer pm.mu.RUnlock()
	if pm.closed && !pm.p.flaws.runAfterClose {
		return runtime.ErrClosed
	}
	if !pm.p.flaws.noInputCheck {
		if len(inputs) != len(pm.in) || len(outputs) != len(pm.out) {
			return fmt.Errorf("%w: %d inputs and %d outputs, want %d and %d", runtime.ErrInput, len(inputs), len(outputs), len(pm.in), len(pm.out))
		}
		for i, info := range pm.in {
			if err := runtime.CheckInput(info, inputs[i]); err != nil {
				return err
			}
		}
	}
	var c *Case
	for i := range pm.m.Cases {
		if slices.EqualFunc(pm.m.Cases[i].Inputs, inputs, tensorEqual) {
			c = &pm.m.Cases[i]
		}
	}
	if c == nil {
		if !pm.p.flaws.noInputCheck {
			return errors.New("playback: no reference for these inputs")
		}
		c = &pm.m.Cases[0]
	}
	for i := range min(len(outputs), len(c.Want)) {
		w := c.Want[i]
		outputs[i].DType = w.DType
		outputs[i].Shape = append(outputs[i].Shape[:0], w.Shape...)
		outputs[i].Data = append(outputs[i].Data[:0], w.Data...)
		if pm.p.flaws.wrongOutput && i == 0 && len(w.Data) > 0 {
			outputs[i].Data[len(w.Data)-1] ^= 0x80
		}
	}
	return nil
}

// recorder runs the suite like testing.T does, but keeps the outcome for
// the test to inspect instead of failing it.
type recorder struct {
	name string
	root *record
	mu   sync.Mutex
	fail bool
}

type record struct {
	mu      sync.Mutex
	errors  []string // "name: message"
	passed  []string
	skipped []string
}

func newRecorder() *recorder { return &recorder{root: &record{}} }

func (r *recorder) Helper()             {}
func (r *recorder) Logf(string, ...any) {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.fail = true
	r.mu.Unlock()
	r.root.mu.Lock()
	r.root.errors = append(r.root.errors, r.name+": "+fmt.Sprintf(format, args...))
	r.root.mu.Unlock()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	goruntime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.root.mu.Lock()
	r.root.skipped = append(r.root.skipped, r.name+": "+fmt.Sprintf(format, args...))
	r.root.mu.Unlock()
	goruntime.Goexit()
}
func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail
}

func (r *recorder) Run(name string, f func(t tester)) bool {
	child := &recorder{name: strings.TrimPrefix(r.name+"/"+name, "/"), root: r.root}
	done := make(chan struct{})
	finished := false
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				child.Errorf("panic: %v", p)
			}
		}()
		f(child)
		finished = true
	}()
	<-done
	if child.Failed() {
		r.mu.Lock()
		r.fail = true
		r.mu.Unlock()
	} else if finished {
		r.root.mu.Lock()
		r.root.passed = append(r.root.passed, child.name)
		r.root.mu.Unlock()
	}
	return !child.Failed()
}

// runSuite runs the suite for format over the shared models under a
// recorder, within a top-level subtest as Run would.
func runSuite(t *testing.T, b runtime.Backend, opts Options) *record {
	t.Helper()
	dir := Dir(t)
	r := newRecorder()
	r.Run("suite", func(tt tester) { run(tt, dir, b, opts) })
	return r.root
}

func TestPlaybackPasses(t *testing.T) {
	for _, format := range []string{"onnx", "tflite"} {
		t.Run(format, func(t *testing.T) {
			rec := runSuite(t, newPlayback(t, flaws{}), Options{Format: format})
			for _, e := range rec.errors {
				t.Errorf("suite failed a faithful backend: %s", e)
			}
			for _, s := range rec.skipped {
				t.Errorf("suite skipped with a faithful backend: %s", s)
			}
			// Not vacuous: every case of every model was compared, and every
			// other check ran to its end.
			want := []string{"suite/close_while_busy"}
			for _, m := range Models(t, format) {
				for _, c := range m.Cases {
					want = append(want, "suite/"+m.Name+"/"+c.Name)
				}
				for _, check := range []string{"io", "bad_input", "concurrent", "corrupt"} {
					want = append(want, "suite/"+m.Name+"/"+check)
				}
			}
			if len(want) < 10 {
				t.Fatalf("only %d checks for %s; the shared models look incomplete", len(want), format)
			}
			for _, w := range want {
				if !slices.Contains(rec.passed, w) {
					t.Errorf("%s did not run to completion", w)
				}
			}
		})
	}
}

func TestFlawsAreCaught(t *testing.T) {
	tests := []struct {
		name  string
		flaws flaws
		opts  Options
		// want is a part of a failure message the flaw must cause, and where.
		where, want string
	}{
		{"wrong output", flaws{wrongOutput: true}, Options{}, "/test_data_set_0", "output 0"},
		{"no input check", flaws{noInputCheck: true}, Options{}, "/bad_input", "want an error wrapping runtime.ErrInput"},
		{"runs after close", flaws{runAfterClose: true}, Options{}, "suite/close_while_busy", "want runtime.ErrClosed"},
		{"wrong dtype reported", flaws{wrongDType: true}, Options{}, "/io", "is int16, want"},
		{"panics on corrupt model", flaws{panicOnCorrupt: true}, Options{}, "/corrupt", "panic:"},
		{"hangs on corrupt model", flaws{hangOnCorrupt: true}, Options{Timeout: 200 * time.Millisecond, Corrupt: 1}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Format = "onnx"
			if tc.flaws.hangOnCorrupt {
				// Each corrupted variant waits out the timeout: one model
				// is enough.
				opts.Skip = map[string]string{}
				for _, m := range Models(t, "onnx") {
					if m.Name != "onnx_node_relu" {
						opts.Skip[m.Name] = "one model is enough"
					}
				}
				tc.where, tc.want = "/corrupt", "the backend hangs"
			}
			rec := runSuite(t, newPlayback(t, tc.flaws), opts)
			for _, e := range rec.errors {
				if strings.Contains(e, tc.where) && strings.Contains(e, tc.want) {
					t.Logf("caught: %s", e)
					return
				}
			}
			t.Errorf("suite did not report %q in a test named like %q; it reported %d errors: %q", tc.want, tc.where, len(rec.errors), rec.errors)
		})
	}
}

func f32(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func TestCompare(t *testing.T) {
	ft := func(vs ...float32) runtime.Tensor {
		return runtime.Tensor{DType: runtime.Float32, Shape: []int{len(vs)}, Data: f32(vs...)}
	}
	u8 := func(vs ...byte) runtime.Tensor {
		return runtime.Tensor{DType: runtime.Uint8, Shape: []int{len(vs)}, Data: vs}
	}
	i8 := func(vs ...byte) runtime.Tensor {
		return runtime.Tensor{DType: runtime.Int8, Shape: []int{len(vs)}, Data: vs}
	}
	nan := float32(math.NaN())
	tests := []struct {
		name      string
		format    string
		got, want runtime.Tensor
		ok        bool
	}{
		{"float equal", "onnx", ft(1, 2, 3), ft(1, 2, 3), true},
		{"float within 1e-5 relative", "onnx", ft(1000.009), ft(1000), true},
		{"float beyond 1e-5 relative", "onnx", ft(1000.02), ft(1000), false},
		{"float near zero within 1e-6 absolute", "onnx", ft(9e-7), ft(0), true},
		{"float near zero beyond 1e-6 absolute", "onnx", ft(2e-6), ft(0), false},
		{"float NaN matches NaN", "onnx", ft(nan), ft(nan), true},
		{"float NaN against a number", "onnx", ft(nan), ft(1), false},
		{"float shape", "onnx", runtime.Tensor{DType: runtime.Float32, Shape: []int{1, 1}, Data: f32(1)}, ft(1), false},
		{"dtype", "onnx", i8(1), u8(1), false},
		{"uint8 tflite within steps", "tflite", u8(10, 20), u8(12, 20), true},
		{"uint8 tflite beyond steps", "tflite", u8(10, 20), u8(13, 20), false},
		{"uint8 onnx identical only", "onnx", u8(10, 20), u8(11, 20), false},
		{"int8 tflite identical only", "tflite", i8(0x80), i8(0x81), false},
		{"int8 identical", "tflite", i8(1, 2), i8(1, 2), true},
		{"size", "tflite", i8(1), runtime.Tensor{DType: runtime.Int8, Shape: []int{1}, Data: []byte{1, 2}}, false},
	}
	for _, tc := range tests {
		d := compare(tc.format, tc.got, tc.want, 2)
		if (d.mismatch == "") != tc.ok {
			t.Errorf("%s: mismatch %q, want ok=%v", tc.name, d.mismatch, tc.ok)
		}
	}
}

func TestDirFromEnv(t *testing.T) {
	t.Setenv(EnvModels, t.TempDir()+"/absent")
	_, err := findDir()
	if err == nil || !strings.Contains(err.Error(), EnvModels) {
		t.Fatalf("findDir with a missing $%s: %v, want an error naming it", EnvModels, err)
	}
	dir := t.TempDir()
	t.Setenv(EnvModels, dir)
	if got, err := findDir(); err != nil || got != dir {
		t.Fatalf("findDir = %q, %v; want %q", got, err, dir)
	}
}

func TestModelsLoad(t *testing.T) {
	ms := Models(t, "onnx")
	for _, m := range ms {
		if len(m.Cases) == 0 {
			t.Errorf("%s: no cases", m.Name)
		}
		for _, c := range m.Cases {
			if c.Reference == "" || len(c.Want) != len(m.Outputs) {
				t.Errorf("%s/%s: reference %q with %d outputs for %d graph outputs", m.Name, c.Name, c.Reference, len(c.Want), len(m.Outputs))
			}
			if c.Reference == "armnn_suspect" {
				t.Errorf("%s/%s uses armnn_suspect", m.Name, c.Name)
			}
		}
	}
	if len(ms) == 0 {
		t.Fatal("no ONNX models")
	}
	for _, m := range Models(t, "tflite") {
		for _, c := range m.Cases {
			if c.Reference == "armnn_suspect" || c.Reference == "" {
				t.Errorf("%s/%s uses reference %q", m.Name, c.Name, c.Reference)
			}
			if m.Golden != "" && c.Reference != m.Golden {
				t.Errorf("%s/%s uses %s, golden runtime is %s", m.Name, c.Name, c.Reference, m.Golden)
			}
		}
	}
}

func TestSkip(t *testing.T) {
	rec := runSuite(t, newPlayback(t, flaws{}), Options{Format: "onnx", Skip: map[string]string{
		"onnx_node_relu":               "a reason",
		"onnx_wonnx_opt_mnist/digit_3": "another",
	}})
	if len(rec.errors) > 0 {
		t.Fatalf("errors: %q", rec.errors)
	}
	for _, want := range []string{"suite/onnx_node_relu: skipped: a reason", "suite/onnx_wonnx_opt_mnist/digit_3: skipped: another"} {
		if !slices.Contains(rec.skipped, want) {
			t.Errorf("no skip %q in %q", want, rec.skipped)
		}
	}
	for _, ran := range []string{"suite/onnx_wonnx_opt_mnist/digit_0", "suite/onnx_wonnx_opt_mnist/concurrent", "suite/close_while_busy"} {
		if !slices.Contains(rec.passed, ran) {
			t.Errorf("%s did not run", ran)
		}
	}
	for _, p := range rec.passed {
		if strings.HasPrefix(p, "suite/onnx_node_relu/") {
			t.Errorf("%s ran although its model is skipped", p)
		}
	}
}
