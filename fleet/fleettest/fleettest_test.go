package fleettest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/fleetd"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

const wait = 10 * time.Second

// device is a bare MQTT client speaking the device protocol by hand, so
// these tests exercise the server without depending on the agent package.
type device struct {
	id      string
	session uint64
	client  paho.Client
	mu      sync.Mutex
	conn    net.Conn
	closed  sync.Once
}

// disconnect ends the session cleanly (no will). Calling it again (the
// test, then its cleanup) does nothing, so only one paho teardown runs.
func (d *device) disconnect() { d.closed.Do(func() { d.client.Disconnect(50) }) }

func connectDevice(t *testing.T, brokerURL, id string, session uint64) *device {
	t.Helper()
	d := &device{id: id, session: session}
	will := proto.MustEncode(&proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, State: proto.Status_STATE_OFFLINE, Session: session})
	opts := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5*time.Second).SetProtocolVersion(4).
		SetBinaryWill(proto.Topic(id, proto.KindStatus), will, 1, true).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			d.mu.Lock()
			d.conn = c
			d.mu.Unlock()
			return c, err
		})
	d.client = paho.NewClient(opts)
	if tok := d.client.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device %s: connect to %s: %v", id, brokerURL, tok.Error())
	}
	t.Cleanup(d.disconnect)
	return d
}

func (d *device) publish(t *testing.T, topic string, payload []byte, retain bool) {
	t.Helper()
	tok := d.client.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(wait) {
		t.Fatalf("device %s: no PUBACK for %s within %s", d.id, topic, wait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("device %s: publish %s: %v", d.id, topic, err)
	}
}

func (d *device) hello(t *testing.T, labels map[string]string) {
	t.Helper()
	d.publish(t, proto.Topic(d.id, proto.KindStatus), proto.MustEncode(&proto.Status{
		ProtocolVersion: proto.ProtocolVersion, DeviceId: d.id, State: proto.Status_STATE_ONLINE, Session: d.session}), true)
	d.publish(t, proto.Topic(d.id, proto.KindHello), proto.MustEncode(&proto.Hello{
		ProtocolVersion: proto.ProtocolVersion, DeviceId: d.id, AgentVersion: "test", Session: d.session,
		FirmwareProfile: "generic-amd64", Labels: labels,
		Hardware: &proto.Hardware{Arch: "amd64", Os: "linux", Cores: 2},
		Models:   []*proto.InstalledModel{{Name: "kws", Version: "1.0.0", Active: true}},
	}), false)
}

func (d *device) telemetry(t *testing.T, seq uint64) {
	t.Helper()
	d.publish(t, proto.Topic(d.id, proto.KindTelemetry), proto.MustEncode(&proto.TelemetryWindow{
		ProtocolVersion: proto.ProtocolVersion, DeviceId: d.id, Seq: seq, StartUnixMs: 1, EndUnixMs: 2}), false)
}

// drop closes the TCP connection without a DISCONNECT, as a device losing
// power would, so the broker sends its last will.
func (d *device) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conn.Close()
}

func online(d store.Device) bool  { return d.Online }
func offline(d store.Device) bool { return !d.Online }

func TestEmbeddedPresenceTelemetryAndAPI(t *testing.T) {
	f := fleettest.Start(t)
	d := connectDevice(t, f.MQTTURL, "gw-1", 1)
	d.hello(t, map[string]string{"site": "plant-7"})
	got := f.WaitDevice(t, "gw-1", wait, online)
	if got.Profile != "generic-amd64" || got.Labels["site"] != "plant-7" || got.Session != 1 {
		t.Fatalf("device = %+v", got)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		d.telemetry(t, seq)
	}
	// The PUBACK comes after the hook applied the message, so no wait.
	if got, _ := f.Device("gw-1"); got.LastSeq != 3 {
		t.Fatalf("LastSeq after 3 acknowledged windows = %d", got.LastSeq)
	}

	var list api.DeviceList
	if code := f.GetJSON(t, "/api/v1/devices?label=site=plant-7&status=online", &list); code != 200 || len(list.Devices) != 1 || list.Devices[0].ID != "gw-1" {
		t.Fatalf("GET devices: %d %+v", code, list)
	}
	if list.Devices[0].Status != "online" || list.Devices[0].ActiveModel != "kws@1.0.0" {
		t.Fatalf("device JSON = %+v", list.Devices[0])
	}

	d.drop()
	f.WaitDevice(t, "gw-1", wait, offline)

	d2 := connectDevice(t, f.MQTTURL, "gw-1", 2)
	d2.hello(t, nil)
	f.WaitDevice(t, "gw-1", wait, func(d store.Device) bool { return d.Online && d.Session == 2 })
}

