package tflite

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// BenchmarkModels runs one inference per iteration of every shared TFLite
// model, single-threaded, reusing output tensors.
func BenchmarkModels(b *testing.B) {
	benchModels(b, litert)
}

// BenchmarkModelsReference is BenchmarkModels in the default arithmetic
// (TFLite reference kernels, double rounding).
func BenchmarkModelsReference(b *testing.B) {
	benchModels(b, runtime.Config{})
}

func benchModels(b *testing.B, cfg runtime.Config) {
	for _, sm := range tfliteModels(b) {
		b.Run(sm.name, func(b *testing.B) {
			m := openShared(b, sm, cfg)
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
			cpu0 := cpuTime()
			for b.Loop() {
				if err := s.Run(ctx, ins, outs); err != nil {
					b.Fatal(err)
				}
			}
			// The machine is shared: CPU time per run is steadier than
			// wall time when other processes compete for the cores.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
