package fleetd_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/proto"
)

// TestRolloutWiring checks what fleetd adds for rollouts: the registry and
// the engine share the server's broker and inventory, desired states name
// the server's artifact URL, artifacts are served, and job progress a
// device publishes reaches the engine through the broker's ingest.
func TestRolloutWiring(t *testing.T) {
	f := fleettest.Start(t)
	ctx := context.Background()
	reg, eng := f.Server.Registry(), f.Server.Rollouts()
	blob := []byte("model bytes")
	ref, err := reg.Artifacts().Put(ctx, bytes.NewReader(blob), registry.PutOptions{Size: int64(len(blob))})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Publish(ctx, "kws", registry.PublishRequest{Version: "1.0.0", Variants: []registry.VariantSpec{{Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: ref}}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Server.Inventory().ApplyHello(ctx, &proto.Hello{ProtocolVersion: proto.ProtocolVersion, DeviceId: "dev-1", AgentVersion: "0.3.0", Session: 1,
		Backends: []*proto.Backend{{Name: "tflite", Available: true, Formats: []string{"tflite"}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := eng.Create(ctx, rollout.Spec{Model: "kws", Version: "1.0.0", Devices: []string{"dev-1"}, Phases: []string{"100%"}})
	if err != nil {
		t.Fatal(err)
	}

	dev := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(f.MQTTURL).SetClientID("dev-1"))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer dev.Disconnect(250)
	desired := make(chan *proto.DesiredDeployment, 4)
	if tok := dev.Subscribe(proto.Topic("dev-1", proto.KindDesired), 1, func(_ mqtt.Client, m mqtt.Message) {
		if d, err := proto.DecodeDesired("dev-1", m.Payload()); err == nil {
			desired <- d
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	var d *proto.DesiredDeployment
	select {
	case d = <-desired: // retained, so it arrives whenever the engine sent it
	case <-time.After(15 * time.Second):
		t.Fatal("no desired state within 15 s")
	}
	dm := d.GetModels()[0]
	if d.GetGeneration() != 1 || d.GetRolloutId() != r.ID || !strings.HasPrefix(dm.GetUrl(), f.HTTPURL+"/artifacts/") {
		t.Fatalf("desired %v", d)
	}
	resp, err := http.Get(dm.GetUrl())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(blob)) {
		t.Fatalf("artifact: %s, %d bytes", resp.Status, resp.ContentLength)
	}
	jp := &proto.JobProgress{ProtocolVersion: proto.ProtocolVersion, DeviceId: "dev-1", JobId: dm.GetJobId(), Generation: 1, Model: "kws", Version: "1.0.0",
		Step: proto.JobProgress_STEP_DONE, State: proto.JobProgress_STATE_FAILED, Reason: "self-test failed"}
	if tok := dev.Publish(proto.Topic("dev-1", proto.KindJobs), 1, false, proto.MustEncode(jp)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish job: %v", tok.Error())
	}
	// The broker acknowledges a QoS 1 publish after the handler applied it.
	ts, err := eng.Targets(ctx, r.ID)
	if err != nil || ts[0].JobState != "failed" || ts[0].JobReason != "self-test failed" {
		t.Fatalf("target after the job report: %+v %v", ts, err)
	}
}
