package update_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/clocktest"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// defaultTestHealth has a short window and asks for more requests than
// the tests send, so a version passes without traffic; the health test
// sets its own.
var defaultTestHealth = update.HealthPolicy{Window: 20 * time.Millisecond, MinRequests: 1 << 20}

const jobTimeout = 20 * time.Second

func simSpec(name, version string) agent.ModelSpec {
	return agent.ModelSpec{Name: name, Version: version, Format: "tflite", Bytes: simModelFile(name, version)}
}

func wantState(t *testing.T, ps []*proto.JobProgress, st proto.JobProgress_State, reason string) {
	t.Helper()
	f := final(ps)
	if f == nil || f.GetState() != st {
		t.Fatalf("job ended %v (%q), want %v; steps: %s", f.GetState(), f.GetReason(), st, steps(ps))
	}
	if reason != "" && !strings.Contains(f.GetReason(), reason) {
		t.Fatalf("job %v with reason %q, want it to mention %q", st, f.GetReason(), reason)
	}
}

func inferOK(t *testing.T, a *agent.Agent, name string) {
	t.Helper()
	if err := a.Infer(context.Background(), name, simulators.Input(), []agentrt.Tensor{{}}); err != nil {
		t.Fatalf("infer %s: %v", name, err)
	}
}

func TestUpdateSwitchesAndSurvivesRestart(t *testing.T) {
	f := startFleet(t)
	dir := t.TempDir()
	cfg := f.agentConfig(t, dir, simBackend(t, nil), simSpec("kws", "1.0.0"))
	hellos := f.recordHellos(t)
	a, stop := runAgent(t, cfg)
	ctx := context.Background()

	sent := time.Now()
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "j1"))
	ps := f.waitJob("j1", jobTimeout)
	wantState(t, ps, proto.JobProgress_STATE_SUCCEEDED, "")
	if got, want := steps(ps), "QUEUED DOWNLOADING VERIFYING LOADING SELF_TEST SWITCHING HEALTH_WINDOW DONE/SUCCEEDED"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s after the update, want 2.0.0", v)
	}
	inferOK(t, a, "kws")
	// The fleet hears what the device runs now without a reconnect.
	hellos.waitFor(t, sent, jobTimeout, func(h *proto.Hello) bool {
		act := activeModels(h)
		return len(act) == 1 && act[0].GetVersion() == "2.0.0"
	})
	h, err := a.Hello(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var installed []string
	for _, m := range h.GetModels() {
		installed = append(installed, m.GetVersion()+"@"+m.GetSlot()+map[bool]string{true: "*"}[m.GetActive()])
	}
	if got := strings.Join(installed, " "); got != "1.0.0@a 2.0.0@b*" {
		t.Errorf("hello reports installed %q, want 1.0.0@a 2.0.0@b*", got)
	}

	// The same generation again is ignored; the next one goes into slot a.
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "9.0.0", data: simModelFile("kws", "9.0.0")}, "j-same-gen"))
	f.publish(a.ID(), 2, f.desiredModel(release{name: "kws", version: "3.0.0", data: simModelFile("kws", "3.0.0")}, "j2"))
	wantState(t, f.waitJob("j2", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	if n := f.jobCount("j-same-gen"); n != 0 {
		t.Errorf("a repeated generation started a job (%d messages)", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "models", "slots", "kws.a")); err != nil {
		t.Errorf("3.0.0 should be in slot a: %v", err)
	}
	stop()

	// A restart serves what was switched to, not the configured 1.0.0, and
	// does not run the finished job again.
	before := f.jobCount("j2")
	a2, _ := runAgent(t, cfg)
	if v := servedVersion(t, a2, "kws"); v != "3.0.0" {
		t.Fatalf("after restart serving %s, want 3.0.0", v)
	}
	inferOK(t, a2, "kws")
	ps = f.waitJob("j2", jobTimeout)
	for _, p := range ps[before:] {
		if p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
			t.Errorf("after restart j2 reported %v %v, want only its terminal state again", p.GetStep(), p.GetState())
		}
	}
}

