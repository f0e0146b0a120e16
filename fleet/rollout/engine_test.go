package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// env is a fleet server's parts without devices connected: devices are
// put in the inventory by their hello, the engine is stepped by hand with
// an injected clock, desired states go through a real embedded broker.
type env struct {
	t     testing.TB
	dir   string
	inv   *inventory.Inventory
	reg   *registry.Registry
	b     *broker.Embedded
	clock *clock
	e     *rollout.Engine
	// b2 replaces b when set (a broker restarted).
	b2 *broker.Embedded
}

func (en *env) pub() rollout.Publisher {
	if en.b2 != nil {
		return en.b2
	}
	return en.b
}

func newEnv(t testing.TB, devices int) *env {
	t.Helper()
	ctx := context.Background()
	en := &env{t: t, dir: t.TempDir(), clock: &clock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}}
	st := storetest.Open(t, storeOptions())
	var err error
	if en.inv, err = inventory.New(ctx, st, inventory.Options{Now: en.clock.Now}); err != nil {
		t.Fatal(err)
	}
	if en.reg, err = registry.Open(registry.Options{DataDir: en.dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { en.reg.Close() })
	for v := range behaviors {
		publish(t, en.reg, v)
	}
	if en.b, err = broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: en.inv}); err != nil {
		t.Fatal(err)
	}
	if err := en.b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { en.b.Close() })
	// Hellos from many goroutines, so the store's batches fill.
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < devices; i += 32 {
				profile := "raspberry-pi-4"
				if i%10 == 9 {
					profile = "coral-dev-board"
				}
				h := &proto.Hello{ProtocolVersion: proto.ProtocolVersion, DeviceId: fmt.Sprintf("d%03d", i), AgentVersion: "0.3.0", FirmwareProfile: profile, Session: 1,
					Backends: []*proto.Backend{{Name: "tflite", Available: true, Formats: []string{"tflite"}}},
					Models:   []*proto.InstalledModel{{Name: model, Version: "1.0.0", Active: true}},
					Labels:   map[string]string{"site": fmt.Sprintf("plant-%d", i%2)}}
				if err := en.inv.ApplyHello(ctx, h); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	en.open()
	return en
}

func (en *env) open() {
	en.t.Helper()
	e, err := rollout.Open(context.Background(), rollout.Options{Path: filepath.Join(en.dir, "rollout.db"), Devices: en.inv, Models: en.reg,
		Publisher: en.pub(), ArtifactBaseURL: "http://fleet.test:8080/", Now: en.clock.Now, User: userOf})
	if err != nil {
		en.t.Fatal(err)
	}
	en.e = e
	en.t.Cleanup(func() {
		e.Close()
		checkDB(en.t, filepath.Join(en.dir, "rollout.db"))
	})
}

// checkDB runs bbolt's consistency check over a closed database file.
func checkDB(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Errorf("reopen %s for its check: %v", path, err)
		return
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("%s is inconsistent: %v", path, err)
	}
}

func (en *env) step() {
	en.t.Helper()
	if err := en.e.Step(context.Background()); err != nil {
		en.t.Fatal(err)
	}
}

func (en *env) get(id string) *rollout.Status {
	en.t.Helper()
	s, err := en.e.Get(context.Background(), id)
	if err != nil {
		en.t.Fatal(err)
	}
	return s
}

// feed sends one window per device of ts for what it runs: ver for the
// dispatched ones, 1.0.0 for the rest.
func (en *env) feed(seq uint64, ver string, reqs, errs uint64, p95 float64) {
	en.t.Helper()
	ts, err := en.e.Targets(context.Background(), "r1")
	if err != nil {
		en.t.Fatal(err)
	}
	for _, t := range ts {
		v, e := "1.0.0", uint64(0)
		if t.Phase >= 0 {
			v, e = ver, errs
		}
		p := 7.0
		if v == ver {
			p = p95
		}
		en.e.HandleTelemetry(&proto.TelemetryWindow{DeviceId: t.Device, Seq: seq, Models: []*proto.ModelStats{{Name: model, Version: v, Requests: reqs, Errors: e, P95Ms: p}}})
	}
}

func (en *env) jobs(state proto.JobProgress_State) {
	en.t.Helper()
	ts, _ := en.e.Targets(context.Background(), "r1")
	for _, t := range ts {
		if t.JobID != "" && t.JobState == "" {
			if err := en.e.HandleJob(context.Background(), &proto.JobProgress{DeviceId: t.Device, JobId: t.JobID, State: state, Step: proto.JobProgress_STEP_DONE}); err != nil {
				en.t.Fatal(err)
			}
		}
	}
}

