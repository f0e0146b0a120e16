package serve

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

// repoFile returns the path of a file of this repository, found from the
// working directory upwards.
func repoFile(t testing.TB, rel string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the working directory to find %s from", rel)
		}
		dir = parent
	}
}

// demo is one generated demo model with its input and expected output.
type demo struct {
	version       string
	model         runtime.Model
	input, expect []byte
}

func openDemo(t testing.TB, version string) demo {
	t.Helper()
	base := repoFile(t, filepath.Join("models", "demo", "vibration-anomaly-"+version))
	read := func(ext string) []byte {
		b, err := os.ReadFile(base + ext)
		if err != nil {
			t.Fatalf("demo model: %v (regenerate with go run ./models/cmd/gen -out models/demo)", err)
		}
		return b
	}
	m, err := tflite.New(runtime.Config{}).Open(context.Background(), read(".tflite"), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return demo{version: version, model: m, input: read(".input.bin"), expect: read(".expected.bin")}
}

// bareRun runs one input on a fresh session of m: the reference the API's
// answers must equal.
func bareRun(t testing.TB, m runtime.Model, in runtime.Tensor) []byte {
	t.Helper()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outs := make([]runtime.Tensor, len(m.Outputs()))
	if err := s.Run(context.Background(), []runtime.Tensor{in}, outs); err != nil {
		t.Fatal(err)
	}
	return outs[0].Data
}

// TestDemoModel serves the vibration-anomaly demo model on the built-in
// TFLite engine: answers over both forms equal the generator's expected
// output, and a switch to 2.0.0 under load fails no request.
func TestDemoModel(t *testing.T) {
	v1, v2 := openDemo(t, "1.0.0"), openDemo(t, "2.0.0")
	st := start(t, Options{Workers: 1, QueueSize: 128, MaxBatch: 8, DefaultDeadline: 10 * time.Second})
	if err := st.Swap("vibration-anomaly", v1.version, v1.model); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec, err := st.Client.Model(ctx, "vibration-anomaly")
	if err != nil {
		t.Fatal(err)
	}
	if spec.MaxBatch != 1 || spec.Inputs[0].Name != "features" || spec.Inputs[0].Quantization == nil {
		t.Errorf("spec %+v: a fixed batch of 1 must be served by a session pool (max_batch 1)", spec)
	}
	in := []wire.Tensor{{Name: "features", DType: runtime.Int8, Shape: []int{1, 128}, Data: v1.input}}
	for _, infer := range []func(context.Context, string, []wire.Tensor, client.Options) (*client.Response, error){st.Client.Infer, st.Client.InferBinary} {
		res, err := infer(ctx, "vibration-anomaly", in, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Outputs[0].Data, v1.expect) || res.Version != "1.0.0" {
			t.Errorf("%s answered %v, want the expected %v", res.Version, res.Outputs[0].Data, v1.expect)
		}
	}
	// What each version answers to v1's input, run bare.
	want := map[string][]byte{
		"1.0.0": v1.expect,
		"2.0.0": bareRun(t, v2.model, runtime.Tensor{DType: runtime.Int8, Shape: []int{1, 128}, Data: v1.input}),
	}
	var (
		wg           sync.WaitGroup
		answered     atomic.Int64
		failed       atomic.Int64
		swapped      = make(chan struct{})
		afterSwapped atomic.Int64
	)
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-swapped:
					if afterSwapped.Add(1) > 200 {
						return
					}
				default:
				}
				infer := st.Client.Infer
				if (c+i)%2 == 0 {
					infer = st.Client.InferBinary
				}
				res, err := infer(ctx, "vibration-anomaly", in, client.Options{})
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed across the switch: %v", err)
					return
				}
				if !bytes.Equal(res.Outputs[0].Data, want[res.Version]) {
					t.Errorf("version %s answered %v, want %v", res.Version, res.Outputs[0].Data, want[res.Version])
				}
				answered.Add(1)
			}
		}()
	}
	for answered.Load() < 200 && failed.Load() == 0 {
		goruntime.Gosched()
	}
	if err := st.Swap("vibration-anomaly", v2.version, v2.model); err != nil {
		t.Fatal(err)
	}
	close(swapped)
	wg.Wait()
	if n := metricSum(t, st.Server, "edgefleet_serve_successes_total", map[string]string{"model": "vibration-anomaly", "version": "2.0.0"}); n == 0 {
		t.Error("no request was served by 2.0.0 after the switch")
	}
	if n := metricSum(t, st.Server, "edgefleet_serve_errors_total", nil); n != 0 {
		t.Errorf("%v errors across the switch", n)
	}
	t.Logf("%d requests answered, %d after the switch", answered.Load(), afterSwapped.Load())
}

// TestPersonDetect serves tflm_person_detect_int8 from the shared models:
// every concurrent answer through the API equals the bare engine run and
// LiteRT's reference output.
func TestPersonDetect(t *testing.T) {
	var sm *runtimetest.Model
	for _, m := range runtimetest.Models(t, "tflite") {
		if m.Name == "tflm_person_detect_int8" {
			sm = &m
		}
	}
	if sm == nil {
		t.Skip("tflm_person_detect_int8 is not among the shared models")
	}
	// LiteRT's arithmetic, so outputs can be compared with litertjs'.
	m, err := tflite.New(runtime.Config{Settings: map[string]string{"rounding": "litert"}}).Open(context.Background(), sm.Bytes(t), runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := start(t, Options{Workers: 2, QueueSize: 64, MaxBatch: 4, DefaultDeadline: 30 * time.Second})
	if err := st.Swap("person", "1", m); err != nil {
		t.Fatal(err)
	}
	info := m.Inputs()[0]
	var wg sync.WaitGroup
	for _, cs := range sm.Cases {
		bare := bareRun(t, m, cs.Inputs[0])
		if cs.Reference == "litertjs" && !bytes.Equal(bare, cs.Want[0].Data) {
			t.Fatalf("case %s: the engine itself differs from litertjs; nothing to check the API against", cs.Name)
		}
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := []wire.Tensor{{Name: info.Name, DType: cs.Inputs[0].DType, Shape: cs.Inputs[0].Shape, Data: cs.Inputs[0].Data}}
				infer := st.Client.InferBinary
				if i == 0 {
					infer = st.Client.Infer
				}
				res, err := infer(context.Background(), "person", in, client.Options{})
				if err != nil {
					t.Errorf("case %s: %v", cs.Name, err)
					return
				}
				if !bytes.Equal(res.Outputs[0].Data, bare) {
					t.Errorf("case %s: API answered %v, bare run %v", cs.Name, res.Outputs[0].Data, bare)
				}
			}()
		}
	}
	wg.Wait()
	if len(sm.Cases) == 0 {
		t.Fatal("no cases")
	}
	t.Logf("%d cases × 3 concurrent requests matched", len(sm.Cases))
}
