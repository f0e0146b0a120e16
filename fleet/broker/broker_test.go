package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

const wait = 10 * time.Second

func newEmbedded(t testing.TB, limits broker.Limits) (*broker.Embedded, *inventory.Inventory) {
	t.Helper()
	inv, err := inventory.New(context.Background(), storetest.Open(t, store.Options{}), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: inv, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); !errors.Is(err, broker.ErrNotReady) {
		t.Fatalf("Ready before Start = %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return b, inv
}

func connect(t testing.TB, url, id string, opts ...func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func TestInlinePublishReachesDevice(t *testing.T) {
	b, _ := newEmbedded(t, broker.Limits{})
	got := make(chan []byte, 1)
	c := connect(t, b.URL(), "gw-1")
	tok := c.Subscribe(proto.Topic("gw-1", proto.KindDesired), 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	payload := proto.MustEncode(&proto.DesiredDeployment{ProtocolVersion: 1, DeviceId: "gw-1", Generation: 7})
	if err := b.Publish(context.Background(), proto.Topic("gw-1", proto.KindDesired), payload, true); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		d, err := proto.DecodeDesired("gw-1", p)
		if err != nil || d.GetGeneration() != 7 {
			t.Fatalf("device got %v, %v", d, err)
		}
	case <-time.After(wait):
		t.Fatal("device did not receive the desired state")
	}
	// Retained: a device that subscribes later gets it too.
	late := make(chan []byte, 1)
	c2 := connect(t, b.URL(), "gw-1-late")
	c2.Subscribe(proto.Topic("gw-1", proto.KindDesired), 1, func(_ paho.Client, m paho.Message) { late <- m.Payload() }).WaitTimeout(wait)
	select {
	case <-late:
	case <-time.After(wait):
		t.Fatal("retained desired state not delivered to a later subscriber")
	}
}

func TestOversizedPacketIsRefused(t *testing.T) {
	b, inv := newEmbedded(t, broker.Limits{MaxPacketBytes: 4 << 10}) // the other limits stay at their defaults
	lost := make(chan error, 1)
	c := connect(t, b.URL(), "gw-big", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	c.Publish(proto.Topic("gw-big", proto.KindHello), 1, false, make([]byte, 8<<10))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("broker kept a client that sent a packet over MaxPacketBytes")
	}
	if _, err := inv.Device(context.Background(), "gw-big"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("oversized hello reached the inventory: %v", err)
	}
	// The broker still serves others.
	connect(t, b.URL(), "gw-small").Publish(proto.Topic("gw-small", proto.KindHello), 1, false,
		proto.MustEncode(&proto.Hello{ProtocolVersion: 1, DeviceId: "gw-small"})).WaitTimeout(wait)
	if _, err := inv.Device(context.Background(), "gw-small"); err != nil {
		t.Fatalf("after the oversized packet: %v", err)
	}
}

func TestLastWillUnderAnotherIDIsRefused(t *testing.T) {
	b, inv := newEmbedded(t, broker.Limits{})
	ctx := context.Background()
	victim := connect(t, b.URL(), "gw-victim")
	victim.Publish(proto.Topic("gw-victim", proto.KindHello), 1, false,
		proto.MustEncode(&proto.Hello{ProtocolVersion: 1, DeviceId: "gw-victim", Session: 1})).WaitTimeout(wait)

	// An attacker tries to register a will claiming gw-victim went offline.
	will := proto.MustEncode(&proto.Status{ProtocolVersion: 1, DeviceId: "gw-victim", State: proto.Status_STATE_OFFLINE, Session: 9})
	attacker := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("gw-attacker").
		SetAutoReconnect(false).SetProtocolVersion(4).SetConnectTimeout(5*time.Second).
		SetBinaryWill(proto.Topic("gw-victim", proto.KindStatus), will, 1, true))
	tok := attacker.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("no answer to CONNECT")
	}
	if tok.Error() == nil {
		attacker.Disconnect(50)
		t.Fatal("a connection with a will on another device's topic was accepted")
	}
	if n := b.Stats()["connects_refused"]; n != 1 {
		t.Fatalf("connects_refused = %d, want 1", n)
	}
	// A will on the client's own status topic is fine.
	own := proto.MustEncode(&proto.Status{ProtocolVersion: 1, DeviceId: "gw-good", State: proto.Status_STATE_OFFLINE, Session: 1})
	connect(t, b.URL(), "gw-good", func(o *paho.ClientOptions) {
		o.SetBinaryWill(proto.Topic("gw-good", proto.KindStatus), own, 1, true)
	})
	d, err := inv.Device(ctx, "gw-victim")
	if err != nil || !d.Online || d.Session != 1 {
		t.Fatalf("victim: %+v %v", d, err)
	}
}

func TestCloseIsIdempotentAndStopsPublishing(t *testing.T) {
	b, _ := newEmbedded(t, broker.Limits{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), "edgefleet/v1/devices/a/desired", []byte{1}, false); !errors.Is(err, broker.ErrNotReady) {
		t.Fatalf("Publish after Close = %v", err)
	}
	if err := b.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestExternalOptionsAreChecked(t *testing.T) {
	inv, err := inventory.New(context.Background(), storetest.Open(t, store.Options{}), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"", "127.0.0.1:1883", "http://127.0.0.1:1883", "tcp://127.0.0.1", "tcp://:1883", "::"} {
		_, err := broker.NewExternal(broker.ExternalOptions{URL: u, Handler: inv})
		if !errors.Is(err, broker.ErrBadURL) || !strings.Contains(err.Error(), "tcp://") {
			t.Errorf("URL %q: err = %v, want ErrBadURL with an example", u, err)
		}
	}
	if _, err := broker.NewExternal(broker.ExternalOptions{URL: "tcp://127.0.0.1:1883"}); err == nil {
		t.Error("no handler accepted")
	}
}

func TestExternalPublishAndReady(t *testing.T) {
	m := fleettest.StartMosquitto(t)
	inv, err := inventory.New(context.Background(), storetest.Open(t, store.Options{}), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x, err := broker.NewExternal(broker.ExternalOptions{URL: m.URL, ClientID: "edgefleet-server:test", Handler: inv})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Publish(context.Background(), "edgefleet/v1/devices/a/desired", []byte{1}, false); !errors.Is(err, broker.ErrNotReady) {
		t.Fatalf("Publish before Start = %v", err)
	}
	if err := x.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	deadline := time.Now().Add(wait)
	for x.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after %s: %v", wait, x.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := make(chan []byte, 1)
	c := connect(t, m.URL, "gw-x")
	c.Subscribe(proto.Topic("gw-x", proto.KindCommand), 1, func(_ paho.Client, msg paho.Message) { got <- msg.Payload() }).WaitTimeout(wait)
	if err := x.Publish(context.Background(), proto.Topic("gw-x", proto.KindCommand), []byte("ping"), false); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if string(p) != "ping" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(wait):
		t.Fatal("device did not get the command")
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x.Ready() == nil {
		t.Fatal("ready after Close")
	}
}

func TestPublishesArePacedNotDropped(t *testing.T) {
	limits := broker.DefaultLimits()
	limits.PublishRate, limits.PublishBurst = 40, 5 // slower than the store, so the pacing shows
	b, inv := newEmbedded(t, limits)
	c := connect(t, b.URL(), "gw-fast")
	const n = 30
	var toks []paho.Token
	for seq := uint64(1); seq <= n; seq++ {
		p := proto.MustEncode(&proto.TelemetryWindow{ProtocolVersion: 1, DeviceId: "gw-fast", Seq: seq, StartUnixMs: 1, EndUnixMs: 2})
		toks = append(toks, c.Publish(proto.Topic("gw-fast", proto.KindTelemetry), 0, false, p))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	// QoS 0 has no acknowledgement: wait (bounded) for the last window.
	deadline := time.Now().Add(wait)
	for {
		d, err := inv.Device(context.Background(), "gw-fast")
		if err == nil && d.LastSeq == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %+v %v", wait, d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ws, err := inv.Telemetry(context.Background(), "gw-fast", 0)
	if err != nil || len(ws) != n {
		t.Fatalf("%d windows stored, want all %d: %v", len(ws), n, err)
	}
	if paced := b.Stats()["publishes_paced"]; paced == 0 {
		t.Fatalf("a burst of %d over a bucket of 5 was never paced", n)
	}
}
