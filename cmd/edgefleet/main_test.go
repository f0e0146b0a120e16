package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/proto"
)

func startFleet(t *testing.T) *fleettest.Fleet {
	t.Helper()
	f := fleettest.Start(t)
	ctx := context.Background()
	for i, id := range []string{"gw-a", "gw-b", "gw-c"} {
		h := &proto.Hello{ProtocolVersion: 1, DeviceId: id, Session: 1, AgentVersion: "0.1.0",
			FirmwareProfile: []string{"raspberry-pi-4", "raspberry-pi-4", "generic-amd64"}[i],
			Labels:          map[string]string{"site": []string{"north", "south", "north"}[i]},
			Hardware:        &proto.Hardware{Arch: "arm64", Os: "linux", Cores: 4, MemoryBytes: 4 << 30},
			Backends:        []*proto.Backend{{Name: "tflite", Version: "builtin", Available: true}},
			Models:          []*proto.InstalledModel{{Name: "kws", Version: "1.0.0", Format: "tflite", Active: true}}}
		if err := f.Server.Inventory().Handle(ctx, id, proto.Topic(id, proto.KindHello), proto.MustEncode(h)); err != nil {
			t.Fatal(err)
		}
	}
	st := &proto.Status{ProtocolVersion: 1, DeviceId: "gw-c", State: proto.Status_STATE_OFFLINE, Session: 1}
	if err := f.Server.Inventory().Handle(ctx, "gw-c", proto.Topic("gw-c", proto.KindStatus), proto.MustEncode(st)); err != nil {
		t.Fatal(err)
	}
	return f
}

func cli(t *testing.T, f *fleettest.Fleet, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := func(k string) string {
		if k == "EDGEFLEET_SERVER" {
			return f.HTTPURL
		}
		return ""
	}
	err := run(context.Background(), args, env, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDevicesTable(t *testing.T) {
	f := startFleet(t)
	out, _, err := cli(t, f, "devices")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "gw-a") ||
		!strings.Contains(lines[1], "online") || !strings.Contains(lines[1], "kws@1.0.0") || !strings.Contains(lines[3], "offline") {
		t.Fatalf("table:\n%s", out)
	}
	out, _, err = cli(t, f, "devices", "--label", "site=north", "--status", "online")
	if err != nil || strings.Count(out, "gw-") != 1 || !strings.Contains(out, "gw-a") {
		t.Fatalf("filtered table (%v):\n%s", err, out)
	}
	_, errOut, err := cli(t, f, "devices", "--profile", "jetson-orin-nano")
	if err != nil || !strings.Contains(errOut, "no devices match") {
		t.Fatalf("empty result: %v %q", err, errOut)
	}
}

func TestDevicesJSON(t *testing.T) {
	f := startFleet(t)
	out, _, err := cli(t, f, "devices", "--json", "--profile", "raspberry-pi-4", "--server", f.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	var ds []api.Device
	if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 2 || ds[0].ID != "gw-a" {
		t.Fatalf("JSON (%v): %s", err, out)
	}
}

func TestDevicesShow(t *testing.T) {
	f := startFleet(t)
	out, _, err := cli(t, f, "devices", "show", "gw-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"gw-b", "online (session 1)", "raspberry-pi-4", "site=south", "tflite builtin (available)", "kws@1.0.0 tflite (active)", "4096 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out, _, err = cli(t, f, "devices", "show", "--json", "gw-b")
	var d api.Device
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.ID != "gw-b" {
		t.Fatalf("show --json (%v): %s", err, out)
	}
	_, _, err = cli(t, f, "devices", "show", "gw-zz")
	if err == nil || !strings.Contains(err.Error(), `"gw-zz"`) || !api.IsNotFound(err) {
		t.Fatalf("show of a missing device: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	f := startFleet(t)
	for _, args := range [][]string{{"frobnicate"}, {"devices", "--status", "asleep"}, {"devices", "show"}, {"devices", "extra"}} {
		_, _, err := cli(t, f, args...)
		var ue usageError
		if err == nil || !errorsAs(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	if _, _, err := cli(t, f, "devices", "--label", "novalue"); err == nil || !strings.Contains(err.Error(), "key=value") {
		t.Errorf("bad label: %v", err)
	}
	if _, _, err := cli(t, f, "devices", "--server", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "http") {
		t.Errorf("bad server URL: %v", err)
	}
}

func errorsAs(err error, target *usageError) bool {
	ue, ok := err.(usageError)
	if ok {
		*target = ue
	}
	return ok
}