func TestTamperedUpdatesRejected(t *testing.T) {
	f := startFleet(t)
	a, _ := runAgent(t, f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0")))
	_, otherKey, _ := ed25519GenerateKey(t)
	gen := uint64(0)
	cases := []struct {
		name, reason string
		make         func() *proto.DesiredModel
	}{
		{"flipped byte", "sha256", func() *proto.DesiredModel {
			dm := f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "flip")
			f.mu.Lock()
			f.blobs[dm.GetSha256()][12] ^= 1
			f.mu.Unlock()
			return dm
		}},
		{"foreign signature", "signature", func() *proto.DesiredModel {
			dm := f.desiredModel(release{name: "kws", version: "2.0.1", data: simModelFile("kws", "2.0.1")}, "sig")
			m, err := proto.DecodeManifest(dm.Manifest)
			if err != nil {
				t.Fatal(err)
			}
			dm.Manifest, dm.Signature, err = proto.SignManifest(otherKey, m)
			if err != nil {
				t.Fatal(err)
			}
			return dm
		}},
		{"altered manifest", "signature", func() *proto.DesiredModel {
			dm := f.desiredModel(release{name: "kws", version: "2.0.2", data: simModelFile("kws", "2.0.2")}, "alter")
			dm.Manifest = []byte(strings.Replace(string(dm.Manifest), `"precision":"int8"`, `"precision":"int4"`, 1))
			return dm
		}},
		{"manifest names other bytes", "manifest names sha256", func() *proto.DesiredModel {
			dm := f.desiredModel(release{name: "kws", version: "2.0.3", data: simModelFile("kws", "2.0.3")}, "other")
			evil := simulators.ModelFile{Name: "kws", Version: "2.0.3", Behavior: &simulators.Behavior{ErrorRate: 1}}.Encode()
			sha := f.put(evil)
			dm.Sha256, dm.Url, dm.SizeBytes = sha, f.artifactURL(sha), uint64(len(evil))
			return dm
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gen++
			dm := c.make()
			f.publish(a.ID(), gen, dm)
			wantState(t, f.waitJob(dm.GetJobId(), jobTimeout), proto.JobProgress_STATE_FAILED, c.reason)
			if v := servedVersion(t, a, "kws"); v != "1.0.0" {
				t.Fatalf("serving %s after a rejected update, want 1.0.0", v)
			}
			inferOK(t, a, "kws")
		})
	}
	// The same device takes a genuine update: the rejections above were
	// about the tampering, not about the device.
	gen++
	f.publish(a.ID(), gen, f.desiredModel(release{name: "kws", version: "2.1.0", data: simModelFile("kws", "2.1.0")}, "good"))
	wantState(t, f.waitJob("good", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	if v := servedVersion(t, a, "kws"); v != "2.1.0" {
		t.Fatalf("serving %s, want 2.1.0", v)
	}
}

func demoFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "models", "demo", name))
	if err != nil {
		t.Fatalf("demo model (go run ./models/cmd/gen -out models/demo writes it): %v", err)
	}
	return b
}

func TestSelfTestFailureNotSwitchedRealEngine(t *testing.T) {
	f := startFleet(t)
	tfl, err := agentrt.New("tflite", agentrt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	const name = "vibration-anomaly"
	v1 := agent.ModelSpec{Name: name, Version: "1.0.0", Format: "tflite", Bytes: demoFile(t, name+"-1.0.0.tflite")}
	a, _ := runAgent(t, f.agentConfig(t, t.TempDir(), tfl, v1))
	demo := func(version string) release {
		p := name + "-" + version
		return release{name: name, version: version, data: demoFile(t, p+".tflite"),
			input: demoFile(t, p+".input.bin"), output: demoFile(t, p+".expected.bin")}
	}

	f.publish(a.ID(), 1, f.desiredModel(demo("3.0.0"), "v3"))
	ps := f.waitJob("v3", jobTimeout)
	wantState(t, ps, proto.JobProgress_STATE_ROLLED_BACK, "self-test")
	if s := steps(ps); strings.Contains(s, "SWITCHING") {
		t.Errorf("a model that failed its self-test was switched to: %s", s)
	}
	if v := servedVersion(t, a, name); v != "1.0.0" {
		t.Fatalf("serving %s after v3 failed its self-test, want 1.0.0", v)
	}
	t.Logf("v3: %s", final(ps).GetReason())

	// v2 answers its own sample: the engine and the comparison work.
	f.publish(a.ID(), 2, f.desiredModel(demo("2.0.0"), "v2"))
	wantState(t, f.waitJob("v2", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	if v := servedVersion(t, a, name); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}
}

func TestHealthWindowBreachRollsBack(t *testing.T) {
	f := startFleet(t)
	clock := clocktest.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	backend := simBackend(t, map[string]simulators.Behavior{"kws@2.0.0": {ErrorRate: 1}})
	cfg := f.agentConfig(t, t.TempDir(), backend, simSpec("kws", "1.0.0"))
	cfg.Clock = clock
	cfg.Health = update.HealthPolicy{Window: 30 * time.Second, MinRequests: 20}
	a, _ := runAgent(t, cfg)
	for i := 0; i < 40; i++ {
		inferOK(t, a, "kws") // the baseline: 1.0.0 never fails
	}
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "bad"))
	f.waitStep("bad", proto.JobProgress_STEP_HEALTH_WINDOW, jobTimeout)
	waitHealthTimer(t, clock)
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s in the health window, want 2.0.0", v)
	}
	failed := 0
	for i := 0; i < 40; i++ {
		if err := a.Infer(context.Background(), "kws", simulators.Input(), []agentrt.Tensor{{}}); errors.Is(err, simulators.ErrSimulated) {
			failed++
		}
	}
	if failed != 40 {
		t.Fatalf("%d of 40 requests to the bad version failed, want all", failed)
	}
	clock.Advance(31 * time.Second)
	wantState(t, f.waitJob("bad", jobTimeout), proto.JobProgress_STATE_ROLLED_BACK, "error rate 100.0%")
	if v := servedVersion(t, a, "kws"); v != "1.0.0" {
		t.Fatalf("serving %s after the rollback, want 1.0.0", v)
	}
	inferOK(t, a, "kws")
	h, err := a.Hello(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.GetModels() {
		if m.GetActive() != (m.GetVersion() == "1.0.0") {
			t.Errorf("hello after rollback: %s active=%v", m.GetVersion(), m.GetActive())
		}
	}
}

