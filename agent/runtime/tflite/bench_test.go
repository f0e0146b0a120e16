package tflite

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// BenchmarkModels runs one inference per iteration of every shared TFLite
// model, single-threaded, reusing output tensors.
func BenchmarkModels(b *testing.B) {
	for _, sm := range tfliteModels(b) {
		b.Run(sm.name, func(b *testing.B) {
			m := openShared(b, sm, litert)
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ins := readInputs(b, m, sm.dir, sm.meta.Cases[0].Inputs)
			outs := make([]runtime.Tensor, len(m.Outputs()))
			ctx := context.Background()
			if err := s.Run(ctx, ins, outs); err != nil {
				b.Fatal(err)
			}
			if ms := sm.meta.Runtimes["litertjs"].Timing.MedianMS; ms > 0 {
				b.ReportMetric(ms, "litert-ms")
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Run(ctx, ins, outs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
