package rollout_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent/telemetry"
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
var behaviors = map[string]simulators.Behavior{
	"1.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
	"2.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
	"3.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond, ErrorRate: 0.30},
	"4.0.0": {P50: 12 * time.Millisecond, P95: 21 * time.Millisecond},
	"5.0.0": {P50: 4 * time.Millisecond, P95: 7 * time.Millisecond},
}

const model = "demo-kws"

// server is the fleet server's parts the scenario needs, assembled as
// fleetd does: store, inventory, registry, embedded broker whose ingest is
// the rollout engine wrapped around the inventory, and the engine.
type server struct {
	t      *testing.T
	dir    string
	st     *store.Store
	inv    *inventory.Inventory
	reg    *registry.Registry
	broker *broker.Embedded
	http   *httptest.Server

	mu     sync.Mutex
	engine *rollout.Engine
	stop   context.CancelFunc
	done   chan error
}

func (s *server) Handle(ctx context.Context, clientID, topic string, payload []byte) error {
	s.mu.Lock()
	e := s.engine
	s.mu.Unlock()
	if e == nil {
		return s.inv.Handle(ctx, clientID, topic, payload)
	}
	return e.Ingest(s.inv).Handle(ctx, clientID, topic, payload)
}

func (s *server) Engine() *rollout.Engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.engine
}

func startServer(t *testing.T) *server {
	t.Helper()
	ctx := context.Background()
	s := &server{t: t, dir: t.TempDir()}
	var err error
	s.st, err = store.Open(filepath.Join(s.dir, "fleet.db"), store.Options{History: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.st.Close() })
	if s.inv, err = inventory.New(ctx, s.st, inventory.Options{}); err != nil {
		t.Fatal(err)
	}
	if s.reg, err = registry.Open(registry.Options{DataDir: s.dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.reg.Close() })
	s.http = httptest.NewServer(s.reg.Handler())
	t.Cleanup(s.http.Close)
	for v := range behaviors {
		publish(t, s.reg, v)
	}
	s.broker, err = broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: s,
		// The scenario's observer subscribes to every device's desired
		// topic; a real subscriber gets one message per rollout, this one
		// gets them all at once, so it needs a deeper queue than the
		// per-client default or the broker drops to it.
		Limits: broker.Limits{MaxWritesPending: 1 << 20, MaxInflight: 65535}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.broker.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.broker.Close() })
	s.startEngine()
	t.Cleanup(s.stopEngine)
	return s
}

