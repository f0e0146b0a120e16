//go:build cgo

package onnxrt

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
)

// benchModels are the shared ONNX models worth timing: one Relu node (the
// fixed cost of a run through this backend), a small CNN and a recurrent
// model with If subgraphs, each on one of its cases.
var benchModels = []struct{ model, cases string }{
	{"onnx_node_relu", "test_data_set_0"},
	{"onnx_wonnx_opt_mnist", "digit_3"},
	{"onnx_silero_vad_16k_op15", "wav_at_80000"},
}

// BenchmarkRun times one inference per iteration at 1 and 2 intra-op
// threads and reports the latency percentiles beside ns/op:
//
//	go test -run '^$' -bench BenchmarkRun -benchtime 2000x -count 3 ./agent/runtime/onnxrt/
func BenchmarkRun(b *testing.B) {
	bk := newBackend(b, nil)
	models := runtimetest.Models(b, "onnx")
	for _, bm := range benchModels {
		i := slices.IndexFunc(models, func(m runtimetest.Model) bool { return m.Name == bm.model })
		if i < 0 {
			b.Fatalf("shared model %s is missing", bm.model)
		}
		m := models[i]
		j := slices.IndexFunc(m.Cases, func(c runtimetest.Case) bool { return c.Name == bm.cases })
		if j < 0 {
			b.Fatalf("%s has no case %s", bm.model, bm.cases)
		}
		c := m.Cases[j]
		data := m.Bytes(b)
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/threads=%d", m.Name, threads), func(b *testing.B) {
				mod, err := bk.Open(context.Background(), data, runtime.Options{Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				defer mod.Close()
				s, err := mod.NewSession()
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				out := make([]runtime.Tensor, len(mod.Outputs()))
				ctx := context.Background()
				for range 20 { // warm-up: first runs allocate ORT's arena
					if err := s.Run(ctx, c.Inputs, out); err != nil {
						b.Fatal(err)
					}
				}
				lat := make([]time.Duration, 0, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					t0 := time.Now()
					if err := s.Run(ctx, c.Inputs, out); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				reportPercentiles(b, lat)
			})
		}
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Nanoseconds()) / 1e3
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.95), "p95-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkOpen times loading a model: the cost of a model update on a
// gateway.
func BenchmarkOpen(b *testing.B) {
	bk := newBackend(b, nil)
	for _, bm := range benchModels {
		data := readShared(b, bm.model)
		b.Run(bm.model, func(b *testing.B) {
			for b.Loop() {
				m, err := bk.Open(context.Background(), data, runtime.Options{})
				if err != nil {
					b.Fatal(err)
				}
				m.Close()
			}
		})
	}
}

// BenchmarkRunRawRelu runs the one-node model through onnxruntime_go
// directly, tensors bound once, as the floor this backend's Run is compared
// with: the difference is what the wrapper costs per run.
func BenchmarkRunRawRelu(b *testing.B) {
	newBackend(b, nil)
	data := readShared(b, "onnx_node_relu")
	in, err := ort.NewTensor(ort.NewShape(3, 4, 5), make([]float32, 60))
	if err != nil {
		b.Fatal(err)
	}
	defer in.Destroy()
	out, err := ort.NewEmptyTensor[float32](ort.NewShape(3, 4, 5))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Destroy()
	so, err := ort.NewSessionOptions()
	if err != nil {
		b.Fatal(err)
	}
	defer so.Destroy()
	so.SetIntraOpNumThreads(1)
	so.SetInterOpNumThreads(1)
	so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0")
	s, err := ort.NewAdvancedSessionWithONNXData(data, []string{"x"}, []string{"y"}, []ort.Value{in}, []ort.Value{out}, so)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Destroy()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if err := s.Run(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	reportPercentiles(b, lat)
}
