//go:build cgo

package dscnn

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/onnxrt"
)

// ortTolerance is the largest difference, in output steps (1/256), accepted
// from ONNX Runtime: it requantizes in float with round half to even where
// TFLite uses fixed-point multipliers, and over nine layers one-step
// differences add up (5 steps measured with ONNX Runtime 1.24.3). A layout
// mistake in the ONNX form (a filter not transposed, wrong pads) changes the
// logits outright and fails both this and the top class.
const ortTolerance = 8

func TestONNXRuntimeAgrees(t *testing.T) {
	be := ort(t)
	n, err := Build(1)
	if err != nil {
		t.Fatal(err)
	}
	got := run(t, be, n.ONNX, []int{1, 1, InH, InW}, n.Input)
	diff := 0
	for i := range got {
		d := int(int8(got[i])) - int(int8(n.Expected[i]))
		diff = max(diff, d, -d)
	}
	t.Logf("ONNX Runtime %v, TFLite reference %v: largest difference %d; LiteRT answered %v", bytesInt8(got), bytesInt8(n.Expected), diff, liteRTGolden)
	if diff > ortTolerance {
		t.Fatalf("ONNX Runtime differs by %d steps from the TFLite reference; the ONNX form is not the same network", diff)
	}
	if a, b := argmax(got), argmax(n.Expected); a != b {
		t.Fatalf("ONNX Runtime picks class %d, the TFLite reference %d", a, b)
	}
}

func BenchmarkONNXRuntime(b *testing.B) { bench(b, ort(b), true) }

func ort(tb testing.TB) runtime.Backend {
	lib := os.Getenv(onnxrt.EnvLibrary)
	if lib == "" {
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
		found, _ := filepath.Glob(filepath.Join("..", "..", ".cache", "onnxruntime", "*", "linux-"+arch, "libonnxruntime.so.1"))
		if len(found) == 0 {
			tb.Skipf("ONNX Runtime library not found: set $%s, or run deploy/onnxruntime/fetch.sh", onnxrt.EnvLibrary)
		}
		sort.Strings(found)
		lib = found[len(found)-1]
	}
	be, err := runtime.New(onnxrt.Name, runtime.Config{Settings: map[string]string{onnxrt.SettingLibrary: lib}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := be.Available(); err != nil {
		tb.Skipf("ONNX Runtime not usable here: %v", err)
	}
	return be
}

func argmax(b []byte) int {
	best := 0
	for i := range b {
		if int8(b[i]) > int8(b[best]) {
			best = i
		}
	}
	return best
}