func TestEmbeddedMalformedPayloadIsCountedAndServerKeepsServing(t *testing.T) {
	var logs syncBuffer
	f := fleettest.Start(t, fleettest.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	d := connectDevice(t, f.MQTTURL, "gw-bad", 1)
	// Acknowledged (so the device is not stuck resending it) but dropped.
	d.publish(t, proto.Topic("gw-bad", proto.KindTelemetry), []byte{0xff, 0x01, 0x02}, false)
	d.publish(t, proto.Topic("gw-other", proto.KindHello), proto.MustEncode(&proto.Hello{ProtocolVersion: 1, DeviceId: "gw-other"}), false)

	rej := f.Server.Inventory().Rejected()
	if rej[inventory.ReasonMalformed] != 1 || rej[inventory.ReasonClientID] != 1 {
		t.Fatalf("rejected = %v, want one malformed and one client_id", rej)
	}
	out := logs.String()
	if !strings.Contains(out, "dropped device message") || !strings.Contains(out, "client_id=gw-bad") ||
		!strings.Contains(out, "topic=edgefleet/v1/devices/gw-bad/telemetry") {
		t.Fatalf("drop not logged with device and topic:\n%s", out)
	}
	if _, ok := f.Device("gw-other"); ok {
		t.Fatal("a publish under another device's id created that device")
	}
	// Still serving MQTT and HTTP.
	d.hello(t, nil)
	f.WaitDevice(t, "gw-bad", wait, online)
	if code := f.GetJSON(t, "/healthz", nil); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	var st api.Stats
	if code := f.GetJSON(t, "/api/v1/stats", &st); code != 200 || st.Rejected[inventory.ReasonMalformed] != 1 ||
		st.Rejected[inventory.ReasonClientID] != 1 || st.Broker["clients_connected"] < 1 {
		t.Fatalf("stats = %d %+v", code, st)
	}
}

func TestExternalMosquitto(t *testing.T) {
	m := fleettest.StartMosquitto(t)
	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL))
	if f.MQTTURL != m.URL {
		t.Fatalf("MQTTURL = %s, want the external %s", f.MQTTURL, m.URL)
	}
	d := connectDevice(t, m.URL, "gw-ext", 1)
	d.hello(t, map[string]string{"site": "x"})
	f.WaitDevice(t, "gw-ext", wait, online)
	for seq := uint64(1); seq <= 5; seq++ {
		d.telemetry(t, seq)
	}
	f.WaitDevice(t, "gw-ext", wait, func(d store.Device) bool { return d.LastSeq == 5 })

	d.publish(t, proto.Topic("gw-ext", proto.KindTelemetry), []byte("not protobuf"), false)
	d.telemetry(t, 6) // same device, same worker: applied after the bad one
	f.WaitDevice(t, "gw-ext", wait, func(d store.Device) bool { return d.LastSeq == 6 })
	if n := f.Server.Inventory().Rejected()[inventory.ReasonMalformed]; n != 1 {
		t.Fatalf("malformed count = %d, want 1", n)
	}

	d.drop()
	f.WaitDevice(t, "gw-ext", wait, offline)

	// Broker outage. The device reconnects and publishes before the server
	// is back (its reconnect backoff is at least a second): the broker,
	// restored from its persistence file, queues those messages in the
	// server's session, so nothing is lost and the order holds.
	m.Restart()
	d2 := connectDevice(t, m.URL, "gw-ext", 2)
	d2.hello(t, map[string]string{"site": "y"})
	for seq := uint64(7); seq <= 9; seq++ {
		d2.telemetry(t, seq)
	}
	f.WaitDevice(t, "gw-ext", 30*time.Second, func(d store.Device) bool {
		return d.Online && d.Session == 2 && d.LastSeq == 9 && d.Labels["site"] == "y"
	})
	ws, err := f.Server.Inventory().Telemetry(context.Background(), "gw-ext", 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, w := range ws {
		seqs = append(seqs, w.Seq)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("ingested windows %v, want 1..9 once each in order", seqs)
	}
}

func TestExternalSharedSubscriptionsSplitTheStream(t *testing.T) {
	m := fleettest.StartMosquitto(t)
	a := fleettest.Start(t, fleettest.WithMQTTURL(m.URL), fleettest.WithShareGroup("edgefleet"))
	b := fleettest.Start(t, fleettest.WithMQTTURL(m.URL), fleettest.WithShareGroup("edgefleet"))
	d := connectDevice(t, m.URL, "gw-s", 1)
	const n = 40
	for seq := uint64(1); seq <= n; seq++ {
		d.telemetry(t, seq)
	}
	// Each window reaches exactly one of the two servers.
	seen := map[uint64]int{}
	count := func(f *fleettest.Fleet) int {
		ws, err := f.Server.Inventory().Telemetry(context.Background(), "gw-s", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			seen[w.Seq]++
		}
		return len(ws)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ca, cb := a.Server.Inventory().Changed(), b.Server.Inventory().Changed()
		clear(seen)
		na, nb := count(a), count(b)
		if na+nb >= n {
			if na+nb != n || len(seen) != n || na == 0 || nb == 0 {
				t.Fatalf("servers got %d and %d windows (%d distinct), want %d in all, split between both", na, nb, len(seen), n)
			}
			return
		}
		select {
		case <-ca:
		case <-cb:
		case <-timer.C:
			t.Fatalf("servers got %d and %d windows after %s, want %d in all", na, nb, wait, n)
		}
	}
}

