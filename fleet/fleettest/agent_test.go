package fleettest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// These tests run the real agent (package agent, with a bbolt state in a
// temporary dir and the simulated inference backend) against the real fleet
// server, over the embedded broker and over Debian's mosquitto.

const agentWait = 20 * time.Second

// cutter dials real connections and can cut them without an MQTT
// DISCONNECT, as a pulled cable or a killed process does, so the broker
// publishes the device's last will.
type cutter struct {
	mu    sync.Mutex
	conns []*cutConn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &cutConn{Conn: conn}
	c.mu.Lock()
	c.conns = append(c.conns, cc)
	c.mu.Unlock()
	return cc, nil
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.kill()
	}
	c.conns = nil
}

func hardware(t *testing.T, board string) *hw.Facts {
	t.Helper()
	f := hw.ProbeFS(os.DirFS(filepath.Join("..", "..", "agent", "hw", "testdata", board)), map[string]string{"ipc-avx2": "amd64"}[board])
	if f.Arch == "" {
		f.Arch = "arm64"
	}
	if f.Cores == 0 {
		t.Fatalf("no hardware testdata for %s", board)
	}
	return &f
}

type agentOpts struct {
	id        string
	board     string
	labels    map[string]string
	brokerURL string
	interval  time.Duration
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

// startAgent runs a real agent until the test ends; Run must return nil
// on cancel and Close must succeed.
func startAgent(t *testing.T, o agentOpts) *agent.Agent {
	t.Helper()
	backend, err := simulators.NewBackend(simulators.BackendConfig{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if o.interval == 0 {
		o.interval = 200 * time.Millisecond
	}
	a, err := agent.New(agent.Config{
		BrokerURL:         o.brokerURL,
		DeviceID:          o.id,
		Store:             statetest.OpenBolt(t, ""),
		Labels:            o.labels,
		TelemetryInterval: o.interval,
		AgentVersion:      "0.1.0-test",
		Facts:             hardware(t, o.board),
		Backends:          []agentrt.Backend{backend},
		Models: []agent.ModelSpec{{Name: "kws", Version: "1.0.0", Format: "tflite",
			Bytes: simulators.ModelFile{Name: "kws", Version: "1.0.0"}.Encode()}},
		Dial:           o.dial,
		ReconnectMin:   50 * time.Millisecond,
		ReconnectMax:   500 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 2 * time.Second,
		Logger:         fleettest.TestLogger(t, agentLogLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent %s Run: %v", o.id, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent %s did not stop within 10 s", o.id)
		}
		if err := a.Close(); err != nil {
			t.Errorf("agent %s Close: %v", o.id, err)
		}
	})
	return a
}

// helloSeen reports whether the server has the device's hello of its
// current session: presence alone comes from the status message.
func helloSeen(d store.Device) bool { return d.Online && d.Profile != "" && d.AgentVersion != "" }

func TestAgentsFillInventory(t *testing.T) {
	f := fleettest.Start(t)
	boards := []string{"pi4", "pi5", "jetson", "ipc-avx2", "coral", "unknown-arm64"}
	want := map[string]string{"pi4": "raspberry-pi-4", "pi5": "raspberry-pi-5", "jetson": "jetson-orin-nano",
		"ipc-avx2": "x86-ipc-avx2", "coral": "coral-dev-board", "unknown-arm64": "generic-arm64"}
	for i, b := range boards {
		startAgent(t, agentOpts{id: "gw-" + b, board: b, brokerURL: f.MQTTURL,
			labels: map[string]string{"site": fmt.Sprintf("plant-%d", i%2), "board": b}})
	}
	f.WaitDevices(t, inventory.Query{Status: inventory.StatusOnline}, len(boards), agentWait)
	for _, b := range boards {
		// Presence (status) may land before the hello; wait for both.
		d := f.WaitDevice(t, "gw-"+b, agentWait, helloSeen)
		b := d.Labels["board"]
		if d.Profile != want[b] {
			t.Errorf("%s: profile %q, want %q", d.ID, d.Profile, want[b])
		}
		if d.Session != 1 || d.AgentVersion != "0.1.0-test" || len(d.Backends) != 1 || d.Hardware.Cores == 0 {
			t.Errorf("%s: inventory record %+v", d.ID, d)
		}
		if m, ok := d.ActiveModel(); !ok || m.Name != "kws" || m.Version != "1.0.0" {
			t.Errorf("%s: active model %+v", d.ID, d.Models)
		}
	}
	// Telemetry flows: every device gets past its first windows.
	for _, b := range boards {
		f.WaitDevice(t, "gw-"+b, agentWait, func(d store.Device) bool { return d.LastSeq >= 2 })
	}

	// Labels filter through the HTTP API.
	var list api.DeviceList
	if code := f.GetJSON(t, "/api/v1/devices?label="+url.QueryEscape("site=plant-1"), &list); code != 200 {
		t.Fatalf("GET devices by label: %d", code)
	}
	got := map[string]bool{}
	for _, d := range list.Devices {
		got[d.ID] = true
		if d.Labels["site"] != "plant-1" || d.Status != "online" {
			t.Errorf("label filter returned %+v", d)
		}
	}
	if len(got) != 3 || !got["gw-pi5"] || !got["gw-ipc-avx2"] || !got["gw-unknown-arm64"] {
		t.Errorf("site=plant-1 gave %v, want gw-pi5, gw-ipc-avx2, gw-unknown-arm64", got)
	}
	if code := f.GetJSON(t, "/api/v1/devices?label="+url.QueryEscape("site=plant-1")+"&label="+url.QueryEscape("board=pi5"), &list); code != 200 || len(list.Devices) != 1 || list.Devices[0].ID != "gw-pi5" {
		t.Errorf("two labels: %d %+v", code, list.Devices)
	}
}

// testWillAndReturn cuts an agent's connection without DISCONNECT: the
// device turns offline through its last will, then online again with the
// next session when the agent reconnects.
func testWillAndReturn(t *testing.T, f *fleettest.Fleet, brokerURL string) {
	var c cutter
	a := startAgent(t, agentOpts{id: "gw-will", board: "pi4", brokerURL: brokerURL, dial: c.dial,
		labels: map[string]string{"site": "plant-9"}})
	f.WaitDevice(t, "gw-will", agentWait, func(d store.Device) bool { return d.Online && d.Session == 1 })
	for round := uint64(1); round <= 2; round++ {
		c.cut()
		// The agent reconnects within its backoff (≤ 500 ms), possibly
		// before the server sees the will: the device is then online
		// with the next session. Both states are observed in order
		// through the server's session rule, so wait for the newer one
		// and check the will was processed on the way.
		d := f.WaitDevice(t, "gw-will", agentWait, func(d store.Device) bool { return d.Online && d.Session == round+1 && helloSeen(d) })
		if d.Labels["site"] != "plant-9" {
			t.Errorf("after reconnect: %+v", d)
		}
	}
	s, err := a.Stats(context.Background())
	if err != nil || s.Connects != 3 {
		t.Errorf("agent stats %+v, %v", s, err)
	}
}

// testWillOffline holds the agent off the broker after the cut, so the
// device must be seen offline (only the will can tell the server), then
// lets it back.
func testWillOffline(t *testing.T, f *fleettest.Fleet, brokerURL string) {
	var (
		c    cutter
		mu   sync.Mutex
		down bool
	)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		d := down
		mu.Unlock()
		if d {
			return nil, fmt.Errorf("network down (test)")
		}
		return c.dial(ctx, network, addr)
	}
	startAgent(t, agentOpts{id: "gw-lwt", board: "pi5", brokerURL: brokerURL, dial: dial})
	f.WaitDevice(t, "gw-lwt", agentWait, func(d store.Device) bool { return d.Online && d.Session == 1 })
	mu.Lock()
	down = true
	mu.Unlock()
	c.cut()
	f.WaitDevice(t, "gw-lwt", agentWait, func(d store.Device) bool { return !d.Online })
	mu.Lock()
	down = false
	mu.Unlock()
	d := f.WaitDevice(t, "gw-lwt", agentWait, online)
	if d.Session < 2 {
		t.Errorf("back online with session %d, want a newer one than 1", d.Session)
	}
}

func TestAgentWillEmbedded(t *testing.T) {
	f := fleettest.Start(t)
	t.Run("offline", func(t *testing.T) { testWillOffline(t, f, f.MQTTURL) })
	t.Run("reconnect", func(t *testing.T) { testWillAndReturn(t, f, f.MQTTURL) })
}

func TestAgentWillMosquitto(t *testing.T) {
	m := fleettest.StartMosquitto(t)
	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL))
	t.Run("offline", func(t *testing.T) { testWillOffline(t, f, m.URL) })
	t.Run("reconnect", func(t *testing.T) { testWillAndReturn(t, f, m.URL) })
}

