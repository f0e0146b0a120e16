package tflite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// fcModel is a one-FULLY_CONNECTED int8 model: y = W·x + b on 4 inputs and
// 3 outputs, every scale 1, so the expected output is plain arithmetic.
func fcModel() *testModel {
	m := &testModel{}
	q := func(t testTensor) testTensor { t.scale, t.zp = []float32{1}, []int64{0}; return t }
	in := m.add(q(testTensor{name: "x", typ: ttInt8, shape: []int32{1, 4}}))
	w := m.add(q(testTensor{name: "w", typ: ttInt8, shape: []int32{3, 4}, data: i8bytes([]int8{1, 0, 0, 0, 0, 2, 0, 0, 1, 1, 1, 1})}))
	b := m.add(q(testTensor{name: "b", typ: ttInt32, shape: []int32{3}, data: i32bytes([]int32{0, 1, -2})}))
	out := m.add(q(testTensor{name: "y", typ: ttInt8, shape: []int32{1, 3}}))
	m.ops = append(m.ops, testOp{code: opFullyConnected, inputs: []int32{in, w, b}, outputs: []int32{out}})
	m.inputs, m.outputs = []int32{in}, []int32{out}
	return m
}

func open(t testing.TB, data []byte) (*Model, error) {
	t.Helper()
	m, err := New(runtime.Config{}).Open(context.Background(), data, runtime.Options{})
	if err != nil {
		return nil, err
	}
	return m.(*Model), nil
}

func run1(t testing.TB, m *Model, in ...[]byte) [][]byte {
	t.Helper()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	infos := m.Inputs()
	ins := make([]runtime.Tensor, len(in))
	for i := range in {
		ins[i] = runtime.Tensor{DType: infos[i].DType, Shape: infos[i].Shape, Data: in[i]}
	}
	outs := make([]runtime.Tensor, len(m.Outputs()))
	if err := s.Run(context.Background(), ins, outs); err != nil {
		t.Fatal(err)
	}
	res := make([][]byte, len(outs))
	for i := range outs {
		res[i] = outs[i].Data
	}
	return res
}

func TestFullyConnectedKnown(t *testing.T) {
	m, err := open(t, fcModel().encode())
	if err != nil {
		t.Fatal(err)
	}
	got := asI8(run1(t, m, i8bytes([]int8{5, -3, 7, 100}))[0])
	// 5; 2·(-3)+1; 5-3+7+100-2 = 107.
	want := []int8{5, -5, 107}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// An operator code written only in the deprecated byte field (old files)
// still resolves.
func TestDeprecatedBuiltinCode(t *testing.T) {
	tm := fcModel()
	tm.ops[0].deprecatedOld = true
	if _, err := open(t, tm.encode()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	good := fcModel().encode()
	unknownOp := fcModel()
	unknownOp.ops[0].code = 66 // SIN
	ext := fcModel()
	ext.extBuffer = true
	badIndex := fcModel()
	badIndex.ops[0].inputs[1] = 99
	badShape := fcModel()
	badShape.tensors[3].shape = []int32{1, 4}
	shortBuf := fcModel()
	shortBuf.tensors[1].data = shortBuf.tensors[1].data[:5]
	notID := append([]byte(nil), good...)
	copy(notID[4:8], "XXXX")
	hugeArena := fcModel()
	hugeArena.tensors[0].shape = []int32{1 << 20, 1 << 10}
	hugeArena.tensors[0].shape = []int32{1 << 28, 4}
	hugeArena.tensors[3].shape = []int32{1 << 28, 3}

	cases := []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"empty", nil, runtime.ErrBadModel, "too short"},
		{"identifier", notID, runtime.ErrBadModel, "TFL3"},
		{"truncated", good[:len(good)/2], runtime.ErrBadModel, ""},
		{"unknown operator", unknownOp.encode(), runtime.ErrUnsupported, "operator 0 is SIN"},
		{"external buffer", ext.encode(), ErrExternalBuffer, "outside the flatbuffer"},
		{"tensor index", badIndex.encode(), runtime.ErrBadModel, "tensor 99"},
		{"output shape", badShape.encode(), runtime.ErrBadModel, "shape"},
		{"buffer size", shortBuf.encode(), runtime.ErrBadModel, "holds 5 bytes"},
		{"arena limit", hugeArena.encode(), runtime.ErrArenaLimit, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := open(t, c.data)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.is) {
				t.Fatalf("error %q does not wrap %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

// The unsupported-operator error names the model's operators so an
// operator can tell what the model needs.
func TestUnsupportedListsOps(t *testing.T) {
	tm := fcModel()
	tm.ops[0].code = 66
	_, err := open(t, tm.encode())
	if err == nil || !strings.Contains(err.Error(), "model uses SIN") {
		t.Fatalf("error %v does not list the model's operators", err)
	}
}

func TestCloseSemantics(t *testing.T) {
	m, err := open(t, fcModel().encode())
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in := []runtime.Tensor{{DType: runtime.Int8, Shape: []int{1, 4}, Data: make([]byte, 4)}}
	out := make([]runtime.Tensor, 1)
	// Close the model while sessions run: no crash, runs after Close fail.
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := m.NewSession()
			if err != nil {
				return
			}
			out := make([]runtime.Tensor, 1)
			<-start
			for range 200 {
				if err := s.Run(context.Background(), in, out); err != nil {
					if !errors.Is(err, runtime.ErrClosed) {
						t.Errorf("run during close: %v", err)
					}
					return
				}
			}
		}()
	}
	close(start)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := s.Run(context.Background(), in, out); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("run after model Close: %v, want ErrClosed", err)
	}
	if _, err := m.NewSession(); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("NewSession after Close: %v, want ErrClosed", err)
	}
	m2, _ := open(t, fcModel().encode())
	s2, _ := m2.NewSession()
	s2.Close()
	if err := s2.Run(context.Background(), in, out); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("run after session Close: %v, want ErrClosed", err)
	}
}