func TestDownloadResumesAfterCuts(t *testing.T) {
	f := startFleet(t)
	a, _ := runAgent(t, f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0")))
	data := simulators.ModelFile{Name: "kws", Version: "2.0.0", Behavior: &simulators.Behavior{P50: time.Millisecond, P95: 2 * time.Millisecond}}.Encode()
	dm := f.desiredModel(release{name: "kws", version: "2.0.0", data: data}, "resume")
	f.mu.Lock()
	f.cuts[dm.GetSha256()] = []int{20, 15} // two connections die mid-body
	f.mu.Unlock()
	f.publish(a.ID(), 1, dm)
	wantState(t, f.waitJob("resume", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	f.mu.Lock()
	got := strings.Join(f.ranges, " ")
	f.mu.Unlock()
	if got != "bytes=20- bytes=35-" {
		t.Errorf("Range requests %q, want bytes=20- then bytes=35-", got)
	}
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}
}

// TestDownloadRestartsWhenRangeIgnored: a server that answers a Range
// request with the whole body must not have it appended to the prefix.
func TestDownloadRestartsWhenRangeIgnored(t *testing.T) {
	f := startFleet(t)
	a, _ := runAgent(t, f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0")))
	dm := f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "norange")
	f.mu.Lock()
	f.cuts[dm.GetSha256()] = []int{20, 30}
	f.ignoreRange = true
	f.mu.Unlock()
	f.publish(a.ID(), 1, dm)
	wantState(t, f.waitJob("norange", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	f.mu.Lock()
	got := strings.Join(f.ranges, " ")
	f.mu.Unlock()
	if got != "bytes=20- bytes=30-" {
		t.Errorf("Range requests %q, want bytes=20- then bytes=30- (each answered from 0)", got)
	}
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}
}

// TestNewerGenerationKeepingTheVersion: a newer generation that names the
// version being watched does not make the device switch back and forth.
func TestNewerGenerationKeepingTheVersion(t *testing.T) {
	f := startFleet(t)
	cfg := f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0"))
	cfg.Health = update.HealthPolicy{Window: time.Hour}
	a, _ := runAgent(t, cfg)
	rel := release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}
	f.publish(a.ID(), 1, f.desiredModel(rel, "first"))
	f.waitStep("first", proto.JobProgress_STEP_HEALTH_WINDOW, jobTimeout)
	f.publish(a.ID(), 2, f.desiredModel(rel, "again"))
	wantState(t, f.waitJob("first", jobTimeout), proto.JobProgress_STATE_FAILED, "superseded by a newer desired generation; it keeps 2.0.0")
	again := f.waitJob("again", jobTimeout)
	wantState(t, again, proto.JobProgress_STATE_SUCCEEDED, "already running")
	if s := steps(again); s != "QUEUED DONE/SUCCEEDED" {
		t.Errorf("steps %q", s)
	}
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}
}

// TestUpdaterStandalone drives an Updater directly (as a device without
// MQTT would), against a real agent as its server: the disk-space check
// and an incompatible variant.
func TestUpdaterStandalone(t *testing.T) {
	f := startFleet(t)
	srv, err := agent.New(agent.Config{BrokerURL: "tcp://127.0.0.1:1", Store: state.NewMemory(), Facts: &pi5,
		Backends: []agentrt.Backend{simBackend(t, nil)}, Models: []agent.ModelSpec{simSpec("kws", "1.0.0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	st := state.NewMemory()
	reports := make(chan *proto.JobProgress, 64)
	u, err := update.New(update.Config{
		FleetKey: f.pub, Dir: t.TempDir(), DeviceID: "gw-1", Store: st, Server: srv,
		Backends: []agentrt.Backend{simBackend(t, nil)}, Health: defaultTestHealth,
		Report:   func(p *proto.JobProgress) { reports <- p },
		DiskFree: func(string) (uint64, error) { return 1000, nil }, MinFreeBytes: 100,
		Profile: "raspberry-pi-5", AgentVersion: "0.2.0",
		StallTimeout: 300 * time.Millisecond, RetryMin: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		u.Close()
	}()
	wait := func(job string) *proto.JobProgress {
		t.Helper()
		timeout := time.After(jobTimeout)
		for {
			select {
			case p := <-reports:
				if p.GetJobId() == job && p.GetState() != proto.JobProgress_STATE_IN_PROGRESS {
					return p
				}
			case <-timeout:
				t.Fatalf("job %s did not finish", job)
			}
		}
	}
	desired := func(gen uint64, dm *proto.DesiredModel) *proto.DesiredDeployment {
		return &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: "gw-1", Generation: gen, Models: []*proto.DesiredModel{dm}}
	}

	big := make([]byte, 5000)
	copy(big, simModelFile("kws", "2.0.0"))
	u.Desired(desired(1, f.desiredModel(release{name: "kws", version: "2.0.0", data: big}, "big")))
	p := wait("big")
	if p.GetState() != proto.JobProgress_STATE_FAILED || !strings.Contains(p.GetReason(), "needs 5100 bytes") || !strings.Contains(p.GetReason(), "1000 are free") {
		t.Errorf("disk-space check: %v %q", p.GetState(), p.GetReason())
	}

	u.Desired(desired(2, f.desiredModel(release{name: "kws", version: "2.0.1", data: simModelFile("kws", "2.0.1"), backend: "onnxruntime"}, "onnx")))
	p = wait("onnx")
	if p.GetState() != proto.JobProgress_STATE_INCOMPATIBLE || !strings.Contains(p.GetReason(), "onnxruntime") {
		t.Errorf("missing backend: %v %q", p.GetState(), p.GetReason())
	}
	u.Desired(desired(3, f.desiredModel(release{name: "kws", version: "2.0.2", data: simModelFile("kws", "2.0.2"), profiles: []string{"coral-dev-board"}}, "coral")))
	if p := wait("coral"); p.GetState() != proto.JobProgress_STATE_INCOMPATIBLE || !strings.Contains(p.GetReason(), "this device is raspberry-pi-5") {
		t.Errorf("other profile: %v %q", p.GetState(), p.GetReason())
	}
	u.Desired(desired(4, f.desiredModel(release{name: "kws", version: "2.0.3", data: simModelFile("kws", "2.0.3"), minAgent: ">= 0.3.0"}, "newer-agent")))
	if p := wait("newer-agent"); p.GetState() != proto.JobProgress_STATE_INCOMPATIBLE || !strings.Contains(p.GetReason(), "needs agent >= 0.3.0, this is 0.2.0") {
		t.Errorf("min agent version: %v %q", p.GetState(), p.GetReason())
	}
	if v, _ := srv.ServedVersion("kws"); v != "1.0.0" {
		t.Errorf("serving %s, want 1.0.0", v)
	}

	// A connection that goes silent is given up after the stall timeout
	// and the download resumes on a new one.
	silent := f.desiredModel(release{name: "kws", version: "2.0.6", data: simModelFile("kws", "2.0.6")}, "stall")
	f.mu.Lock()
	f.stalls[silent.GetSha256()] = []int{10}
	f.ranges = nil
	f.mu.Unlock()
	u.Desired(desired(5, silent))
	if p := wait("stall"); p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
		t.Errorf("after a stalled connection: %v %q", p.GetState(), p.GetReason())
	}
	f.mu.Lock()
	if got := strings.Join(f.ranges, " "); got != "bytes=10-" {
		t.Errorf("after 10 bytes and silence the download resumed with %q, want bytes=10-", got)
	}
	f.mu.Unlock()
	if v, _ := srv.ServedVersion("kws"); v != "2.0.6" {
		t.Errorf("serving %s, want 2.0.6", v)
	}

	// An older generation than the applied one is ignored.
	u.Desired(desired(1, f.desiredModel(release{name: "kws", version: "2.0.4", data: simModelFile("kws", "2.0.4")}, "old")))
	u.Desired(desired(6, f.desiredModel(release{name: "kws", version: "2.0.5", data: simModelFile("kws", "2.0.5")}, "new")))
	if p := wait("new"); p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
		t.Errorf("gen 3: %v %q", p.GetState(), p.GetReason())
	}
	for len(reports) > 0 {
		if p := <-reports; p.GetJobId() == "old" {
			t.Errorf("generation 1 after generation 2 was acted on: %v", p)
		}
	}
}

// TestNewerGenerationInterruptsHealthWindow: the fleet rolls back (a new
// generation naming the previous version) while the device watches the
// new one; the device does not wait for its window to end.
func TestNewerGenerationInterruptsHealthWindow(t *testing.T) {
	f := startFleet(t)
	cfg := f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0"))
	cfg.Health = update.HealthPolicy{Window: time.Hour}
	a, _ := runAgent(t, cfg)
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "v2"))
	f.waitStep("v2", proto.JobProgress_STEP_HEALTH_WINDOW, jobTimeout)
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s in the window, want 2.0.0", v)
	}
	f.publish(a.ID(), 2, f.desiredModel(release{name: "kws", version: "1.0.0", data: simModelFile("kws", "1.0.0")}, "back"))
	wantState(t, f.waitJob("v2", jobTimeout), proto.JobProgress_STATE_FAILED, "superseded by a newer desired generation; switched back to 1.0.0")
	back := f.waitJob("back", jobTimeout)
	wantState(t, back, proto.JobProgress_STATE_SUCCEEDED, "already running")
	if s := steps(back); s != "QUEUED DONE/SUCCEEDED" {
		t.Errorf("rollback generation steps %q: nothing to download when the version already serves", s)
	}
	if v := servedVersion(t, a, "kws"); v != "1.0.0" {
		t.Fatalf("serving %s, want 1.0.0", v)
	}
	inferOK(t, a, "kws")
}