// TestAgentOutageMosquitto stops the external broker for a while and
// restarts it on the same port: every telemetry window the agent produced
// meanwhile (within its queue bound) reaches the server exactly once, in
// order.
func TestAgentOutageMosquitto(t *testing.T) {
	m := fleettest.StartMosquitto(t)
	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL))
	a := startAgent(t, agentOpts{id: "gw-outage", board: "jetson", brokerURL: m.URL, interval: 100 * time.Millisecond})
	f.WaitDevice(t, "gw-outage", agentWait, func(d store.Device) bool { return d.Online && d.LastSeq >= 3 })

	m.Stop()
	ctx := context.Background()
	// Let the agent notice and queue windows while the broker is away.
	deadline := time.Now().Add(agentWait)
	var s agent.Stats
	for {
		var err error
		if s, err = a.Stats(ctx); err != nil {
			t.Fatal(err)
		}
		if !s.Connected && s.Queue.Windows >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not queue windows during the outage: %+v", s)
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's own counters
	}
	m.Restart()
	produced := s.WindowsSent + uint64(s.Queue.Windows)
	f.WaitDevice(t, "gw-outage", agentWait, func(d store.Device) bool { return d.Online && d.LastSeq >= produced })

	ws, err := f.Server.Inventory().Telemetry(ctx, "gw-outage", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if w.Seq != uint64(i+1) {
			var seqs []uint64
			for _, w := range ws {
				seqs = append(seqs, w.Seq)
			}
			t.Fatalf("server history %v: want 1..%d, each once, in order", seqs, len(ws))
		}
		tw, err := proto.DecodeTelemetry("gw-outage", w.Payload)
		if err != nil {
			t.Fatalf("stored window %d: %v", w.Seq, err)
		}
		if tw.GetWindowsDropped() != 0 {
			t.Errorf("window %d reports %d dropped within the queue bound", w.Seq, tw.GetWindowsDropped())
		}
	}
	if uint64(len(ws)) < produced {
		t.Fatalf("server has %d windows, agent produced %d", len(ws), produced)
	}
	if s, _ := a.Stats(ctx); s.Connects < 2 {
		t.Errorf("agent connected %d times; the outage should have forced a reconnect", s.Connects)
	}
}

var agentLogLevel = slog.LevelWarn

// cutConn makes a cut look like the network failing (connection reset)
// rather than like the process closing its own socket, which paho takes
// as its own doing and does not report as a lost connection.
type cutConn struct {
	net.Conn
	cut atomic.Bool
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.cut.Load() {
		err = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && c.cut.Load() {
		err = &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
	}
	return n, err
}

func (c *cutConn) kill() {
	c.cut.Store(true)
	c.Conn.Close()
}
