package tflite

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// sharedModels returns the directory of the shared reference models, or
// skips the test when it is absent.
func sharedModels(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("EDGEFLEET_SHARED_MODELS")
	if dir == "" {
		// The package is agent/runtime/tflite; the repo root is three up.
		dir = filepath.Join("..", "..", "..", "..", "shared", "models")
	}
	if _, err := os.Stat(dir); err != nil {
		tb.Skipf("shared models not found at %s (set EDGEFLEET_SHARED_MODELS): %v", dir, err)
	}
	return dir
}

type modelMeta struct {
	Format string `json:"format"`
	Cases  []struct {
		Name    string              `json:"name"`
		Inputs  []string            `json:"inputs"`
		Outputs map[string][]string `json:"outputs"`
	} `json:"cases"`
	Runtimes map[string]struct {
		Timing struct {
			MedianMS float64 `json:"median_ms"`
		} `json:"timing"`
	} `json:"runtimes"`
	Golden string `json:"golden_runtime"`
}

type sharedModel struct {
	name string
	dir  string
	meta modelMeta
}

func tfliteModels(tb testing.TB) []sharedModel {
	root := sharedModels(tb)
	ents, err := os.ReadDir(root)
	if err != nil {
		tb.Fatal(err)
	}
	var out []sharedModel
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(root, e.Name(), "meta.json"))
		if err != nil {
			continue
		}
		var m modelMeta
		if err := json.Unmarshal(b, &m); err != nil && m.Format == "tflite" {
			tb.Fatalf("%s: %v", e.Name(), err)
		}
		if m.Format == "tflite" {
			out = append(out, sharedModel{e.Name(), filepath.Join(root, e.Name()), m})
		}
	}
	if len(out) == 0 {
		tb.Fatalf("no TFLite models in %s", root)
	}
	return out
}

// litert configures the engine for LiteRT's arithmetic, which the golden
// outputs come from.
var litert = runtime.Config{Settings: map[string]string{"rounding": "litert"}}

func openShared(tb testing.TB, sm sharedModel, cfg runtime.Config) *Model {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(sm.dir, "model.tflite"))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := New(cfg).Open(context.Background(), data, runtime.Options{})
	if err != nil {
		tb.Fatalf("%s: Open: %v", sm.name, err)
	}
	return m.(*Model)
}

func readInputs(tb testing.TB, m *Model, dir string, files []string) []runtime.Tensor {
	tb.Helper()
	infos := m.Inputs()
	if len(files) != len(infos) {
		tb.Fatalf("case has %d inputs, model %d", len(files), len(infos))
	}
	ins := make([]runtime.Tensor, len(files))
	for i, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			tb.Fatal(err)
		}
		ins[i] = runtime.Tensor{DType: infos[i].DType, Shape: infos[i].Shape, Data: b}
	}
	return ins
}

// TestSharedModels runs every TFLite case in ../shared/models: int8
// outputs must equal the golden runtime's byte for byte, uint8 ones may
// differ by a step or two (the largest difference is logged), float ones
// must agree within 1e-5 relative.
func TestSharedModels(t *testing.T) {
	for _, sm := range tfliteModels(t) {
		t.Run(sm.name, func(t *testing.T) {
			m := openShared(t, sm, litert)
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			golden := sm.meta.Golden
			if golden == "" {
				golden = "litertjs"
			}
			if len(sm.meta.Cases) == 0 {
				t.Fatal("model has no cases")
			}
			for _, cs := range sm.meta.Cases {
				ins := readInputs(t, m, sm.dir, cs.Inputs)
				outs := make([]runtime.Tensor, len(m.Outputs()))
				if err := s.Run(context.Background(), ins, outs); err != nil {
					t.Fatalf("case %s: %v", cs.Name, err)
				}
				files := cs.Outputs[golden]
				if len(files) != len(outs) {
					t.Fatalf("case %s: %d golden outputs for %d model outputs", cs.Name, len(files), len(outs))
				}
				for i, f := range files {
					want, err := os.ReadFile(filepath.Join(sm.dir, f))
					if err != nil {
						t.Fatal(err)
					}
					compareOutput(t, cs.Name+"/"+f, outs[i], want)
				}
			}
		})
	}
}

func compareOutput(t *testing.T, what string, got runtime.Tensor, want []byte) {
	t.Helper()
	if len(got.Data) != len(want) {
		t.Fatalf("%s: got %d bytes, want %d", what, len(got.Data), len(want))
	}
	switch got.DType {
	case runtime.Int8:
		diffs, maxd := 0, 0
		for i := range want {
			if d := abs(int(int8(got.Data[i])) - int(int8(want[i]))); d > 0 {
				diffs++
				maxd = max(maxd, d)
			}
		}
		if diffs > 0 {
			t.Errorf("%s: %d of %d int8 values differ, largest by %d", what, diffs, len(want), maxd)
		}
	case runtime.Uint8:
		diffs, maxd := 0, 0
		for i := range want {
			if d := abs(int(got.Data[i]) - int(want[i])); d > 0 {
				diffs++
				maxd = max(maxd, d)
			}
		}
		t.Logf("%s: uint8: %d of %d values differ, largest difference %d", what, diffs, len(want), maxd)
		if maxd > 2 {
			t.Errorf("%s: uint8 difference %d exceeds 2", what, maxd)
		}
	case runtime.Float32:
		g, w := asF32(got.Data), asF32(want)
		for i := range w {
			if d := math.Abs(float64(g[i] - w[i])); d > 1e-6 && d > 1e-5*math.Abs(float64(w[i])) {
				t.Errorf("%s: element %d is %v, want %v", what, i, g[i], w[i])
				return
			}
		}
	default:
		if string(got.Data) != string(want) {
			t.Errorf("%s: %s output differs", what, got.DType)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
