//go:build cgo

package models_test

import (
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/onnxrt"
)

// TestRoundTripONNX runs the ONNX variant of every demo on ONNX Runtime,
// when the library is there: the same sample must give the expected output
// within the sidecar's tolerance, and the faulty version must not.
func TestRoundTripONNX(t *testing.T) {
	b, err := runtime.New(onnxrt.Name, runtime.Config{Settings: map[string]string{onnxrt.SettingLibrary: ortLibrary(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Available(); err != nil {
		t.Skipf("ONNX Runtime not usable here: %v", err)
	}
	roundTrip(t, b, "onnx")
}

// ortLibrary finds ONNX Runtime as the onnxrt tests do:
// $EDGEFLEET_ONNXRUNTIME_LIB, else the newest library that
// deploy/onnxruntime/fetch.sh cached under the repository's .cache/.
func ortLibrary(t *testing.T) string {
	if p := os.Getenv(onnxrt.EnvLibrary); p != "" {
		return p
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
	found, _ := filepath.Glob(filepath.Join("..", ".cache", "onnxruntime", "*", "linux-"+arch, "libonnxruntime.so.1"))
	if len(found) == 0 {
		t.Skipf("ONNX Runtime library not found: set $%s, or run deploy/onnxruntime/fetch.sh (make onnxruntime)", onnxrt.EnvLibrary)
	}
	sort.Strings(found)
	return found[len(found)-1]
}

// BenchmarkDemoONNXRuntime is BenchmarkDemoTFLite on ONNX Runtime with one
// intra-op thread, over the QDQ ONNX form of the same networks.
func BenchmarkDemoONNXRuntime(b *testing.B) {
	lib := os.Getenv(onnxrt.EnvLibrary)
	if lib == "" {
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
		found, _ := filepath.Glob(filepath.Join("..", ".cache", "onnxruntime", "*", "linux-"+arch, "libonnxruntime.so.1"))
		if len(found) == 0 {
			b.Skipf("ONNX Runtime library not found: set $%s", onnxrt.EnvLibrary)
		}
		sort.Strings(found)
		lib = found[len(found)-1]
	}
	be, err := runtime.New(onnxrt.Name, runtime.Config{Settings: map[string]string{onnxrt.SettingLibrary: lib}})
	if err != nil {
		b.Fatal(err)
	}
	if err := be.Available(); err != nil {
		b.Skipf("ONNX Runtime not usable here: %v", err)
	}
	benchDemos(b, be, "onnx")
}