func TestRestartKeepsInventoryAndMarksOffline(t *testing.T) {
	dir := t.TempDir()
	f := fleettest.Start(t, fleettest.WithDataDir(dir))
	d := connectDevice(t, f.MQTTURL, "gw-keep", 1)
	d.hello(t, nil)
	f.WaitDevice(t, "gw-keep", wait, online)
	f.Stop()

	f2 := fleettest.Start(t, fleettest.WithDataDir(dir))
	got, ok := f2.Device("gw-keep")
	if !ok || got.Online || got.Profile != "generic-amd64" {
		t.Fatalf("after restart: %+v found=%v; want it kept and offline", got, ok)
	}
}

func TestSecondServerOnSameDataDirFailsFast(t *testing.T) {
	dir := t.TempDir()
	fleettest.Start(t, fleettest.WithDataDir(dir))
	start := time.Now()
	_, err := newServerErr(dir)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on %s: err = %v, want an in-use error", dir, err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("second server took %s to fail", time.Since(start))
	}
}

func TestShutdownLeaksNoGoroutines(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { checkNoLeaks(t, "") })
	t.Run("mosquitto", func(t *testing.T) {
		m := fleettest.StartMosquitto(t) // its process-wait goroutine is counted in "before"
		checkNoLeaks(t, m.URL)
	})
}

func checkNoLeaks(t *testing.T, brokerURL string) {
	opts := []fleettest.Option{fleettest.WithLogger(slog.New(slog.DiscardHandler))}
	if brokerURL != "" {
		opts = append(opts, fleettest.WithMQTTURL(brokerURL))
	}
	// Warm up lazily started runtime and net goroutines first.
	func() {
		f := fleettest.Start(t, opts...)
		f.Stop()
	}()
	before := runtime.NumGoroutine()
	f := fleettest.Start(t, opts...)
	for i := range 5 {
		id := fmt.Sprintf("gw-%d", i)
		d := connectDevice(t, f.MQTTURL, id, 1)
		d.hello(t, nil)
		f.WaitDevice(t, id, wait, online) // through an external broker, applied after the PUBACK
		d.disconnect()
	}
	var list api.DeviceList
	f.GetJSON(t, "/api/v1/devices", &list)
	if len(list.Devices) != 5 {
		t.Fatalf("%d devices listed, want 5", len(list.Devices))
	}
	http1Idle()
	f.Stop()

	deadline := time.Now().Add(5 * time.Second)
	var after int
	for {
		after = runtime.NumGoroutine()
		if after <= before || time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
	if after > before {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("%d goroutines after shutdown, %d before:\n%s", after, before, buf[:n])
	}
}

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

func newServerErr(dir string) (*fleetd.Server, error) {
	s, err := fleetd.New(context.Background(), fleetd.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	if err == nil {
		s.Close()
	}
	return s, err
}

// http1Idle closes the test's idle keep-alive connections, whose client
// goroutines would otherwise count as leaks.
func http1Idle() { http.DefaultClient.CloseIdleConnections() }

// The documented deploy/mosquitto/edgefleet.conf must start Debian's
// mosquitto and serve the server and a device, with only the port, the
// persistence dir and the log destination changed for the test.
func TestDeployMosquittoConfig(t *testing.T) {
	text, err := os.ReadFile("../../deploy/mosquitto/edgefleet.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := fleettest.StartMosquittoWith(t, func(port int, dir string) string {
		c := strings.Replace(string(text), "listener 1883 127.0.0.1", fmt.Sprintf("listener %d 127.0.0.1", port), 1)
		c = strings.Replace(c, "persistence_location /var/lib/mosquitto/", "persistence_location "+dir+"/", 1)
		c = strings.Replace(c, "log_dest syslog", "log_dest stderr\nuser root", 1)
		if c == string(text) {
			t.Fatal("deploy config no longer has the lines this test replaces")
		}
		return c
	})
	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL))
	d := connectDevice(t, m.URL, "gw-deploy", 1)
	d.hello(t, nil)
	f.WaitDevice(t, "gw-deploy", wait, online)
}

// An open console event stream must not hold up shutdown: the server
// cancels long-lived requests before waiting for HTTP to drain.
func TestShutdownEndsEventStreams(t *testing.T) {
	var logs syncBuffer
	f := fleettest.Start(t, fleettest.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	req, err := http.NewRequest(http.MethodGet, f.HTTPURL+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 64)
	if _, err := resp.Body.Read(first); err != nil {
		t.Fatalf("no first event: %v", err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	f.Stop()
	select {
	case <-ended:
	case <-time.After(wait):
		t.Fatal("event stream still open after shutdown")
	}
	if strings.Contains(logs.String(), "http shutdown incomplete") {
		t.Fatalf("shutdown had to force-close connections:\n%s", logs.String())
	}
}
