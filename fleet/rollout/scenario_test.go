package rollout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// behaviors of the demo model versions the scenario rolls out: v2 and v5
// are as good as v1, v3 fails 30 % of requests, v4's p95 is three times v2's.
// They travel inside the simulated model files the registry serves.
var behaviors = map[string]simulators.Behavior{
	"1.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
	"2.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
	"3.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond, ErrorRate: 0.30},
	"4.0.0": {P50: 12 * time.Millisecond, P95: 21 * time.Millisecond},
	"5.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
}

const model = "demo-kws"

func storeOptions() store.Options { return store.Options{History: 4} }

// server is the fleet server's parts, assembled as fleetd assembles them:
// store, inventory, registry (artifacts over HTTP), embedded broker whose
// ingest is the rollout engine wrapped around the inventory, and the
// engine. restart stops and reopens everything but the registry's HTTP
// server, on the same data files and broker address.
type server struct {
	t    *testing.T
	dir  string
	addr string
	reg  *registry.Registry
	http *httptest.Server

	mu     sync.Mutex
	st     *store.Store
	inv    *inventory.Inventory
	broker *broker.Embedded
	engine *rollout.Engine
	stop   context.CancelFunc
	done   chan error
}

// Handle is the broker's handler. While the engine is down (during a
// restart) it refuses messages unacknowledged, as a stopped server would.
func (s *server) Handle(ctx context.Context, clientID, topic string, payload []byte) error {
	s.mu.Lock()
	e, inv := s.engine, s.inv
	s.mu.Unlock()
	if e == nil {
		return errors.New("server restarting")
	}
	return e.Ingest(inv).Handle(ctx, clientID, topic, payload)
}

func (s *server) Engine() *rollout.Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engine
}

func (s *server) Inventory() *inventory.Inventory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inv
}

func startServer(t *testing.T) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	var err error
	if s.reg, err = registry.Open(registry.Options{DataDir: s.dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.reg.Close() })
	s.http = httptest.NewServer(s.reg.Handler())
	t.Cleanup(s.http.Close)
	for v := range behaviors {
		publish(t, s.reg, v)
	}
	s.start()
	t.Cleanup(s.shutdown)
	return s
}

