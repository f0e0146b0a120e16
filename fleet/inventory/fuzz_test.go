package inventory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

// FuzzHandle feeds arbitrary publishes (client id, topic, payload) to the
// inventory, as a device on the broker can: it must never panic, must
// answer either success or a rejection, and must only create devices
// named by a valid topic.
func FuzzHandle(f *testing.F) {
	hello := proto.MustEncode(&proto.Hello{ProtocolVersion: 1, DeviceId: "gw-1", Session: 2, Labels: map[string]string{"a": "b"}})
	status := proto.MustEncode(&proto.Status{ProtocolVersion: 1, DeviceId: "gw-1", State: proto.Status_STATE_OFFLINE, Session: 1})
	window := proto.MustEncode(&proto.TelemetryWindow{ProtocolVersion: 1, DeviceId: "gw-1", Seq: 3, StartUnixMs: 1, EndUnixMs: 2})
	for _, s := range []struct {
		client, topic string
		payload       []byte
	}{
		{"gw-1", "edgefleet/v1/devices/gw-1/hello", hello},
		{"gw-1", "edgefleet/v1/devices/gw-1/status", status},
		{"", "edgefleet/v1/devices/gw-1/telemetry", window},
		{"gw-2", "edgefleet/v1/devices/gw-1/hello", hello},
		{"gw-1", "edgefleet/v1/devices/gw-1/desired", []byte{8, 1}},
		{"gw-1", "edgefleet/v1/devices/gw-1/jobs", []byte{8, 1, 18, 4, 103, 119, 45, 49}},
		{"", "edgefleet/v1/devices/+/hello", hello},
		{"", "edgefleet/v1/devices/gw-1/hello/x", hello},
		{"", "edgefleet/v1/devices/gw-1/telemetry", []byte{0xff, 0xff}},
		{"", "", nil},
	} {
		f.Add(s.client, s.topic, s.payload)
	}
	st := storetest.Open(f, store.Options{History: 8, MaxDevices: 1000})
	inv, err := inventory.New(context.Background(), st, inventory.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, client, topic string, payload []byte) {
		err := inv.Handle(context.Background(), client, topic, payload)
		if err != nil {
			if !errors.Is(err, inventory.ErrRejected) {
				t.Fatalf("Handle(%q, %q) = %v: neither success nor a rejection", client, topic, err)
			}
			return
		}
		id, _, perr := proto.ParseTopic(topic)
		if perr != nil {
			t.Fatalf("accepted a message on invalid topic %q", topic)
		}
		if client != "" && client != id {
			t.Fatalf("accepted %q publishing as %q", client, id)
		}
		if _, err := inv.Device(context.Background(), id); err != nil {
			t.Fatalf("accepted message from %s but the device is missing: %v", id, err)
		}
	})
}