func TestEngineBakeRateAndActions(t *testing.T) {
	en := newEnv(t, 40)
	ctx := context.Background()
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Selector: "profile=raspberry-pi-4", Phases: []string{"10%", "100%"},
		Bake: rollout.Duration(time.Minute), RatePerMinute: 60, Gates: rollout.Gates{MinRequests: 50}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Targets != 36 || r.Incompatible != 0 || !slices.Equal(r.PhaseSizes, []int{4, 36}) {
		t.Fatalf("targets %d/%d phases %v, want 36 compatible (the selector leaves the Coral boards out), phases [4 36]", r.Targets, r.Incompatible, r.PhaseSizes)
	}
	// Rate 60/min with a burst of ten seconds' worth: nothing at t=0
	// (no tokens yet), then one per second.
	en.step()
	if got := en.get(r.ID).Dispatched; got != 0 {
		t.Fatalf("dispatched %d at once with no tokens", got)
	}
	en.clock.Add(2 * time.Second)
	en.step()
	if got := en.get(r.ID).Dispatched; got != 2 {
		t.Fatalf("dispatched %d after 2 s at 60/min, want 2", got)
	}
	en.clock.Add(2 * time.Second)
	en.step()
	s := en.get(r.ID)
	if s.Dispatched != 4 || s.BakeStarted.IsZero() {
		t.Fatalf("phase 0 not fully dispatched: %d, bake %v", s.Dispatched, s.BakeStarted)
	}
	// Evidence passes, but the bake is not over.
	en.jobs(proto.JobProgress_STATE_SUCCEEDED)
	en.feed(1, "2.0.0", 100, 0, 7)
	en.clock.Add(30 * time.Second)
	en.step()
	if s := en.get(r.ID); s.Phase != 0 || s.Live == nil || s.Live.Verdict != rollout.VerdictPass {
		t.Fatalf("after 30 s of a 1 min bake: phase %d, live %+v; want phase 0 passing", s.Phase, s.Live)
	}
	en.clock.Add(31 * time.Second)
	en.step()
	if s := en.get(r.ID); s.Phase != 1 || s.Decisions[0].Action != "promote" {
		t.Fatalf("not promoted after the bake: %+v", s.Rollout)
	}
	// Operator: pause stops dispatch; promote is refused while dispatching.
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionPause, ""); err != nil {
		t.Fatal(err)
	}
	en.clock.Add(time.Minute)
	en.step()
	if got := en.get(r.ID).Dispatched; got != 4 {
		t.Fatalf("paused rollout dispatched: %d", got)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionPause, ""); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("second pause: %v, want ErrConflict", err)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionResume, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionPromote, ""); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("promote while dispatching: %v, want ErrConflict", err)
	}
	// A restart keeps where it was: same phase, same dispatched count.
	before := en.get(r.ID)
	en.e.Close()
	en.open()
	after := en.get(r.ID)
	if after.State != before.State || after.Phase != before.Phase || after.Dispatched != before.Dispatched || len(after.Decisions) != len(before.Decisions) {
		t.Fatalf("restart changed the rollout: before %+v after %+v", before.Rollout, after.Rollout)
	}
	for range 40 {
		en.clock.Add(time.Second)
		en.step()
	}
	// The final phase keeps a holdback of 3 (the minimum devices) as its
	// live control.
	if s := en.get(r.ID); s.Dispatched != 33 || s.Holdback != 3 || s.BakeStarted.IsZero() {
		t.Fatalf("phase 1 after 40 s: %d dispatched, holdback %d; want 33 and 3", s.Dispatched, s.Holdback)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionPromote, "looks fine"); err != nil {
		t.Fatal(err)
	}
	s = en.get(r.ID)
	if s.State != rollout.StateCompleted || s.Dispatched != 36 || s.Decisions[len(s.Decisions)-1].Actor != "operator" {
		t.Fatalf("operator promote of the last phase: %+v", s.Rollout)
	}
	d, err := en.e.Desired(ctx, "d000")
	if err != nil || d.Generation != 1 || d.Models[0].Version != "2.0.0" {
		t.Fatalf("desired of d000: %+v %v", d, err)
	}
	// Rolling back a completed rollout sends everyone back to 1.0.0.
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionRollback, ""); err != nil {
		t.Fatal(err)
	}
	s = en.get(r.ID)
	if s.State != rollout.StateRolledBack || s.RolledBack != 36 {
		t.Fatalf("rollback of a completed rollout: %s, %d rolled back", s.State, s.RolledBack)
	}
	d, _ = en.e.Desired(ctx, "d000")
	if d.Generation != 2 || d.Models[0].Version != "1.0.0" {
		t.Fatalf("desired of d000 after rollback: %+v", d)
	}
}

