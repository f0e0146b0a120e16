package agent_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/proto"
)

// TestInferRealModel serves a real model (from ../shared/models) through
// the built-in TFLite engine, picked by the profile like on a device, and
// checks the answers against the reference runtime and the telemetry.
func TestInferRealModel(t *testing.T) {
	var model runtimetest.Model
	for _, m := range runtimetest.Models(t, "tflite") {
		if m.Name == "tflm_hello_world_int8" {
			model = m
		}
	}
	if model.Path == "" {
		t.Skip("tflm_hello_world_int8 is not in the shared models")
	}
	b := startBroker(t)
	cfg := baseConfig(t, b)
	cfg.Backends = []agentrt.Backend{tflite.New(agentrt.Config{})}
	cfg.Models = []agent.ModelSpec{{Name: "sine", Version: "1.0.0", Path: model.Path}}
	a, _ := start(t, cfg)
	if ms := a.Models(); len(ms) != 1 || ms[0].Backend != "tflite" || ms[0].Inputs[0].DType != agentrt.Int8 {
		t.Fatalf("models %+v", ms)
	}
	n := 0
	for _, c := range model.Cases {
		out := make([]agentrt.Tensor, len(c.Want))
		if err := a.Infer(context.Background(), "sine", c.Inputs, out); err != nil {
			t.Fatalf("case %s: %v", c.Name, err)
		}
		for i := range c.Want {
			if !bytes.Equal(out[i].Data, c.Want[i].Data) {
				t.Errorf("case %s output %d: %v, %s says %v", c.Name, i, out[i].Data, c.Reference, c.Want[i].Data)
			}
		}
		n++
	}
	if n == 0 {
		t.Fatal("the model has no cases")
	}
	msgs := b.waitFor("the requests in telemetry", 10*time.Second, func(ms []received) bool {
		total := uint64(0)
		for _, w := range of[*proto.TelemetryWindow](ms, proto.KindTelemetry) {
			for _, m := range w.GetModels() {
				total += m.GetRequests()
			}
		}
		return total == uint64(n)
	})
	h := of[*proto.Hello](msgs, proto.KindHello)[0]
	if m := h.GetModels()[0]; m.GetFormat() != "tflite" || m.GetBackend() != "tflite" || m.GetSizeBytes() == 0 {
		t.Errorf("hello model %v", m)
	}
}
