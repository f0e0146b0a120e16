package inventory_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newInventory(t *testing.T) (*inventory.Inventory, *clock, *syncBuffer) {
	t.Helper()
	st := storetest.Open(t, store.Options{History: 100})
	c := &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	logs := &syncBuffer{}
	inv, err := inventory.New(context.Background(), st, inventory.Options{Now: c.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return inv, c, logs
}

func hello(id string, session uint64, labels map[string]string, profile string, models ...*proto.InstalledModel) *proto.Hello {
	return &proto.Hello{
		ProtocolVersion: proto.ProtocolVersion, DeviceId: id, AgentVersion: "0.1.0", Session: session,
		FirmwareProfile: profile, Labels: labels, Models: models,
		Hardware: &proto.Hardware{Arch: "arm64", Os: "linux", Cores: 4},
		Backends: []*proto.Backend{{Name: "tflite", Available: true}},
	}
}

func status(id string, st proto.Status_State, session uint64) *proto.Status {
	return &proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, State: st, Session: session}
}

func window(id string, seq uint64) *proto.TelemetryWindow {
	return &proto.TelemetryWindow{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Seq: seq, StartUnixMs: 1, EndUnixMs: 2}
}

func publish(t *testing.T, inv *inventory.Inventory, id string, k proto.Kind, m proto.Message) {
	t.Helper()
	if err := inv.Handle(context.Background(), id, proto.Topic(id, k), proto.MustEncode(m)); err != nil {
		t.Fatalf("Handle %s from %s: %v", k, id, err)
	}
}

func device(t *testing.T, inv *inventory.Inventory, id string) store.Device {
	t.Helper()
	d, err := inv.Device(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHelloUpsertKeepsFirstSeen(t *testing.T) {
	inv, c, _ := newInventory(t)
	first := c.Now()
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 1, map[string]string{"site": "a"}, "raspberry-pi-4",
		&proto.InstalledModel{Name: "kws", Version: "1.0.0", Active: true}))
	c.Add(time.Minute)
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 2, map[string]string{"site": "b"}, "raspberry-pi-5"))
	d := device(t, inv, "gw-1")
	if !d.FirstSeen.Equal(first) || !d.LastSeen.Equal(c.Now()) {
		t.Errorf("first/last seen = %v/%v, want %v/%v", d.FirstSeen, d.LastSeen, first, c.Now())
	}
	if !d.Online || d.Session != 2 || d.Profile != "raspberry-pi-5" || d.Labels["site"] != "b" || len(d.Models) != 0 {
		t.Errorf("device after second hello = %+v", d)
	}
	if d.Hardware.Arch != "arm64" || len(d.Backends) != 1 || d.AgentVersion != "0.1.0" {
		t.Errorf("hello facts missing: %+v", d)
	}
}

func TestStaleLastWillIsIgnored(t *testing.T) {
	inv, _, _ := newInventory(t)
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 1, nil, ""))
	// The device reconnects (session 2) before the broker sends the will of
	// its first connection.
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_ONLINE, 2))
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_OFFLINE, 1))
	if d := device(t, inv, "gw-1"); !d.Online || d.Session != 2 {
		t.Fatalf("stale will took effect: online=%v session=%d", d.Online, d.Session)
	}
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_OFFLINE, 2))
	if d := device(t, inv, "gw-1"); d.Online {
		t.Fatal("current will did not take the device offline")
	}
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_ONLINE, 3))
	if d := device(t, inv, "gw-1"); !d.Online || d.Session != 3 {
		t.Fatalf("online again: %+v", d)
	}
}

func TestTelemetrySeqDedup(t *testing.T) {
	inv, c, _ := newInventory(t)
	for _, seq := range []uint64{1, 2, 3, 2, 3, 4, 1} {
		c.Add(time.Second)
		publish(t, inv, "gw-1", proto.KindTelemetry, window("gw-1", seq))
	}
	ws, err := inv.Telemetry(context.Background(), "gw-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, w := range ws {
		seqs = append(seqs, w.Seq)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4]" {
		t.Fatalf("ingested seqs %v, want [1 2 3 4]", seqs)
	}
	if inv.Duplicates() != 3 {
		t.Errorf("duplicates = %d, want 3", inv.Duplicates())
	}
	d := device(t, inv, "gw-1")
	if d.LastSeq != 4 || !d.Online || !d.LastSeen.Equal(c.Now()) {
		t.Errorf("device after telemetry = %+v", d)
	}
	if m, err := proto.DecodeTelemetry("gw-1", ws[3].Payload); err != nil || m.GetSeq() != 4 {
		t.Errorf("stored payload does not decode to seq 4: %v %v", m, err)
	}
}