// TestRestartInHealthWindowThenRollback: the agent stops while it watches
// a new version; the next start serves the new version from its slot,
// resumes the window and, on a breach, rolls back to the previous version,
// which it loads from the other slot.
func TestRestartInHealthWindowThenRollback(t *testing.T) {
	f := startFleet(t)
	dir := t.TempDir()
	backend := simBackend(t, map[string]simulators.Behavior{"kws@3.0.0": {ErrorRate: 1}})
	cfg := f.agentConfig(t, dir, backend, simSpec("kws", "1.0.0"))
	a, stop := runAgent(t, cfg)
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "v2"))
	wantState(t, f.waitJob("v2", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	stop()

	cfg.Health = update.HealthPolicy{Window: 30 * time.Second, MinRequests: 20}
	cfg.Clock = clocktest.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a, stop = runAgent(t, cfg)
	f.publish(a.ID(), 2, f.desiredModel(release{name: "kws", version: "3.0.0", data: simModelFile("kws", "3.0.0")}, "v3"))
	f.waitStep("v3", proto.JobProgress_STEP_HEALTH_WINDOW, jobTimeout)
	stop()

	clock := clocktest.New(time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC))
	cfg.Clock = clock
	a, _ = runAgent(t, cfg)
	if v := servedVersion(t, a, "kws"); v != "3.0.0" {
		t.Fatalf("restarted in the health window serving %s, want 3.0.0", v)
	}
	f.waitStepN("v3", proto.JobProgress_STEP_HEALTH_WINDOW, 2, jobTimeout)
	waitHealthTimer(t, clock)
	for i := 0; i < 30; i++ {
		if err := a.Infer(context.Background(), "kws", simulators.Input(), []agentrt.Tensor{{}}); !errors.Is(err, simulators.ErrSimulated) {
			t.Fatalf("request %d to 3.0.0: %v", i, err)
		}
	}
	clock.Advance(31 * time.Second)
	wantState(t, f.waitJob("v3", jobTimeout), proto.JobProgress_STATE_ROLLED_BACK, "error rate 100.0%")
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s after the rollback, want 2.0.0 from its slot", v)
	}
	inferOK(t, a, "kws")
}

