package models_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/models"
	"github.com/edgefleet/edgefleet/models/vibration"
)

// TestRoundTripTFLite opens every demo model with the agent's built-in
// engine, through the backend registry as the agent does, and runs its
// sample input. Good versions must give the expected output byte for byte;
// the faulty one must not, and must give exactly what our reference says
// its (wrong) weights give, so the difference is the model's, not the
// engine's.
//
// It runs in both of the engine's arithmetics that real runtimes use:
// TFLite's reference (the default, as TFLite Micro) and LiteRT's
// ("rounding": "litert", XNNPACK's float32 requantization). The generator
// only ships samples on which the two agree. (LiteRT 2.5.3 itself, run
// on these files by hand, gave the expected outputs too.)
func TestRoundTripTFLite(t *testing.T) {
	for _, rounding := range []string{"", "litert"} {
		t.Run("rounding="+rounding, func(t *testing.T) {
			b, err := runtime.New("tflite", runtime.Config{Settings: map[string]string{"rounding": rounding}})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Available(); err != nil {
				t.Fatalf("the built-in engine must run everywhere: %v", err)
			}
			roundTrip(t, b, "tflite")
		})
	}
}

// roundTrip runs the sample of every demo of one format on b and checks the
// output against the sidecar's expected output, within its tolerance.
func roundTrip(t *testing.T, b runtime.Backend, format string) {
	ds, err := models.Demos()
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]vibration.Spec{}
	for _, s := range vibration.Specs() {
		specs[s.Version] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 0
	for _, d := range ds {
		if d.Meta.Format != format {
			continue
		}
		n++
		t.Run(d.Meta.Version, func(t *testing.T) {
			spec, ok := specs[d.Meta.Version]
			if !ok {
				t.Fatalf("no spec for demo %s", d.Meta.Version)
			}
			got := runOnce(ctx, t, b, d)
			ref, err := vibration.Build(spec)
			if err != nil {
				t.Fatal(err)
			}
			tol := d.Meta.Tolerance
			if actual := ref.Actual(); maxDiff(got, actual) > tol {
				t.Fatalf("%s answers %v for the sample, our reference of the file says %v (tolerance %d)", b.Name(), asInt8(got), asInt8(actual), tol)
			}
			diff := maxDiff(got, d.ExpectedOutput)
			if spec.Faulty {
				if diff <= tol {
					t.Fatalf("faulty %s gives %v, within %d of its expected output %v; a self-test could not catch it", d.Meta.Version, asInt8(got), tol, asInt8(d.ExpectedOutput))
				}
				t.Logf("faulty %s answers %v (%s), expected %v (%s): a self-test catches it",
					d.Meta.Version, asInt8(got), vibration.Label(got), asInt8(d.ExpectedOutput), d.Meta.ExpectedLabel)
				return
			}
			if diff > tol {
				t.Fatalf("%s answers %v, expected output is %v (tolerance %d)", b.Name(), asInt8(got), asInt8(d.ExpectedOutput), tol)
			}
			t.Logf("%s answers %v, expected %v: largest difference %d", b.Name(), asInt8(got), asInt8(d.ExpectedOutput), diff)
		})
	}
	if n != len(specs) {
		t.Errorf("%d %s demos, want %d", n, format, len(specs))
	}
}

// maxDiff is the largest difference between two int8 tensors, or a huge
// number when their sizes differ.
func maxDiff(a, b []byte) int {
	if len(a) != len(b) {
		return 1 << 30
	}
	m := 0
	for i := range a {
		d := int(int8(a[i])) - int(int8(b[i]))
		m = max(m, d, -d)
	}
	return m
}

func runOnce(ctx context.Context, t *testing.T, b runtime.Backend, d models.Demo) []byte {
	t.Helper()
	m, err := b.Open(ctx, d.Model, runtime.Options{})
	if err != nil {
		t.Fatalf("opening %s: %v", d.Meta.File, err)
	}
	t.Cleanup(func() { m.Close() })
	ins, outs := m.Inputs(), m.Outputs()
	if len(ins) != 1 || len(outs) != 1 {
		t.Fatalf("%s has %d inputs and %d outputs, want 1 and 1", d.Meta.File, len(ins), len(outs))
	}
	in, out := d.Meta.Inputs[0], d.Meta.Outputs[0]
	if ins[0].Name != in.Name || ins[0].DType != runtime.Int8 || !equalInts(ins[0].Shape, in.Shape) {
		t.Errorf("engine sees input %v, sidecar says %s %s%v", ins[0], in.Name, in.DType, in.Shape)
	}
	if outs[0].DType != runtime.Int8 || !equalInts(outs[0].Shape, out.Shape) {
		t.Errorf("engine sees output %v, sidecar says %s%v", outs[0], out.DType, out.Shape)
	}
	// ONNX graph inputs carry no quantization; TFLite's must be the sidecar's.
	q := ins[0].Quant
	want := in.Quantization
	switch {
	case q == nil && d.Meta.Format == "tflite":
		t.Errorf("engine sees no input quantization, sidecar says %+v", want)
	case q != nil && (len(q.Scale) != 1 || len(q.ZeroPoint) != 1 || q.Scale[0] != want.Scale[0] || q.ZeroPoint[0] != want.ZeroPoint[0]):
		t.Errorf("engine sees input quantization %+v, sidecar says %+v", q, want)
	}
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := []runtime.Tensor{{}}
	if err := s.Run(ctx, []runtime.Tensor{{DType: runtime.Int8, Shape: in.Shape, Data: d.SampleInput}}, res); err != nil {
		t.Fatalf("running %s: %v", d.Meta.File, err)
	}
	if res[0].DType != runtime.Int8 || !equalInts(res[0].Shape, out.Shape) {
		t.Fatalf("output is %s%v, want int8%v", res[0].DType, res[0].Shape, out.Shape)
	}
	return res[0].Data
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func asInt8(b []byte) []int8 {
	v := make([]int8, len(b))
	for i, x := range b {
		v[i] = int8(x)
	}
	return v
}
