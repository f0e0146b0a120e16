package agent_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/serve"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
	"github.com/edgefleet/edgefleet/models"
	"github.com/edgefleet/edgefleet/proto"
)

// TestLocalAPI serves the demo model through the agent's local inference
// API on a unix socket: answers match the model's expected output, API
// requests reach the telemetry windows the fleet gates on, and a version
// switched by the agent (as the update engine does) is what the API serves
// next.
func TestLocalAPI(t *testing.T) {
	v1, err := models.DemoModel("vibration-anomaly", "1.0.0", "tflite")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := models.DemoModel("vibration-anomaly", "2.0.0", "tflite")
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t)
	cfg := baseConfig(t, b)
	backend := tflite.New(agentrt.Config{})
	cfg.Backends = []agentrt.Backend{backend}
	cfg.Models = []agent.ModelSpec{{Name: "vibration-anomaly", Version: "1.0.0", Format: "tflite", Bytes: v1.Model}}
	sock := filepath.Join(t.TempDir(), "infer.sock")
	cfg.API = &serve.Options{Addr: "-", Socket: sock}
	a, _ := start(t, cfg)

	c := client.NewUnix(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for c.Ready(ctx) != nil {
		if ctx.Err() != nil {
			t.Fatal("the local API never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	in := []wire.Tensor{{Name: "features", DType: agentrt.Int8, Shape: []int{1, 128}, Data: v1.SampleInput}}
	const calls = 5
	for range calls {
		resp, err := c.InferBinary(ctx, "vibration-anomaly", in, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Version != "1.0.0" || !bytes.Equal(resp.Outputs[0].Data, v1.ExpectedOutput) {
			t.Fatalf("API answered %s %v, want 1.0.0 %v", resp.Version, resp.Outputs[0].Data, v1.ExpectedOutput)
		}
	}
	b.waitFor("the API's requests in telemetry", 10*time.Second, func(ms []received) bool {
		n := uint64(0)
		for _, w := range of[*proto.TelemetryWindow](ms, proto.KindTelemetry) {
			for _, m := range w.GetModels() {
				if m.GetName() == "vibration-anomaly" && m.GetVersion() == "1.0.0" {
					n += m.GetRequests()
				}
			}
		}
		return n == calls
	})

	m2, err := backend.Open(ctx, v2.Model, agentrt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := a.ServeModel("vibration-anomaly", "2.0.0", "tflite", m2)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.InferBinary(ctx, "vibration-anomaly", in, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Version != "2.0.0" || !bytes.Equal(resp.Outputs[0].Data, v2.ExpectedOutput) {
		t.Fatalf("after the switch the API answered %s %v, want 2.0.0 %v", resp.Version, resp.Outputs[0].Data, v2.ExpectedOutput)
	}
	// The API borrowed v1: it is still usable by its owner after the switch.
	s, err := old.NewSession()
	if err != nil {
		t.Fatalf("the API closed the agent's model: %v", err)
	}
	out := []agentrt.Tensor{{}}
	if err := s.Run(ctx, []agentrt.Tensor{{DType: agentrt.Int8, Shape: []int{1, 128}, Data: v1.SampleInput}}, out); err != nil {
		t.Fatalf("the API closed the agent's model: %v", err)
	}
	_ = s.Close()
	_ = old.Close()
}
