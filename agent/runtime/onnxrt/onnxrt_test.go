//go:build cgo

package onnxrt

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
)

// libPath finds the library for tests: $EDGEFLEET_ONNXRUNTIME_LIB, else the
// newest one deploy/onnxruntime/fetch.sh cached in the repository.
func libPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(EnvLibrary); p != "" {
		return p
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
	if root := repoRoot(); root != "" && arch != "" {
		found, _ := filepath.Glob(filepath.Join(root, ".cache", "onnxruntime", "*", "linux-"+arch, "libonnxruntime.so.1"))
		if len(found) > 0 {
			sort.Strings(found)
			return found[len(found)-1]
		}
	}
	tb.Skipf("ONNX Runtime library not found: set $%s, or run deploy/onnxruntime/fetch.sh (make onnxruntime) to cache it in .cache/onnxruntime/", EnvLibrary)
	return ""
}

func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func newBackend(tb testing.TB, settings map[string]string) *Backend {
	tb.Helper()
	s := map[string]string{SettingLibrary: libPath(tb)}
	for k, v := range settings {
		s[k] = v
	}
	b := New(runtime.Config{Settings: s})
	if err := b.Available(); err != nil {
		tb.Fatalf("Available with %s: %v", s[SettingLibrary], err)
	}
	return b
}

func TestConformance(t *testing.T) {
	b := newBackend(t, nil)
	t.Logf("ONNX Runtime %s from %s", b.Version(), b.Library())
	runtimetest.Run(t, b, runtimetest.Options{Format: "onnx"})
}

// The session options change how ONNX Runtime computes, not what: every
// combination must still match the references.
func TestConformanceOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]string
		threads  int
	}{
		{"threads=2", nil, 2},
		{"no_optimisation_no_arena_spinning", map[string]string{SettingGraphOptimization: "disable", SettingMemoryArena: "off", SettingSpinning: "on"}, 1},
		{"basic_optimisation", map[string]string{SettingGraphOptimization: "basic"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtimetest.Run(t, newBackend(t, tc.settings), runtimetest.Options{
				Format: "onnx", Open: runtime.Options{Threads: tc.threads}, Corrupt: -1, Goroutines: 2,
			})
		})
	}
}

