package agent_test

import (
	"context"
	"testing"

	"github.com/edgefleet/edgefleet/agent"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/simulators"
)

// BenchmarkInferOverhead compares Agent.Infer (model lookup, session pool,
// telemetry recording) with a bare Session.Run on the same zero-latency
// simulated model, side by side in one run.
//
//	go test -run '^$' -bench InferOverhead -count 5 ./agent
func BenchmarkInferOverhead(b *testing.B) {
	backend, err := simulators.NewBackend(simulators.BackendConfig{Behaviors: map[string]simulators.Behavior{"kws@1.0.0": {}}})
	if err != nil {
		b.Fatal(err)
	}
	spec := agent.ModelSpec{Name: "kws", Version: "1.0.0", Format: "tflite", Bytes: simulators.ModelFile{Name: "kws", Version: "1.0.0"}.Encode()}
	ctx := context.Background()
	in := simulators.Input()
	b.Run("bare", func(b *testing.B) {
		m, err := backend.Open(ctx, spec.Bytes, agentrt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		s, _ := m.NewSession()
		out := []agentrt.Tensor{{}}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := s.Run(ctx, in, out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("agent", func(b *testing.B) {
		a, err := agent.New(agent.Config{BrokerURL: "tcp://127.0.0.1:1", Store: state.NewMemory(), Facts: &pi5,
			Backends: []agentrt.Backend{backend}, Models: []agent.ModelSpec{spec}})
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		out := []agentrt.Tensor{{}}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := a.Infer(ctx, "kws", in, out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