func TestMalformedMessagesAreCountedAndLogged(t *testing.T) {
	inv, _, logs := newInventory(t)
	ctx := context.Background()
	cases := []struct {
		client, topic string
		payload       []byte
		reason        string
	}{
		{"gw-1", "edgefleet/v1/devices/gw-1/telemetry", []byte{0xff, 0xff, 0xff}, inventory.ReasonMalformed},
		{"gw-1", "edgefleet/v1/devices/gw-1/hello", nil, inventory.ReasonMalformed},
		{"gw-1", "edgefleet/v1/devices/gw-1/status", proto.MustEncode(status("gw-2", proto.Status_STATE_ONLINE, 1)), inventory.ReasonInvalid},
		{"gw-1", "edgefleet/v1/devices/gw-1/hello", make([]byte, proto.MaxPayloadBytes+1), inventory.ReasonTooLarge},
		{"gw-1", "edgefleet/v1/devices/gw-2/hello", proto.MustEncode(hello("gw-2", 1, nil, "")), inventory.ReasonClientID},
		{"gw-1", "edgefleet/v1/devices/gw-1/desired", []byte{1}, inventory.ReasonDirection},
		{"gw-1", "other/topic", []byte{1}, inventory.ReasonTopic},
		{"", "edgefleet/v1/devices/gw 1/hello", []byte{1}, inventory.ReasonTopic},
	}
	for _, tc := range cases {
		err := inv.Handle(ctx, tc.client, tc.topic, tc.payload)
		if !errors.Is(err, inventory.ErrRejected) || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("Handle(%s) error = %v, want a %s rejection", tc.topic, err, tc.reason)
		}
	}
	want := map[string]uint64{
		inventory.ReasonMalformed: 2, inventory.ReasonInvalid: 1, inventory.ReasonTooLarge: 1,
		inventory.ReasonClientID: 1, inventory.ReasonDirection: 1, inventory.ReasonTopic: 2,
	}
	if got := inv.Rejected(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Rejected = %v, want %v", got, want)
	}
	if !strings.Contains(logs.String(), "client_id=gw-1") || !strings.Contains(logs.String(), "topic=edgefleet/v1/devices/gw-1/telemetry") {
		t.Errorf("drop not logged with client and topic:\n%s", logs.String())
	}
	if _, err := inv.Device(ctx, "gw-2"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("a rejected hello created gw-2: %v", err)
	}
}

func TestRejectCountersPersistAcrossRestart(t *testing.T) {
	st := storetest.Open(t, store.Options{})
	ctx := context.Background()
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = inv.Handle(ctx, "", "edgefleet/v1/devices/gw-1/hello", []byte{0xff})
	if err := inv.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inv.Flush(ctx); err != nil { // nothing new: must not double count
		t.Fatal(err)
	}
	inv2, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := inv2.Rejected()[inventory.ReasonMalformed]; got != 1 {
		t.Fatalf("persisted malformed count = %d, want 1", got)
	}
}