func TestRegistered(t *testing.T) {
	b, err := runtime.New(Name, runtime.Config{Settings: map[string]string{SettingLibrary: libPath(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Available(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Formats(), []string{"onnx"}) || b.Name() != "onnxruntime" || b.Version() == "" {
		t.Errorf("name %q formats %v version %q", b.Name(), b.Formats(), b.Version())
	}
}

func TestMissingOrBadLibrary(t *testing.T) {
	notLib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(notLib, []byte("this is not a shared library\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
	}{
		{"absent", filepath.Join(t.TempDir(), "no", "libonnxruntime.so.1")},
		{"not_a_library", notLib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(runtime.Config{Settings: map[string]string{SettingLibrary: tc.path}})
			err := b.Available()
			if !errors.Is(err, runtime.ErrUnavailable) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("Available: %v, want an error wrapping ErrUnavailable naming %s", err, tc.path)
			}
			t.Logf("Available: %v", err)
			m, err := b.Open(context.Background(), []byte("x"), runtime.Options{})
			if m != nil || !errors.Is(err, runtime.ErrUnavailable) {
				t.Fatalf("Open: %v, %v; want no model and ErrUnavailable", m, err)
			}
			if b.Library() != "" {
				t.Errorf("Library() = %q for an unusable library", b.Library())
			}
		})
	}
}

// probe tells apart the reasons a library cannot be used. It does not touch
// the process's ONNX Runtime environment, so it runs whatever was loaded.
func TestProbeReasons(t *testing.T) {
	dir := t.TempDir()
	notLib := filepath.Join(dir, "garbage.so")
	os.WriteFile(notLib, []byte("\x7fELF but not really"), 0o644)
	_, err := probe(filepath.Join(dir, "absent.so"))
	if err == nil || !strings.Contains(err.Error(), "cannot load") || !strings.Contains(err.Error(), "absent.so") {
		t.Errorf("absent: %v", err)
	}
	_, err = probe(notLib)
	if err == nil || !strings.Contains(err.Error(), "cannot load") {
		t.Errorf("garbage: %v", err)
	}
	// A real shared library that is not ONNX Runtime.
	if _, err := probe("libm.so.6"); err == nil || !strings.Contains(err.Error(), "is not ONNX Runtime") {
		t.Errorf("libm: %v", err)
	}
	v, err := probe(libPath(t))
	if err != nil || v == "" {
		t.Errorf("real library: %q, %v", v, err)
	}

	// A library that answers like an ONNX Runtime too old for C API 24.
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build a fake old ONNX Runtime")
	}
	src := filepath.Join(dir, "old.c")
	os.WriteFile(src, []byte(`#include <stdint.h>
#include <stddef.h>
static const void *get_api(uint32_t v) { return v <= 17 ? (const void *)1 : NULL; }
static const char *version(void) { return "1.17.3"; }
static const struct { const void *(*a)(uint32_t); const char *(*b)(void); } base = { get_api, version };
const void *OrtGetApiBase(void) { return &base; }
`), 0o644)
	old := filepath.Join(dir, "libonnxruntime.so.1")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", old, src).CombinedOutput(); err != nil {
		t.Skipf("cannot build a fake library: %v\n%s", err, out)
	}
	v, err = probe(old)
	if err == nil || !strings.Contains(err.Error(), "too old") || v != "1.17.3" {
		t.Errorf("old library: %q, %v; want version 1.17.3 and a too-old error", v, err)
	}
	t.Logf("old library: %v", err)
}

func TestSecondLibraryRefused(t *testing.T) {
	newBackend(t, nil) // the real one is loaded
	other := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	os.WriteFile(other, []byte("x"), 0o644)
	err := New(runtime.Config{Settings: map[string]string{SettingLibrary: other}}).Available()
	if !errors.Is(err, runtime.ErrUnavailable) || !strings.Contains(err.Error(), "already loaded") {
		t.Fatalf("Available with a second library: %v", err)
	}
}

func TestBadSettings(t *testing.T) {
	for k, v := range map[string]string{SettingGraphOptimization: "max", SettingMemoryArena: "maybe", SettingSpinning: "fast"} {
		err := New(runtime.Config{Settings: map[string]string{SettingLibrary: "unused", k: v}}).Available()
		if !errors.Is(err, runtime.ErrUnavailable) || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v, want ErrUnavailable naming the setting", k, v, err)
		}
	}
}

