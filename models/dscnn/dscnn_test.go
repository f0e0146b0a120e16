package dscnn

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
)

func TestLayersUseTheirRange(t *testing.T) {
	n, err := Build(1)
	if err != nil {
		t.Fatal(err)
	}
	x, s := bytesInt8(n.Input), [4]int{1, InH, InW, 1}
	for i, c := range n.convs {
		if x, s, err = c.Run(x, s); err != nil {
			t.Fatal(err)
		}
		seen := map[int8]bool{}
		for _, v := range x {
			seen[v] = true
		}
		if len(seen) < 24 {
			t.Errorf("layer %d output has %d distinct values; the benchmark would run on near-constant data", i, len(seen))
		}
	}
	if n.MACs < 2_000_000 {
		t.Errorf("%d MACs, want the DS-CNN small's ~2.7 M", n.MACs)
	}
	t.Logf("%d MACs, expected output %v", n.MACs, bytesInt8(n.Expected))
	m, err := Build(1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.TFLite, n.TFLite) || !bytes.Equal(m.ONNX, n.ONNX) {
		t.Error("two builds with the same seed differ")
	}
}

// TestEngineMatchesReference holds the built-in engine to models/quant on
// the whole network, byte for byte.
func TestEngineMatchesReference(t *testing.T) {
	n, err := Build(1)
	if err != nil {
		t.Fatal(err)
	}
	be, err := runtime.New("tflite", runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := run(t, be, n.TFLite, []int{1, InH, InW, 1}, n.Input)
	if !bytes.Equal(got, n.Expected) {
		t.Fatalf("engine answers %v, models/quant says %v", bytesInt8(got), bytesInt8(n.Expected))
	}
}

// liteRTGolden is what LiteRT 2.5.3 (@litertjs/core, TFLite compiled to
// WASM with its default XNNPACK delegate, one thread) answered for
// Build(1)'s TFLite form and input, run by hand with the scripts in
// ../shared/tools/refrun. It differs from the TFLite reference arithmetic
// (Expected) by up to 5 steps: XNNPACK requantizes in float32.
var liteRTGolden = []int8{-126, -60, -68, -108, -124, -126, -111, -106, -128, -81, -115, -127}

// TestEngineMatchesLiteRT holds the engine's LiteRT arithmetic to what
// LiteRT itself gave, byte for byte.
func TestEngineMatchesLiteRT(t *testing.T) {
	n, err := Build(1)
	if err != nil {
		t.Fatal(err)
	}
	be, err := runtime.New("tflite", runtime.Config{Settings: map[string]string{"rounding": "litert"}})
	if err != nil {
		t.Fatal(err)
	}
	got := bytesInt8(run(t, be, n.TFLite, []int{1, InH, InW, 1}, n.Input))
	if !slices.Equal(got, liteRTGolden) {
		t.Fatalf("engine in LiteRT arithmetic answers %v, LiteRT answered %v", got, liteRTGolden)
	}
	if slices.Equal(got, bytesInt8(n.Expected)) {
		t.Fatal("LiteRT's answer equals the reference arithmetic's; this test no longer tells the two apart")
	}
}

func run(t testing.TB, be runtime.Backend, model []byte, shape []int, input []byte) []byte {
	t.Helper()
	ctx := context.Background()
	m, err := be.Open(ctx, model, runtime.Options{Threads: 1})
	if err != nil {
		t.Fatalf("%s cannot open the network: %v", be.Name(), err)
	}
	defer m.Close()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := []runtime.Tensor{{}}
	if err := s.Run(ctx, []runtime.Tensor{{DType: runtime.Int8, Shape: shape, Data: input}}, out); err != nil {
		t.Fatal(err)
	}
	return out[0].Data
}

// BenchmarkTFLite is one inference of the network on the built-in engine,
// one thread; BenchmarkONNXRuntime (cgo builds) is the same integers on
// ONNX Runtime. Run them together to compare.
func BenchmarkTFLite(b *testing.B) {
	be, err := runtime.New("tflite", runtime.Config{})
	if err != nil {
		b.Fatal(err)
	}
	bench(b, be, false)
}

func bench(b *testing.B, be runtime.Backend, nchw bool) {
	n, err := Build(1)
	if err != nil {
		b.Fatal(err)
	}
	model, shape := n.TFLite, []int{1, InH, InW, 1}
	if nchw {
		model, shape = n.ONNX, []int{1, 1, InH, InW}
	}
	ctx := context.Background()
	m, err := be.Open(ctx, model, runtime.Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	in := []runtime.Tensor{{DType: runtime.Int8, Shape: shape, Data: n.Input}}
	out := []runtime.Tensor{{Data: make([]byte, Classes)}}
	b.ReportMetric(float64(n.MACs), "MACs/op")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Run(ctx, in, out); err != nil {
			b.Fatal(err)
		}
	}
}

func bytesInt8(b []byte) []int8 {
	v := make([]int8, len(b))
	for i, x := range b {
		v[i] = int8(x)
	}
	return v
}