func TestCancelledRun(t *testing.T) {
	m, err := open(t, fcModel().encode())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := m.NewSession()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	in := []runtime.Tensor{{DType: runtime.Int8, Shape: []int{1, 4}, Data: make([]byte, 4)}}
	if err := s.Run(ctx, in, make([]runtime.Tensor, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with a cancelled context: %v", err)
	}
}

// TestNoAllocations proves a run allocates nothing once the outputs have
// their buffers, on every shared model.
func TestNoAllocations(t *testing.T) {
	for _, sm := range tfliteModels(t) {
		t.Run(sm.name, func(t *testing.T) {
			for _, cfg := range []runtime.Config{{}, litert} {
				m := openShared(t, sm, cfg)
				s, err := m.NewSession()
				if err != nil {
					t.Fatal(err)
				}
				ins := readInputs(t, m, sm.dir, sm.meta.Cases[0].Inputs)
				outs := make([]runtime.Tensor, len(m.Outputs()))
				ctx := context.Background()
				runs := 5
				if m.ArenaSize() > 1<<20 {
					runs = 1
				}
				allocs := testing.AllocsPerRun(runs, func() {
					if err := s.Run(ctx, ins, outs); err != nil {
						t.Fatal(err)
					}
				})
				if allocs != 0 {
					t.Fatalf("%v allocations per run, want 0", allocs)
				}
			}
		})
	}
}

// FuzzLoad feeds arbitrary bytes to Open, and runs what opens: nothing may
// panic, hang or allocate without bound. The seeds are the shared real
// models (read at test time, never committed) and small models built here.
func FuzzLoad(f *testing.F) {
	f.Add(fcModel().encode())
	tm := fcModel()
	tm.ops[0].deprecatedOld = true
	f.Add(tm.encode())
	for _, seed := range kernelSeeds() {
		f.Add(seed)
	}
	{
		root := os.Getenv("EDGEFLEET_SHARED_MODELS")
		if root == "" {
			root = filepath.Join("..", "..", "..", "..", "shared", "models")
		}
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(root, e.Name(), "model.tflite"))
			if err == nil && len(b) < 1<<20 {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New(runtime.Config{}).Open(context.Background(), data, runtime.Options{ArenaLimit: 64 << 20})
		if err != nil {
			if !errors.Is(err, runtime.ErrBadModel) && !errors.Is(err, runtime.ErrUnsupported) && !errors.Is(err, runtime.ErrArenaLimit) {
				t.Fatalf("error %v wraps none of the runtime sentinels", err)
			}
			return
		}
		// Run only what is cheap: a mutated shape can ask for seconds of
		// arithmetic, which is legitimate work, not a hang.
		if m.(*Model).MACs() > 20_000_000 {
			return
		}
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var ins []runtime.Tensor
		for _, info := range m.Inputs() {
			n := runtime.ByteSize(info.DType, info.Shape)
			ins = append(ins, runtime.Tensor{DType: info.DType, Shape: info.Shape, Data: make([]byte, n)})
		}
		outs := make([]runtime.Tensor, len(m.Outputs()))
		_ = s.Run(context.Background(), ins, outs)
	})
}

// A graph input that also carries data in the file must not have that
// data (the caller's model bytes) overwritten by Run.
func TestInputWithBufferLeavesModelBytes(t *testing.T) {
	tm := fcModel()
	tm.tensors[0].data = i8bytes([]int8{9, 9, 9, 9})
	data := tm.encode()
	orig := string(data)
	m, err := open(t, data)
	if err != nil {
		t.Fatal(err)
	}
	got := asI8(run1(t, m, i8bytes([]int8{1, 2, 3, 4}))[0])
	if got[0] != 1 || got[1] != 5 || got[2] != 8 {
		t.Fatalf("got %v, want [1 5 8]", got)
	}
	if string(data) != orig {
		t.Fatal("Run wrote into the model's bytes")
	}
}

func TestBadRoundingSetting(t *testing.T) {
	b := New(runtime.Config{Settings: map[string]string{"rounding": "dobule"}})
	if err := b.Available(); !errors.Is(err, runtime.ErrUnavailable) || !strings.Contains(err.Error(), "dobule") {
		t.Fatalf("Available: %v", err)
	}
	if _, err := b.Open(context.Background(), fcModel().encode(), runtime.Options{}); err == nil {
		t.Fatal("Open succeeded with a bad setting")
	}
	for _, r := range []string{"", "double", "single", "litert"} {
		if err := New(runtime.Config{Settings: map[string]string{"rounding": r}}).Available(); err != nil {
			t.Fatalf("rounding=%q: %v", r, err)
		}
	}
}