func TestCorruptModel(t *testing.T) {
	b := newBackend(t, nil)
	mnist := readShared(t, "onnx_wonnx_opt_mnist")
	for name, data := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("definitely not an ONNX model"),
		"truncated": mnist[:len(mnist)/3],
	} {
		m, err := b.Open(context.Background(), data, runtime.Options{})
		if m != nil || !errors.Is(err, runtime.ErrBadModel) {
			t.Errorf("%s: %v, %v; want ErrBadModel", name, m, err)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := b.Open(context.Background(), mnist, runtime.Options{ArenaLimit: 1 << 20}); !errors.Is(err, runtime.ErrUnsupported) {
		t.Errorf("ArenaLimit: %v, want ErrUnsupported", err)
	}
}

func TestWrongInputSaysWhatIsExpected(t *testing.T) {
	b := newBackend(t, nil)
	m, err := b.Open(context.Background(), readShared(t, "onnx_wonnx_opt_mnist"), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := make([]runtime.Tensor, 1)
	for _, tc := range []struct {
		in   runtime.Tensor
		want string
	}{
		{runtime.Tensor{DType: runtime.Float32, Shape: []int{1, 1, 28, 27}, Data: make([]byte, 4*28*27)}, "expects [1 1 28 28]"},
		{runtime.Tensor{DType: runtime.Int8, Shape: []int{1, 1, 28, 28}, Data: make([]byte, 28*28)}, "expects float32"},
		{runtime.Tensor{DType: runtime.Float32, Shape: []int{1, 1, 28, 28}, Data: make([]byte, 10)}, "needs 3136"},
	} {
		err := s.Run(context.Background(), []runtime.Tensor{tc.in}, out)
		if !errors.Is(err, runtime.ErrInput) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Input3") {
			t.Errorf("%v: %v, want ErrInput naming Input3 and %q", tc.in.Shape, err, tc.want)
		}
	}
}

// A symbolic dimension takes its size from the input: silero VAD runs on
// any chunk length, and its outputs follow the batch.
func TestSymbolicDims(t *testing.T) {
	b := newBackend(t, nil)
	m, err := b.Open(context.Background(), readShared(t, "onnx_silero_vad_16k_op15"), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.Inputs()[0].Shape; !slices.Equal(got, []int{-1, -1}) {
		t.Fatalf("input shape %v, want [-1 -1]", got)
	}
	s, _ := m.NewSession()
	defer s.Close()
	sr := make([]byte, 8)
	binary.LittleEndian.PutUint64(sr, 16000)
	for _, tc := range []struct{ batch, n int }{{1, 576}, {2, 576}, {3, 320}} {
		in := []runtime.Tensor{
			{DType: runtime.Float32, Shape: []int{tc.batch, tc.n}, Data: make([]byte, 4*tc.batch*tc.n)},
			{DType: runtime.Float32, Shape: []int{2, tc.batch, 128}, Data: make([]byte, 4*2*tc.batch*128)},
			{DType: runtime.Int64, Shape: []int{}, Data: sr},
		}
		out := make([]runtime.Tensor, 2)
		if err := s.Run(context.Background(), in, out); err != nil {
			t.Fatalf("batch %d length %d: %v", tc.batch, tc.n, err)
		}
		if !slices.Equal(out[0].Shape, []int{tc.batch, 1}) || !slices.Equal(out[1].Shape, []int{2, tc.batch, 128}) {
			t.Errorf("batch %d: output shapes %v %v", tc.batch, out[0].Shape, out[1].Shape)
		}
		p := math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data))
		if !(p >= 0 && p <= 1) {
			t.Errorf("batch %d: speech probability %v outside [0, 1]", tc.batch, p)
		}
	}
}

func TestCancelledRun(t *testing.T) {
	b := newBackend(t, nil)
	m, err := b.Open(context.Background(), readShared(t, "onnx_node_relu"), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, _ := m.NewSession()
	defer s.Close()
	in := []runtime.Tensor{{DType: runtime.Float32, Shape: []int{3, 4, 5}, Data: make([]byte, 4*60)}}
	out := make([]runtime.Tensor, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx, in, out); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v, want context.Canceled", err)
	}
	// A deadline that is not reached leaves the run alone, and the watch
	// it sets up is cleared for the next one.
	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	for i := range 3 {
		if err := s.Run(ctx, in, out); err != nil {
			t.Fatalf("run %d after a cancelled one: %v", i, err)
		}
	}
}

func readShared(tb testing.TB, name string) []byte {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(runtimetest.Dir(tb), name, "model.onnx"))
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// FuzzOpen feeds mutated ONNX files to ONNX Runtime through Open and runs
// what opens on zeros: whatever the bytes, the answer is a model or an
// error, and a run's result or error, never a crash.
func FuzzOpen(f *testing.F) {
	dir := runtimetest.Dir(f)
	models, _ := filepath.Glob(filepath.Join(dir, "onnx_*", "model.onnx"))
	for _, p := range models {
		if st, err := os.Stat(p); err == nil && st.Size() < 1<<20 {
			data, _ := os.ReadFile(p)
			f.Add(data)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("\x08\x07\x12\x00"))
	b := newBackend(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := b.Open(context.Background(), data, runtime.Options{})
		if err != nil {
			if m != nil {
				t.Fatalf("Open returned a model and %v", err)
			}
			if !errors.Is(err, runtime.ErrBadModel) && !errors.Is(err, runtime.ErrUnsupported) {
				t.Fatalf("Open: %v, want ErrBadModel or ErrUnsupported", err)
			}
			return
		}
		defer m.Close()
		s, err := m.NewSession()
		if err != nil {
			t.Fatalf("NewSession on an opened model: %v", err)
		}
		defer s.Close()
		var in []runtime.Tensor
		total := 0
		for _, info := range m.Inputs() {
			shape := slices.Clone(info.Shape)
			for i, d := range shape {
				if d < 0 {
					shape[i] = 1
				}
			}
			n := runtime.ByteSize(info.DType, shape)
			if total += n; n < 0 || total > 1<<20 {
				return // absurd shapes: not worth the memory
			}
			in = append(in, runtime.Tensor{DType: info.DType, Shape: shape, Data: make([]byte, n)})
		}
		_ = s.Run(context.Background(), in, make([]runtime.Tensor, len(m.Outputs())))
	})
}