func TestListFiltersAndPagination(t *testing.T) {
	inv, _, _ := newInventory(t)
	ctx := context.Background()
	for i := range 30 {
		id := fmt.Sprintf("gw-%02d", i)
		site := []string{"a", "b", "c"}[i%3]
		profile := "generic-amd64"
		if i%2 == 0 {
			profile = "raspberry-pi-4"
		}
		publish(t, inv, id, proto.KindHello, hello(id, 1, map[string]string{"site": site, "tier": "edge"}, profile,
			&proto.InstalledModel{Name: "kws", Version: fmt.Sprintf("1.%d.0", i%2), Active: true}))
		if i%5 == 0 {
			publish(t, inv, id, proto.KindStatus, status(id, proto.Status_STATE_OFFLINE, 1))
		}
	}
	count := func(q inventory.Query) int {
		t.Helper()
		n := 0
		for pages := 0; ; pages++ {
			p, err := inv.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			n += len(p.Devices)
			for _, d := range p.Devices {
				if !q.Match(&d) {
					t.Fatalf("%s does not match %+v", d.ID, q)
				}
			}
			if p.Next == "" {
				return n
			}
			if pages > 40 {
				t.Fatal("pagination does not end")
			}
			q.Cursor = p.Next
		}
	}
	cases := []struct {
		name string
		q    inventory.Query
		want int
	}{
		{"all", inventory.Query{}, 30},
		{"all in pages of 7", inventory.Query{Limit: 7}, 30},
		{"label", inventory.Query{Labels: map[string]string{"site": "a"}}, 10},
		{"two labels", inventory.Query{Labels: map[string]string{"site": "a", "tier": "edge"}, Limit: 3}, 10},
		{"label no match", inventory.Query{Labels: map[string]string{"site": "z"}}, 0},
		{"profile", inventory.Query{Profile: "raspberry-pi-4"}, 15},
		{"offline", inventory.Query{Status: "offline"}, 6},
		{"online", inventory.Query{Status: "online", Limit: 4}, 24},
		{"model", inventory.Query{Model: "kws"}, 30},
		{"model version", inventory.Query{Model: "kws@1.1.0"}, 15},
		{"combined", inventory.Query{Profile: "raspberry-pi-4", Status: "offline"}, 3},
	}
	for _, tc := range cases {
		if got := count(tc.q); got != tc.want {
			t.Errorf("%s: %d devices, want %d", tc.name, got, tc.want)
		}
	}
	p, err := inv.List(ctx, inventory.Query{Limit: 10})
	if err != nil || len(p.Devices) != 10 || p.Devices[0].ID != "gw-00" || p.Next == "" {
		t.Fatalf("first page: %d devices, next %q, err %v", len(p.Devices), p.Next, err)
	}
	p2, err := inv.List(ctx, inventory.Query{Limit: 10, Cursor: p.Next})
	if err != nil || p2.Devices[0].ID != "gw-10" {
		t.Fatalf("second page starts at %v, err %v", p2.Devices, err)
	}
}

func TestListRejectsBadQueries(t *testing.T) {
	inv, _, _ := newInventory(t)
	for _, q := range []inventory.Query{
		{Limit: -1}, {Limit: inventory.MaxLimit + 1}, {Status: "sleeping"}, {Cursor: "!!!"},
		{Cursor: "Zm9v"}, {Labels: map[string]string{"": "x"}},
	} {
		if _, err := inv.List(context.Background(), q); !errors.Is(err, inventory.ErrBadQuery) {
			t.Errorf("List(%+v) error = %v, want ErrBadQuery", q, err)
		}
	}
}

func TestChangedIsClosedOnChange(t *testing.T) {
	inv, _, _ := newInventory(t)
	ch := inv.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any change")
	default:
	}
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 1, nil, ""))
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed after a hello")
	}
}

func TestMarkAllOffline(t *testing.T) {
	inv, _, _ := newInventory(t)
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 1, nil, ""))
	if err := inv.MarkAllOffline(context.Background()); err != nil {
		t.Fatal(err)
	}
	if device(t, inv, "gw-1").Online {
		t.Fatal("still online")
	}
}

func TestDeviceStateResetRestartsSeq(t *testing.T) {
	inv, _, logs := newInventory(t)
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 57, nil, ""))
	for seq := uint64(1); seq <= 5; seq++ {
		publish(t, inv, "gw-1", proto.KindTelemetry, window("gw-1", seq))
	}
	// Reflashed: session and seq start from scratch.
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_ONLINE, 1))
	publish(t, inv, "gw-1", proto.KindHello, hello("gw-1", 1, nil, ""))
	publish(t, inv, "gw-1", proto.KindTelemetry, window("gw-1", 1))
	d := device(t, inv, "gw-1")
	if d.Session != 1 || d.LastSeq != 1 || inv.Duplicates() != 0 {
		t.Fatalf("after reset: session %d, last seq %d, duplicates %d; want 1, 1, 0", d.Session, d.LastSeq, inv.Duplicates())
	}
	if !strings.Contains(logs.String(), "device state was reset") {
		t.Error("reset not logged")
	}
	// Its will now counts.
	publish(t, inv, "gw-1", proto.KindStatus, status("gw-1", proto.Status_STATE_OFFLINE, 1))
	if device(t, inv, "gw-1").Online {
		t.Fatal("will of the reset device ignored")
	}
}