func (s *server) startEngine() {
	s.t.Helper()
	e, err := rollout.Open(context.Background(), rollout.Options{
		Path: filepath.Join(s.dir, "rollout.db"), Devices: s.inv, Models: s.reg, Publisher: s.broker,
		ArtifactBaseURL: s.http.URL, Tick: 100 * time.Millisecond,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	s.mu.Lock()
	s.engine, s.stop, s.done = e, cancel, done
	s.mu.Unlock()
}

// stopEngine stops and closes the engine as a server shutdown does.
func (s *server) stopEngine() {
	s.mu.Lock()
	e, stop, done := s.engine, s.stop, s.done
	s.engine = nil
	s.mu.Unlock()
	if e == nil {
		return
	}
	stop()
	if err := <-done; err != nil {
		s.t.Errorf("engine Run: %v", err)
	}
	if err := e.Close(); err != nil {
		s.t.Errorf("engine Close: %v", err)
	}
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

// devices stands in for agent/update on every simulated device, which is
// not in the tree yet: it watches desired states on the wire (a real MQTT
// subscription to the broker), records every one each device received,
// reports the job as a device would, switches the device's serving
// version, and produces the device's telemetry windows for that version
// from the version's simulated behaviour.
type devices struct {
	s        *server
	mu       sync.Mutex
	received map[string][]*proto.DesiredDeployment // device → desired states, in order
	serving  map[string]string
	applied  map[string]uint64 // generation applied
	changed  chan struct{}
	work     chan *proto.DesiredDeployment
}

func newDevices(s *server, ids []string) *devices {
	d := &devices{s: s, received: map[string][]*proto.DesiredDeployment{}, serving: map[string]string{}, applied: map[string]uint64{}, changed: make(chan struct{}),
		work: make(chan *proto.DesiredDeployment, 100_000)}
	for _, id := range ids {
		d.serving[id] = "1.0.0"
	}
	return d
}

func (d *devices) onDesired(_ mqtt.Client, m mqtt.Message) {
	id, _, err := proto.ParseTopic(m.Topic())
	if err != nil {
		d.s.t.Errorf("desired on %s: %v", m.Topic(), err)
		return
	}
	dd, err := proto.DecodeDesired(id, m.Payload())
	if err != nil {
		d.s.t.Errorf("desired for %s does not decode: %v", id, err)
		return
	}
	for _, dm := range dd.GetModels() {
		if _, err := proto.VerifyManifest(d.s.reg.PublicKey(), dm.GetManifest(), dm.GetSignature()); err != nil {
			d.s.t.Errorf("desired for %s: manifest: %v", id, err)
		}
	}
	d.mu.Lock()
	d.received[id] = append(d.received[id], dd)
	d.mu.Unlock()
	d.work <- dd
}

// apply works through received desired states, as many devices do at
// once; the MQTT callback only queues them, so the subscription keeps up.
func (d *devices) apply(ctx context.Context) {
	for {
		var dd *proto.DesiredDeployment
		select {
		case <-ctx.Done():
			return
		case dd = <-d.work:
		}
		d.applyOne(ctx, dd)
	}
}

func (d *devices) applyOne(ctx context.Context, dd *proto.DesiredDeployment) {
	id := dd.GetDeviceId()
	d.mu.Lock()
	stale := dd.GetGeneration() <= d.applied[id]
	d.mu.Unlock()
	if stale {
		return
	}
	for _, dm := range dd.GetModels() {
		if dm.GetName() != model {
			continue
		}
		for _, step := range []proto.JobProgress_Step{proto.JobProgress_STEP_DOWNLOADING, proto.JobProgress_STEP_DONE} {
			jp := &proto.JobProgress{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, JobId: dm.GetJobId(), Generation: dd.GetGeneration(),
				Model: model, Version: dm.GetVersion(), Step: step, State: proto.JobProgress_STATE_IN_PROGRESS}
			if step == proto.JobProgress_STEP_DONE {
				jp.State = proto.JobProgress_STATE_SUCCEEDED
			}
			if err := d.s.Handle(ctx, "", proto.Topic(id, proto.KindJobs), proto.MustEncode(jp)); err != nil {
				d.s.t.Errorf("job progress of %s: %v", id, err)
			}
		}
		d.mu.Lock()
		if dd.GetGeneration() > d.applied[id] {
			d.serving[id] = dm.GetVersion()
			d.applied[id] = dd.GetGeneration()
		}
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

// telemetry sends one window per device every period until ctx is done.
func (d *devices) telemetry(ctx context.Context, period time.Duration, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	tick := time.NewTicker(period)
	defer tick.Stop()
	seq := uint64(1) << 40 // above any seq the real agents send
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.mu.Lock()
		snap := make(map[string]string, len(d.serving))
		for k, v := range d.serving {
			snap[k] = v
		}
		d.mu.Unlock()
		seq++
		ids := make([]string, 0, len(snap))
		for id := range snap {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			e := d.s.Engine()
			if e == nil {
				continue
			}
			e.HandleTelemetry(window(r, id, seq, snap[id]))
		}
	}
}

// window simulates 20 requests of a version: log-normal latencies with the
// version's p50 and p95, errors at its rate.
func window(r *rand.Rand, id string, seq uint64, ver string) *proto.TelemetryWindow {
	b := behaviors[ver]
	var h telemetry.Histogram
	var errs uint64
	sigma := math.Log(float64(b.P95)/float64(b.P50)) / 1.6448536269514722
	const n = 20
	for range n {
		h.Observe(time.Duration(float64(b.P50) * math.Exp(sigma*r.NormFloat64())))
		if r.Float64() < b.ErrorRate {
			errs++
		}
	}
	return &proto.TelemetryWindow{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Seq: seq, Models: []*proto.ModelStats{{
		Name: model, Version: ver, Requests: n, Errors: errs, Latency: h.Proto(), P95Ms: h.Quantile(0.95),
	}}}
}

func (d *devices) versionsReceived(id string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var vs []string
	for _, dd := range d.received[id] {
		for _, m := range dd.GetModels() {
			vs = append(vs, m.GetVersion())
		}
	}
	return vs
}

func (d *devices) lastReceived(id string) (gen uint64, ver string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dd := range d.received[id] {
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
// terminal state or after timeout. It re-checks on every engine tick.
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
			if st.State != rollout.StateRunning && st.State != rollout.StateRollingBack && st.State != want {
				t.Fatalf("rollout %s reached %s (%s), want %s", id, st.State, st.Reason, want)
			}
		}
		<-tick.C
	}
	t.Fatalf("rollout %s not %s after %v; last status: %+v", id, want, timeout, last)
	return nil
}

// waitApplied waits until every listed device serves ver per the stand-in.
func (d *devices) waitApplied(t *testing.T, ids []string, ver string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		missing := 0
		for _, id := range ids {
			if d.serving[id] != ver {
				missing++
			}
		}
		ch := d.changed
		d.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%d of %d devices do not serve %s after %v; broker %v", missing, len(ids), ver, timeout, d.s.broker.Stats())
		}
	}
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

func storeOptions() store.Options { return store.Options{History: 4} }