// What graphIO reads from the protobuf must be what ONNX Runtime reports,
// for every ONNX model at hand: the shared ones and the project's demos.
func TestGraphIOMatchesORT(t *testing.T) {
	newBackend(t, nil)
	paths, _ := filepath.Glob(filepath.Join(runtimetest.Dir(t), "onnx_*", "model.onnx"))
	demos, _ := filepath.Glob(filepath.Join(repoRoot(), "models", "demo", "*.onnx"))
	paths = append(paths, demos...)
	if len(paths) < 10 {
		t.Fatalf("only %d ONNX models found", len(paths))
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ins, outs, err := declaredIO(data)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		oi, oo, err := ort.GetInputOutputInfoWithONNXData(data)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		wantIn, err1 := infos("input", oi)
		wantOut, err2 := infos("output", oo)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v %v", p, err1, err2)
		}
		if !reflect.DeepEqual(ins, wantIn) || !reflect.DeepEqual(outs, wantOut) {
			t.Errorf("%s:\nprotobuf     %v -> %v\nONNX Runtime %v -> %v", filepath.Base(filepath.Dir(p))+"/"+filepath.Base(p), ins, outs, wantIn, wantOut)
		}
	}
}

// A caller that keeps its tensors across runs gets values made once: the
// input is read in place (a change to its buffer shows in the next run) and
// the output written in place, into the same buffer every time.
func TestReusedBuffers(t *testing.T) {
	b := newBackend(t, nil)
	m, err := b.Open(context.Background(), readShared(t, "onnx_node_relu"), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, _ := m.NewSession()
	defer s.Close()
	ctx := context.Background()
	in := []runtime.Tensor{{DType: runtime.Float32, Shape: []int{3, 4, 5}, Data: make([]byte, 4*60)}}
	out := make([]runtime.Tensor, 1)
	for sign, want := range map[float32]float32{1: 2.5, -1: 0} {
		for i := range 60 {
			binary.LittleEndian.PutUint32(in[0].Data[4*i:], math.Float32bits(sign*2.5))
		}
		before := out[0].Data
		if err := s.Run(ctx, in, out); err != nil {
			t.Fatal(err)
		}
		if got := math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data[4*59:])); got != want {
			t.Errorf("relu(%v) = %v, want %v", sign*2.5, got, want)
		}
		if before != nil && &before[0] != &out[0].Data[0] {
			t.Errorf("output buffer replaced between runs")
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := s.Run(ctx, in, out); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.0f allocations per run with reused tensors", allocs)
	// All of them are onnxruntime_go's: RunWithOptions makes two arrays of
	// C value pointers per call, which cgo moves to the heap.
	if allocs > 4 {
		t.Errorf("%.0f allocations per run with reused tensors, want at most 4", allocs)
	}
}

// loopModel is an ONNX model with a Loop whose body doubles v, M times
// while cond holds: int64 and bool scalar inputs and a subgraph.
func loopModel() []byte {
	str := func(num protowire.Number, s string) []byte { return bytesField(num, []byte(s)) }
	node := func(op string, ins, outs []string, attrs ...[]byte) []byte {
		var b []byte
		for _, in := range ins {
			b = append(b, str(1, in)...)
		}
		for _, out := range outs {
			b = append(b, str(2, out)...)
		}
		b = append(b, str(4, op)...)
		for _, a := range attrs {
			b = append(b, bytesField(5, a)...)
		}
		return bytesField(1, b)
	}
	const float, int64, boolean = 1, 7, 9
	body := msg(
		node("Identity", []string{"cond_in"}, []string{"cond_out"}),
		node("Add", []string{"v_in", "v_in"}, []string{"v_out"}),
		str(2, "body"),
		bytesField(fGraphInput, tensorValue("i", int64)),
		bytesField(fGraphInput, tensorValue("cond_in", boolean)),
		bytesField(fGraphInput, tensorValue("v_in", float, 1)),
		bytesField(fGraphOutput, tensorValue("cond_out", boolean)),
		bytesField(fGraphOutput, tensorValue("v_out", float, 1)),
	)
	graphAttr := msg(str(1, "body"), varintField(20, 5), bytesField(6, body)) // type GRAPH
	main := msg(
		node("Loop", []string{"M", "cond", "v"}, []string{"v_final"}, graphAttr),
		str(2, "doubling"),
		bytesField(fGraphInput, tensorValue("M", int64)),
		bytesField(fGraphInput, tensorValue("cond", boolean)),
		bytesField(fGraphInput, tensorValue("v", float, 1)),
		bytesField(fGraphOutput, tensorValue("v_final", float, 1)),
	)
	opset := msg(str(1, ""), varintField(2, 17))
	return msg(varintField(1, 8), bytesField(8, opset), bytesField(fModelGraph, main))
}

func TestLoopModel(t *testing.T) {
	b := newBackend(t, nil)
	m, err := b.Open(context.Background(), loopModel(), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []runtime.TensorInfo{{Name: "M", DType: runtime.Int64, Shape: []int{}}, {Name: "cond", DType: runtime.Bool, Shape: []int{}}, {Name: "v", DType: runtime.Float32, Shape: []int{1}}}
	if got := m.Inputs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("inputs %v, want %v", got, want)
	}
	s, _ := m.NewSession()
	defer s.Close()
	for _, tc := range []struct {
		times int64
		cond  byte
		want  float32
	}{{3, 1, 12}, {0, 1, 1.5}, {5, 0, 1.5}, {10, 1, 1536}} {
		in := []runtime.Tensor{
			{DType: runtime.Int64, Shape: []int{}, Data: binary.LittleEndian.AppendUint64(nil, uint64(tc.times))},
			{DType: runtime.Bool, Shape: []int{}, Data: []byte{tc.cond}},
			{DType: runtime.Float32, Shape: []int{1}, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5))},
		}
		out := make([]runtime.Tensor, 1)
		if err := s.Run(context.Background(), in, out); err != nil {
			t.Fatalf("M=%d cond=%d: %v", tc.times, tc.cond, err)
		}
		if got := math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data)); got != tc.want || !slices.Equal(out[0].Shape, []int{1}) {
			t.Errorf("M=%d cond=%d: %v %v, want %v [1]", tc.times, tc.cond, got, out[0].Shape, tc.want)
		}
	}
}

