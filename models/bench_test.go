package models_test

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/models"
)

// BenchmarkDemoTFLite measures one inference of each demo on the built-in
// engine, single thread, with tensors reused across runs. Compare with
// BenchmarkDemoONNXRuntime (cgo builds) in the same run: same networks,
// same int8 tensors.
func BenchmarkDemoTFLite(b *testing.B) {
	be, err := runtime.New("tflite", runtime.Config{})
	if err != nil {
		b.Fatal(err)
	}
	benchDemos(b, be, "tflite")
}

func benchDemos(b *testing.B, be runtime.Backend, format string) {
	ds, err := models.Demos()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, d := range ds {
		if d.Meta.Format != format {
			continue
		}
		b.Run(d.Meta.Version, func(b *testing.B) {
			m, err := be.Open(ctx, d.Model, runtime.Options{Threads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			in := []runtime.Tensor{{DType: runtime.Int8, Shape: d.Meta.Inputs[0].Shape, Data: d.SampleInput}}
			out := []runtime.Tensor{{Data: make([]byte, len(d.ExpectedOutput))}}
			b.ReportMetric(float64(d.Meta.MACs), "MACs/op")
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Run(ctx, in, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