func TestEngineGatesNeedEvidence(t *testing.T) {
	en := newEnv(t, 20)
	ctx := context.Background()
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "3.0.0", Group: "", Devices: []string{"d000", "d001", "d002", "d003", "d009", "nope"},
		Phases: []string{"3", "100%"}, Bake: rollout.Duration(10 * time.Second), OnBreach: rollout.OnBreachPause, Gates: rollout.Gates{MinRequests: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Targets != 4 || r.Incompatible != 2 {
		t.Fatalf("targets %d, incompatible %d; want 4 and 2 (a Coral board and an unknown id)", r.Targets, r.Incompatible)
	}
	en.step()
	en.jobs(proto.JobProgress_STATE_SUCCEEDED)
	// Bad, but too few requests: no verdict either way, however long.
	en.feed(1, "3.0.0", 10, 5, 7)
	en.clock.Add(time.Hour)
	en.step()
	if s := en.get(r.ID); s.State != rollout.StateRunning || s.Live.Verdict != rollout.VerdictInsufficient {
		t.Fatalf("with 30 requests: %s %+v", s.State, s.Live)
	}
	en.feed(2, "3.0.0", 100, 30, 7)
	en.step()
	s := en.get(r.ID)
	if s.State != rollout.StatePaused {
		t.Fatalf("30%% errors did not pause: %s", s.State)
	}
	dec := s.Decisions[len(s.Decisions)-1]
	if dec.Gates.Phase.Devices != 3 || dec.Gates.Phase.Reporting != 3 || dec.Gates.Control.Devices != 1 {
		t.Fatalf("cohorts in the decision: %+v", dec.Gates)
	}
	ts, _ := en.e.Targets(ctx, r.ID)
	for _, tg := range ts {
		if tg.Device == "nope" && tg.Incompatible == "" || tg.Device == "d009" && tg.Incompatible == "" {
			t.Errorf("%s should be incompatible: %+v", tg.Device, tg)
		}
	}
	// Another rollout of the same model is refused while this one is
	// paused; abort frees the model.
	if _, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Devices: []string{"d000"}}); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("second rollout of the model: %v, want ErrConflict", err)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionAbort, "bad build"); err != nil {
		t.Fatal(err)
	}
	if _, err := en.e.Act(ctx, r.ID, rollout.ActionResume, ""); !errors.Is(err, rollout.ErrConflict) {
		t.Fatalf("resume after abort: %v", err)
	}
	if _, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "9.0.0", Devices: []string{"d000"}}); !errors.Is(err, rollout.ErrNotFound) {
		t.Fatalf("unknown version: %v", err)
	}
	if _, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Devices: []string{"d009"}}); !errors.Is(err, rollout.ErrNoTargets) {
		t.Fatalf("only incompatible devices: %v", err)
	}
}

func TestEngineWindowAndGroups(t *testing.T) {
	en := newEnv(t, 10)
	ctx := context.Background()
	if err := en.e.PutGroup(ctx, rollout.Group{Name: "plant-0", Selector: "site=plant-0"}); err != nil {
		t.Fatal(err)
	}
	if err := en.e.PutGroup(ctx, rollout.Group{Name: "Bad Name", Selector: "site=x"}); !errors.Is(err, rollout.ErrInvalid) {
		t.Fatalf("bad group name: %v", err)
	}
	ids, err := en.e.Members(ctx, "plant-0")
	if err != nil || len(ids) != 5 {
		t.Fatalf("members of plant-0: %v %v", ids, err)
	}
	// The clock is at 12:00 UTC; the window opens at 13:00.
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Group: "plant-0", Phases: []string{"100%"}, Window: &rollout.Window{Start: "13:00", End: "14:00"}})
	if err != nil {
		t.Fatal(err)
	}
	en.step()
	if got := en.get(r.ID).Dispatched; got != 0 {
		t.Fatalf("dispatched %d outside the window", got)
	}
	en.clock.Add(61 * time.Minute)
	en.step()
	if got := en.get(r.ID).Dispatched; got != 5 {
		t.Fatalf("dispatched %d inside the window, want 5", got)
	}
	as, err := en.e.Audit(ctx, "", 0, 0)
	if err != nil || len(as) < 3 || as[0].Event != "group_put" || as[1].Event != "create" {
		t.Fatalf("audit %+v %v", as, err)
	}
}