// waitHealthTimer waits until the health window's timer is set: the
// telemetry loop holds one timer, the window the other.
func waitHealthTimer(t *testing.T, clock *clocktest.Clock) {
	t.Helper()
	timeout := make(chan struct{})
	tm := time.AfterFunc(jobTimeout, func() { close(timeout) })
	defer tm.Stop()
	if !clock.WaitPending(2, timeout) {
		t.Fatalf("no health window timer after %v (%d timers pending)", jobTimeout, clock.Pending())
	}
}

// TestArtifactsOverFleetTLS: with TLS on, the fleet server serves
// artifacts with its own CA, which enrolment pins (agent Config.TLS); the
// agent downloads with it, and an agent without it refuses the server.
func TestArtifactsOverFleetTLS(t *testing.T) {
	f := startFleet(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(f.serveArtifact))
	defer srv.Close()
	f.http = srv // desired states now name https URLs signed by srv's CA
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	cfg := f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0"))
	cfg.TLS = &tls.Config{RootCAs: pool}
	a, _ := runAgent(t, cfg)
	f.publish(a.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "pinned"))
	wantState(t, f.waitJob("pinned", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "")
	if v := servedVersion(t, a, "kws"); v != "2.0.0" {
		t.Fatalf("serving %s, want 2.0.0", v)
	}

	cfg = f.agentConfig(t, t.TempDir(), simBackend(t, nil), simSpec("kws", "1.0.0"))
	cfg.DeviceID += "-unpinned"
	b, _ := runAgent(t, cfg)
	f.publish(b.ID(), 1, f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "unpinned"))
	wantState(t, f.waitJob("unpinned", jobTimeout), proto.JobProgress_STATE_FAILED, "certificate")
	if v := servedVersion(t, b, "kws"); v != "1.0.0" {
		t.Fatalf("serving %s, want 1.0.0", v)
	}
}