// A model may declare an output shape its graph does not produce (here Relu
// of [2 3] declared [3 2]); ONNX Runtime itself then reports the output as
// unknown. Runs must still give the real shape, and Outputs stop claiming
// the declared one.
func TestWrongDeclaredOutputShape(t *testing.T) {
	b := newBackend(t, nil)
	str := func(num protowire.Number, s string) []byte { return bytesField(num, []byte(s)) }
	relu := msg(str(1, "x"), str(2, "y"), str(4, "Relu"))
	g := msg(bytesField(1, relu), str(2, "g"), bytesField(fGraphInput, tensorValue("x", 1, 2, 3)), bytesField(fGraphOutput, tensorValue("y", 1, 3, 2)))
	data := msg(varintField(1, 8), bytesField(8, msg(str(1, ""), varintField(2, 17))), bytesField(fModelGraph, g))
	m, err := b.Open(context.Background(), data, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, _ := m.NewSession()
	defer s.Close()
	in := []runtime.Tensor{{DType: runtime.Float32, Shape: []int{2, 3}, Data: make([]byte, 24)}}
	binary.LittleEndian.PutUint32(in[0].Data[20:], math.Float32bits(7))
	out := make([]runtime.Tensor, 1)
	for i := range 3 {
		if err := s.Run(context.Background(), in, out); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if !slices.Equal(out[0].Shape, []int{2, 3}) || math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data[20:])) != 7 {
			t.Fatalf("run %d: output %v %v", i, out[0].Shape, out[0].Data)
		}
	}
	if got := m.Outputs()[0].Shape; !slices.Equal(got, []int{-1, -1}) {
		t.Errorf("Outputs()[0].Shape = %v after runs, want [-1 -1]", got)
	}
}