func TestEngineOfflineGate(t *testing.T) {
	en := newEnv(t, 10)
	ctx := context.Background()
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Devices: []string{"d000", "d001", "d002", "d003"}, Phases: []string{"100%"},
		Bake: rollout.Duration(time.Hour), Gates: rollout.Gates{OfflineGrace: rollout.Duration(time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	en.step()
	off := &proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: "d001", State: proto.Status_STATE_OFFLINE, Session: 1}
	if err := en.inv.ApplyStatus(ctx, off); err != nil {
		t.Fatal(err)
	}
	// Within the grace a device may just be reconnecting.
	en.clock.Add(59 * time.Second)
	en.step()
	if s := en.get(r.ID); s.State != rollout.StateRunning || s.Live.Phase.Offline != 0 {
		t.Fatalf("offline within the grace counted: %s %+v", s.State, s.Live.Phase)
	}
	en.clock.Add(2 * time.Second)
	en.step()
	s := en.get(r.ID)
	if s.State != rollout.StateRolledBack || !gateBreached(s.Decisions[0].Gates, "offline_after_update") || s.Decisions[0].Gates.Phase.Offline != 1 {
		t.Fatalf("one of four devices lost after the update: %s %+v", s.State, s.Decisions)
	}
}

type userKey struct{}

// userOf stands for the server's authentication: it names the user a
// request's context carries.
func userOf(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// TestEngineResendsUnsent: a desired state recorded while the broker is
// down is published by the next engine that opens the database.
func TestEngineResendsUnsent(t *testing.T) {
	en := newEnv(t, 3)
	ctx := context.Background()
	en.b.Close()
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Devices: []string{"d000", "d001", "d002"}, Phases: []string{"100%"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := en.e.Step(ctx); err == nil || !errors.Is(err, broker.ErrNotReady) {
		t.Fatalf("step with the broker down: %v", err)
	}
	ts, _ := en.e.Targets(ctx, r.ID)
	for _, tg := range ts {
		if tg.Generation != 1 || tg.Sent {
			t.Fatalf("recorded but unsent expected: %+v", tg)
		}
	}
	en.e.Close()
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: en.inv})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	en.b2 = b
	en.open()
	ts, _ = en.e.Targets(ctx, r.ID)
	for _, tg := range ts {
		if !tg.Sent {
			t.Fatalf("not re-sent at open: %+v", tg)
		}
	}
	// What the broker retained is the recorded desired state.
	select {
	case d := <-retainedDesired(t, b, "d001"):
		if d.GetGeneration() != 1 || d.GetModels()[0].GetVersion() != "2.0.0" || d.GetRolloutId() != r.ID {
			t.Fatalf("retained desired %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained desired state")
	}
}

// TestEngineRepublishesAfterBrokerRestart: a server restart empties the
// embedded broker's retained messages; the engine that opens the database
// publishes every device's last desired state again, so a device that
// connects afterwards (or lost the message) still converges.
func TestEngineRepublishesAfterBrokerRestart(t *testing.T) {
	en := newEnv(t, 3)
	ctx := context.Background()
	r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Devices: []string{"d000", "d001", "d002"}, Phases: []string{"100%"}})
	if err != nil {
		t.Fatal(err)
	}
	en.step()
	ts, _ := en.e.Targets(ctx, r.ID)
	for _, tg := range ts {
		if !tg.Sent {
			t.Fatalf("not sent with the broker up: %+v", tg)
		}
	}
	en.e.Close()
	en.b.Close()
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: en.inv})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	en.b2 = b
	en.open()

	select {
	case d := <-retainedDesired(t, b, "d002"):
		if d.GetGeneration() != 1 || d.GetModels()[0].GetVersion() != "2.0.0" || d.GetRolloutId() != r.ID {
			t.Fatalf("retained desired after the restart: %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the restarted broker has no desired state for a device the rollout had reached")
	}
}

// retainedDesired subscribes to a device's desired topic on b as that
// device and returns the channel the first valid desired state arrives on.
func retainedDesired(t *testing.T, b *broker.Embedded, device string) <-chan *proto.DesiredDeployment {
	t.Helper()
	got := make(chan *proto.DesiredDeployment, 1)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(device))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	c.Subscribe(proto.Topic(device, proto.KindDesired), 1, func(_ mqtt.Client, m mqtt.Message) {
		if d, err := proto.DecodeDesired(device, m.Payload()); err == nil {
			select {
			case got <- d:
			default:
			}
		}
	})
	return got
}