// TestNewModelRolledBackIsRemoved: a desired model the device did not
// serve before is installed next to the configured one; when it breaches
// its health window, rolling back means serving nothing under its name.
func TestNewModelRolledBackIsRemoved(t *testing.T) {
	f := startFleet(t)
	clock := clocktest.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	backend := simBackend(t, map[string]simulators.Behavior{"vad@1.0.0": {ErrorRate: 1}})
	cfg := f.agentConfig(t, t.TempDir(), backend, simSpec("kws", "1.0.0"))
	cfg.Clock = clock
	cfg.Health = update.HealthPolicy{Window: 30 * time.Second, MinRequests: 20}
	a, _ := runAgent(t, cfg)
	f.publish(a.ID(), 1,
		f.desiredModel(release{name: "kws", version: "1.0.0", data: simModelFile("kws", "1.0.0")}, "kws"),
		f.desiredModel(release{name: "vad", version: "1.0.0", data: simModelFile("vad", "1.0.0")}, "vad"))
	wantState(t, f.waitJob("kws", jobTimeout), proto.JobProgress_STATE_SUCCEEDED, "already running")
	f.waitStep("vad", proto.JobProgress_STEP_HEALTH_WINDOW, jobTimeout)
	waitHealthTimer(t, clock)
	if v := servedVersion(t, a, "vad"); v != "1.0.0" {
		t.Fatalf("serving vad %s, want 1.0.0", v)
	}
	for i := 0; i < 25; i++ {
		if err := a.Infer(context.Background(), "vad", simulators.Input(), []agentrt.Tensor{{}}); !errors.Is(err, simulators.ErrSimulated) {
			t.Fatalf("vad request %d: %v", i, err)
		}
	}
	clock.Advance(31 * time.Second)
	wantState(t, f.waitJob("vad", jobTimeout), proto.JobProgress_STATE_ROLLED_BACK, "error rate 100.0%")
	if v, ok := a.ServedVersion("vad"); ok {
		t.Fatalf("vad %s still served after its rollback", v)
	}
	inferOK(t, a, "kws")
	h, err := a.Hello(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.GetModels() {
		if m.GetName() == "vad" && m.GetActive() {
			t.Errorf("hello reports vad active after its rollback: %v", m)
		}
	}
}
