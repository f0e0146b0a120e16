package update_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

// TestWithFleetServer runs the contract between both sides for real: the
// fleet server (registry, signing key, rollout engine, embedded broker)
// publishes desired states, and the agent with the real TFLite engine
// verifies the server's signature, downloads from its /artifacts/
// endpoint, fetches the self-test tensors next to the artifact, and
// reports. A good version converges; a version that fails its self-test
// is refused on the device and the rollout rolls back.
func TestWithFleetServer(t *testing.T) {
	fl := fleettest.Start(t)
	reg := fl.Server.Registry()
	ctx := context.Background()
	const name = "vibration-anomaly"
	put := func(b []byte) proto.ArtifactRef {
		ref, err := reg.Artifacts().Put(ctx, bytes.NewReader(b), registry.PutOptions{Size: int64(len(b))})
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		p := name + "-" + v
		_, _, err := reg.Publish(ctx, name, registry.PublishRequest{Version: v, Variants: []registry.VariantSpec{{
			Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: put(demoFile(t, p+".tflite")),
			SelfTest: &proto.SelfTest{Inputs: []proto.ArtifactRef{put(demoFile(t, p+".input.bin"))}, ExpectedOutputs: []proto.ArtifactRef{put(demoFile(t, p+".expected.bin"))}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	tfl, err := agentrt.New("tflite", agentrt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const id = "gw-fleet-e2e"
	a, _ := runAgent(t, agent.Config{BrokerURL: fl.MQTTURL, DeviceID: id, Store: statetest.OpenBolt(t, ""), UpdateDir: t.TempDir(),
		TelemetryInterval: time.Hour, Facts: &pi5, AgentVersion: "0.3.0",
		Backends: []agentrt.Backend{tfl}, Models: []agent.ModelSpec{{Name: name, Version: "1.0.0", Format: "tflite", Bytes: demoFile(t, name+"-1.0.0.tflite")}},
		FleetKey: reg.PublicKey(), Health: defaultTestHealth, ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second})
	fl.WaitDevice(t, id, jobTimeout, func(d store.Device) bool { return d.Online && len(d.Backends) > 0 })

	engine := fl.Server.Rollouts()
	start := func(version string) string {
		t.Helper()
		r, err := engine.Create(ctx, rollout.Spec{Model: name, Version: version, Devices: []string{id}, Phases: []string{"100%"},
			Bake: rollout.Duration(time.Second), Holdback: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	// The engine has no change notification; poll its view, bounded.
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.NewTimer(jobTimeout)
		defer deadline.Stop()
		for !ok() {
			select {
			case <-tick.C:
			case <-deadline.C:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	target := func(rid string) rollout.Target {
		tg, err := engine.Targets(ctx, rid)
		if err != nil || len(tg) != 1 {
			t.Fatalf("targets of %s: %v %v", rid, tg, err)
		}
		return tg[0]
	}

	r2 := start("2.0.0")
	waitFor("2.0.0 to succeed on the device", func() bool { return target(r2).JobState == "succeeded" })
	if v := servedVersion(t, a, name); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}
	if _, err := engine.Act(ctx, r2, "abort", "the next version is tested alone"); err != nil {
		t.Fatal(err)
	}

	r3 := start("3.0.0")
	waitFor("the 3.0.0 rollout to roll back", func() bool {
		st, err := engine.Get(ctx, r3)
		return err == nil && st.State == rollout.StateRolledBack && target(r3).JobState == "succeeded"
	})
	if v := servedVersion(t, a, name); v != "2.0.0" {
		t.Fatalf("serving %s after 3.0.0 failed its self-test, want 2.0.0", v)
	}
	tg := target(r3)
	if !tg.RolledBack || tg.PreviousVersion != "2.0.0" {
		t.Errorf("3.0.0 target %+v: want rolled back to 2.0.0", tg)
	}
}