func (s *server) start() {
	t := s.t
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(filepath.Join(s.dir, "fleet.db"), storeOptions())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := inv.MarkAllOffline(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: s.addr, Handler: s,
		// The scenario's observer subscribes to every device's desired
		// topic; a device gets one message per rollout, the observer gets
		// up to a thousand at once, so it needs a deeper queue than the
		// per-client default or the broker drops to it. The queue is
		// allocated for every client (8 bytes a slot): 8,192 slots cost
		// 64 KiB per device.
		Limits: broker.Limits{MaxWritesPending: 8192, MaxInflight: 8192}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := rollout.Open(ctx, rollout.Options{
		Path: filepath.Join(s.dir, "rollout.db"), Devices: inv, Models: s.reg, Publisher: b,
		ArtifactBaseURL: s.http.URL, Tick: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.st, s.inv, s.broker, s.engine = st, inv, b, e
	s.addr = b.Addr()
	s.mu.Unlock()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	s.mu.Lock()
	s.stop, s.done = cancel, done
	s.mu.Unlock()
}

// shutdown stops the parts in fleetd's order: the engine, the broker
// (whose last wills go through the inventory), the store.
func (s *server) shutdown() {
	s.mu.Lock()
	e, stop, done, b, st, inv := s.engine, s.stop, s.done, s.broker, s.st, s.inv
	s.engine = nil
	s.mu.Unlock()
	if e == nil {
		return
	}
	stop()
	if err := <-done; err != nil {
		s.t.Errorf("engine Run: %v", err)
	}
	if err := b.Close(); err != nil {
		s.t.Errorf("broker Close: %v", err)
	}
	if err := e.Close(); err != nil {
		s.t.Errorf("engine Close: %v", err)
	}
	inv.Flush(context.Background())
	if err := st.Close(); err != nil {
		s.t.Errorf("store Close: %v", err)
	}
}

func (s *server) restart() {
	s.shutdown()
	s.start()
}

// publish puts a simulated model version in the registry: one tflite
// variant built for every profile but the Coral board's, so the Coral
// devices (5 % of the simulated fleet) are incompatible.
func publish(t testing.TB, reg *registry.Registry, ver string) {
	t.Helper()
	ctx := context.Background()
	b := behaviors[ver]
	file := simulators.ModelFile{Name: model, Version: ver, Behavior: &b}.Encode()
	ref, err := reg.Artifacts().Put(ctx, bytes.NewReader(file), registry.PutOptions{Size: int64(len(file))})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = reg.Publish(ctx, model, registry.PublishRequest{Version: ver, Variants: []registry.VariantSpec{{
		Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: ref,
		Profiles: []string{"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "x86-ipc-avx2", "generic-amd64", "generic-arm64", "generic-arm"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
}

// observer records every desired state the broker delivers, through a
// real MQTT subscription to all devices' desired topics: what went over
// the wire, independent of the server's own records.
type observer struct {
	t        *testing.T
	client   mqtt.Client
	mu       sync.Mutex
	received map[string][]*proto.DesiredDeployment
}

func observe(t *testing.T, url string) *observer {
	t.Helper()
	o := &observer{t: t, received: map[string][]*proto.DesiredDeployment{}}
	o.client = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("scenario-observer").
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(time.Second).SetCleanSession(false).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.Subscribe(proto.Subscription(proto.KindDesired), 1, o.onDesired)
		}))
	if tok := o.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	t.Cleanup(func() { o.client.Disconnect(250) })
	return o
}

func (o *observer) onDesired(_ mqtt.Client, m mqtt.Message) {
	id, _, err := proto.ParseTopic(m.Topic())
	if err != nil {
		o.t.Errorf("desired on %s: %v", m.Topic(), err)
		return
	}
	dd, err := proto.DecodeDesired(id, m.Payload())
	if err != nil {
		o.t.Errorf("desired for %s does not decode: %v", id, err)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	// Retained messages come again on every resubscription; keep each
	// generation once.
	for _, seen := range o.received[id] {
		if seen.GetGeneration() == dd.GetGeneration() {
			return
		}
	}
	o.received[id] = append(o.received[id], dd)
}

func (o *observer) versions(id string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var vs []string
	for _, dd := range o.received[id] {
		for _, m := range dd.GetModels() {
			vs = append(vs, m.GetVersion())
		}
	}
	return vs
}

func (o *observer) last(id string) (gen uint64, ver string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, dd := range o.received[id] {
		if dd.GetGeneration() >= gen {
			gen = dd.GetGeneration()
			for _, m := range dd.GetModels() {
				ver = m.GetVersion()
			}
		}
	}
	return gen, ver
}

// waitState waits until the rollout reaches want, failing on any other
// settled state or after timeout; it re-checks at the engine's tick.
func waitState(t *testing.T, s *server, id, want string, timeout time.Duration) *rollout.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last *rollout.Status
	for time.Now().Before(deadline) {
		if e := s.Engine(); e != nil {
			st, err := e.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			last = st
			if st.State == want {
				return st
			}
			if st.State != rollout.StateRunning && st.State != rollout.StateRollingBack {
				for _, d := range st.Decisions {
					t.Logf("decision %s@%d by %s: %s", d.Action, d.Phase, d.Actor, d.Reason)
					if d.Gates != nil {
						t.Logf("  phase %+v control(%s) %+v", d.Gates.Phase, d.Gates.ControlSource, d.Gates.Control)
					}
				}
				t.Fatalf("rollout %s reached %s (%s), want %s", id, st.State, st.Reason, want)
			}
		}
		<-tick.C
	}
	if last != nil {
		t.Fatalf("rollout %s not %s after %v: %s phase %d, dispatched %d, live %+v", id, want, timeout, last.State, last.Phase, last.Dispatched, last.Live)
	}
	t.Fatalf("rollout %s not %s after %v", id, want, timeout)
	return nil
}

func events(t *testing.T, e *rollout.Engine, id string) []string {
	t.Helper()
	as, err := e.Audit(context.Background(), id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, fmt.Sprintf("%s@%d", a.Event, a.Phase))
	}
	return out
}

func gateBreached(r *rollout.Report, name string) bool {
	if r == nil {
		return false
	}
	for _, g := range r.Gates {
		if g.Name == name {
			return g.Verdict == rollout.VerdictBreach
		}
	}
	return false
}
