package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

var pi5 = hw.ProbeFS(os.DirFS("hw/testdata/pi5"), "arm64")

func simBackend(t *testing.T, behaviors map[string]simulators.Behavior) *simulators.Backend {
	t.Helper()
	b, err := simulators.NewBackend(simulators.BackendConfig{Seed: 1, Behaviors: behaviors})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func simModel(name, version string) agent.ModelSpec {
	return agent.ModelSpec{Name: name, Version: version, Format: "tflite",
		Bytes: simulators.ModelFile{Name: name, Version: version}.Encode()}
}

func baseConfig(t *testing.T, b *broker) agent.Config {
	return agent.Config{
		BrokerURL:         b.url(),
		DeviceID:          "gw-" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "-"),
		Store:             statetest.OpenBolt(t, ""),
		Labels:            map[string]string{"site": "plant-7", "line": "3"},
		TelemetryInterval: 50 * time.Millisecond,
		AgentVersion:      "0.1.0-test",
		Facts:             &pi5,
		Backends:          []agentrt.Backend{simBackend(t, nil)},
		Models:            []agent.ModelSpec{simModel("kws", "1.0.0")},
		ReconnectMin:      20 * time.Millisecond,
		ReconnectMax:      200 * time.Millisecond,
		ConnectTimeout:    2 * time.Second,
		PublishTimeout:    2 * time.Second,
	}
}

// start runs the agent until the test ends and checks Run returns nil and
// everything it started has stopped.
func start(t *testing.T, cfg agent.Config) (*agent.Agent, context.CancelFunc) {
	t.Helper()
	before := runtime.NumGoroutine()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10 s after cancel")
			}
			if err := a.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			waitGoroutines(t, before)
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// waitGoroutines waits until no goroutine of the agent or of paho is
// left: paho's workers exit shortly after Disconnect returns. Goroutines
// of the test's broker are not the agent's and are ignored, which a plain
// count could not do (the broker starts its own asynchronously).
func waitGoroutines(t *testing.T, _ int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := agentGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d agent goroutines still running after Run returned and Close:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(5 * time.Millisecond) // polling the goroutine list; nothing to wait on
	}
}

func agentGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/eclipse/paho") || strings.Contains(g, "edgefleet/agent.(") ||
			strings.Contains(g, "edgefleet/simulators.") {
			left = append(left, g)
		}
	}
	return left
}

func TestHelloStatusTelemetry(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	a, stop := start(t, cfg)
	id := a.ID()

	// Infer before any window closes so the first windows carry requests.
	out := []agentrt.Tensor{{}}
	for i := 0; i < 20; i++ {
		if err := a.Infer(context.Background(), "kws", simulators.Input(), out); err != nil {
			t.Fatal(err)
		}
	}
	if out[0].DType != agentrt.Float32 || len(out[0].Data) != 8 {
		t.Fatalf("output %+v", out[0])
	}
	// The 20 requests may spread over several windows on a busy machine.
	msgs := b.waitFor("hello, online status, 3 windows and the 20 requests", 10*time.Second, func(ms []received) bool {
		return len(of[*proto.Hello](ms, proto.KindHello)) == 1 && len(of[*proto.Status](ms, proto.KindStatus)) == 1 &&
			len(of[*proto.TelemetryWindow](ms, proto.KindTelemetry)) >= 3 && totalRequests(ms) >= 20
	})
	h := of[*proto.Hello](msgs, proto.KindHello)[0]
	if h.GetDeviceId() != id || h.GetSession() != 1 || h.GetFirmwareProfile() != "raspberry-pi-5" || h.GetAgentVersion() != "0.1.0-test" {
		t.Errorf("hello %v", h)
	}
	if h.GetLabels()["site"] != "plant-7" || h.GetHardware().GetCores() != 4 || h.GetHardware().GetBoardModel() != "Raspberry Pi 5 Model B Rev 1.0" {
		t.Errorf("hello labels/hardware %v", h)
	}
	if len(h.GetBackends()) != 1 || h.GetBackends()[0].GetName() != "sim" || !h.GetBackends()[0].GetAvailable() {
		t.Errorf("hello backends %v", h.GetBackends())
	}
	if ms := h.GetModels(); len(ms) != 1 || ms[0].GetName() != "kws" || !ms[0].GetActive() || len(ms[0].GetSha256()) != 64 {
		t.Errorf("hello models %v", ms)
	}
	st := of[*proto.Status](msgs, proto.KindStatus)[0]
	if st.GetState() != proto.Status_STATE_ONLINE || st.GetSession() != 1 {
		t.Errorf("status %v", st)
	}
	ws := of[*proto.TelemetryWindow](msgs, proto.KindTelemetry)
	var requests uint64
	for i, w := range ws {
		if w.GetSeq() != uint64(i+1) {
			t.Fatalf("window %d has seq %d", i, w.GetSeq())
		}
		if i > 0 && w.GetStartUnixMs() != ws[i-1].GetEndUnixMs() {
			t.Errorf("window %d starts at %d, previous ended at %d", i, w.GetStartUnixMs(), ws[i-1].GetEndUnixMs())
		}
		if w.GetProcess().GetRssBytes() == 0 {
			t.Errorf("window %d has no RSS", i)
		}
		for _, m := range w.GetModels() {
			requests += m.GetRequests()
			if m.GetP50Ms() <= 0 || m.GetP99Ms() < m.GetP50Ms() {
				t.Errorf("window %d percentiles %v", i, m)
			}
		}
	}
	if requests != 20 {
		t.Errorf("windows count %d requests, want 20", requests)
	}

	stop()
	msgs = b.waitFor("offline status on shutdown", 5*time.Second, func(ms []received) bool {
		return len(of[*proto.Status](ms, proto.KindStatus)) == 2
	})
	if off := of[*proto.Status](msgs, proto.KindStatus)[1]; off.GetState() != proto.Status_STATE_OFFLINE || off.GetSession() != 1 {
		t.Errorf("status on shutdown %v", off)
	}
}

func totalRequests(ms []received) uint64 {
	var n uint64
	for _, w := range of[*proto.TelemetryWindow](ms, proto.KindTelemetry) {
		for _, m := range w.GetModels() {
			n += m.GetRequests()
		}
	}
	return n
}

func TestWillAndReconnect(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	var c cutter
	cfg.Dial = c.dial
	a, _ := start(t, cfg)
	b.waitFor("first hello", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) == 1 })

	c.cut() // no DISCONNECT: the broker must publish the will
	msgs := b.waitFor("will, then online and hello of session 2", 10*time.Second, func(ms []received) bool {
		return len(of[*proto.Status](ms, proto.KindStatus)) >= 3 && len(of[*proto.Hello](ms, proto.KindHello)) == 2
	})
	sts := of[*proto.Status](msgs, proto.KindStatus)
	want := []struct {
		state   proto.Status_State
		session uint64
	}{{proto.Status_STATE_ONLINE, 1}, {proto.Status_STATE_OFFLINE, 1}, {proto.Status_STATE_ONLINE, 2}}
	for i, w := range want {
		if sts[i].GetState() != w.state || sts[i].GetSession() != w.session {
			t.Errorf("status %d: %v session %d, want %v session %d", i, sts[i].GetState(), sts[i].GetSession(), w.state, w.session)
		}
	}
	if h := of[*proto.Hello](msgs, proto.KindHello)[1]; h.GetSession() != 2 {
		t.Errorf("second hello has session %d", h.GetSession())
	}
	s, err := a.Stats(context.Background())
	if err != nil || s.Connects != 2 || s.Session != 2 {
		t.Errorf("stats %+v, %v", s, err)
	}
}

// seqs returns the seqs of the telemetry windows received, in order.
func seqs(msgs []received) []uint64 {
	var out []uint64
	for _, w := range of[*proto.TelemetryWindow](msgs, proto.KindTelemetry) {
		out = append(out, w.GetSeq())
	}
	return out
}

// distinctInOrder checks that seqs, with immediate resends collapsed,
// is strictly increasing, and returns the distinct seqs.
func distinctInOrder(t *testing.T, s []uint64) []uint64 {
	t.Helper()
	var out []uint64
	for _, v := range s {
		if len(out) > 0 && v == out[len(out)-1] {
			continue // a resend after a lost PUBACK
		}
		if len(out) > 0 && v < out[len(out)-1] {
			t.Fatalf("window %d arrived after %d: out of order (%v)", v, out[len(out)-1], s)
		}
		out = append(out, v)
	}
	return out
}

func TestOutageDrainsQueueInOrder(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	if os.Getenv("AGENT_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var c cutter
	cfg.Dial = c.dial
	a, _ := start(t, cfg)
	b.waitFor("first window", 10*time.Second, func(ms []received) bool { return len(seqs(ms)) >= 1 })

	c.setDown(true)
	ctx := context.Background()
	// Wait until at least 5 windows are queued while the network is down.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := a.Stats(ctx)
		if !s.Connected && s.Queue.Windows >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue did not fill while offline: %+v", s)
		}
		time.Sleep(10 * time.Millisecond) // polling the agent's own counters
	}
	s, _ := a.Stats(ctx)
	produced := s.WindowsSent + uint64(s.Queue.Windows)
	c.setDown(false)
	msgs := b.waitFor("every window produced during the outage", 10*time.Second, func(ms []received) bool {
		got := seqs(ms)
		return len(got) > 0 && got[len(got)-1] >= produced
	})
	got := distinctInOrder(t, seqs(msgs))
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("windows %v: missing seq %d", got, i+1)
		}
	}
	if s, _ := a.Stats(ctx); s.Queue.Dropped != 0 {
		t.Errorf("dropped %d windows within the bound", s.Queue.Dropped)
	}
}

func TestQueueBoundDropsOldest(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	cfg.QueueLimits = telemetry.Limits{MaxWindows: 3, MaxBytes: 1 << 20}
	var c cutter
	c.setDown(true) // start offline
	cfg.Dial = c.dial
	a, _ := start(t, cfg)
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := a.Stats(ctx)
		if s.Queue.Dropped >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing dropped: %+v", s)
		}
		time.Sleep(10 * time.Millisecond) // polling the agent's own counters
	}
	c.setDown(false)
	msgs := b.waitFor("hello and queued windows", 10*time.Second, func(ms []received) bool {
		return len(of[*proto.Hello](ms, proto.KindHello)) == 1 && len(seqs(ms)) >= 4
	})
	got := distinctInOrder(t, seqs(msgs))
	if got[0] < 5 {
		t.Errorf("first delivered window is %d; the oldest should have been dropped (%v)", got[0], got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Errorf("gap after the queue drained: %v", got)
		}
	}
	h := of[*proto.Hello](msgs, proto.KindHello)[0]
	ws := of[*proto.TelemetryWindow](msgs, proto.KindTelemetry)
	if h.GetTelemetryWindowsDropped() < 4 || ws[len(ws)-1].GetWindowsDropped() < 4 {
		t.Errorf("drops not reported: hello %d, last window %d", h.GetTelemetryWindowsDropped(), ws[len(ws)-1].GetWindowsDropped())
	}
}

func TestBrokerUnreachableThenUp(t *testing.T) {
	// A port with nothing listening: the agent retries with backoff and
	// Run still returns promptly on cancel.
	cfg := baseConfig(t, &broker{addr: "127.0.0.1:1"})
	var c cutter
	cfg.Dial = c.dial
	a, stop := start(t, cfg)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		n := c.dials
		c.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d dial attempts", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter
	}
	if s, _ := a.Stats(context.Background()); s.Connected || s.Connects != 0 {
		t.Errorf("stats %+v", s)
	}
	stop()
}

func TestInfer(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	cfg.Backends = []agentrt.Backend{simBackend(t, map[string]simulators.Behavior{
		"bad@3.0.0": {P50: time.Millisecond, P95: 2 * time.Millisecond, ErrorRate: 1},
	})}
	cfg.Models = []agent.ModelSpec{simModel("kws", "1.0.0"), simModel("bad", "3.0.0")}
	cfg.MaxSessions = 1
	cfg.TelemetryInterval = time.Hour // windows only by hand below
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	out := []agentrt.Tensor{{}}
	if err := a.Infer(ctx, "nope", simulators.Input(), out); !errors.Is(err, agent.ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
	bad := []agentrt.Tensor{{DType: agentrt.Int8, Shape: []int{1, 4}, Data: make([]byte, 4)}}
	if err := a.Infer(ctx, "kws", bad, out); !errors.Is(err, agentrt.ErrInput) || !strings.Contains(err.Error(), "features") {
		t.Errorf("bad input: %v", err)
	}
	if err := a.Infer(ctx, "bad", simulators.Input(), out); !errors.Is(err, simulators.ErrSimulated) {
		t.Errorf("failing model: %v", err)
	}
	infos := a.Models()
	if len(infos) != 2 {
		t.Errorf("models %v", infos)
	}
	// Concurrent callers share one session without racing.
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := []agentrt.Tensor{{}}
			for i := 0; i < 10; i++ {
				if err := a.Infer(ctx, "kws", simulators.Input(), out); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	a.Close()
	if err := a.Infer(ctx, "kws", simulators.Input(), out); !errors.Is(err, agent.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}

func TestInferCountsInTelemetry(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	cfg.Backends = []agentrt.Backend{simBackend(t, map[string]simulators.Behavior{
		"kws@1.0.0": {P50: 0, P95: 0, ErrorRate: 0.5},
	})}
	a, _ := start(t, cfg)
	ctx := context.Background()
	out := []agentrt.Tensor{{}}
	bad := []agentrt.Tensor{{DType: agentrt.Int8, Shape: []int{1, 4}, Data: make([]byte, 4)}}
	var failed uint64
	for i := 0; i < 200; i++ {
		if a.Infer(ctx, "kws", simulators.Input(), out) != nil {
			failed++
		}
	}
	for i := 0; i < 5; i++ {
		a.Infer(ctx, "kws", bad, out)
	}
	var requests, errs, inputErrs uint64
	b.waitFor("all 205 requests in telemetry", 10*time.Second, func(ms []received) bool {
		requests, errs, inputErrs = 0, 0, 0
		for _, w := range of[*proto.TelemetryWindow](ms, proto.KindTelemetry) {
			for _, m := range w.GetModels() {
				requests += m.GetRequests()
				errs += m.GetErrors()
				inputErrs += m.GetErrorsByKind()["input"]
			}
		}
		return requests >= 205
	})
	if requests != 205 || errs != failed+5 || inputErrs != 5 {
		t.Errorf("telemetry: %d requests, %d errors (%d input); want 205, %d, 5", requests, errs, inputErrs, failed+5)
	}
	if failed < 60 || failed > 140 {
		t.Errorf("%d of 200 failed with a 50%% error rate", failed)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	b := &broker{addr: "127.0.0.1:1883"}
	tests := []struct {
		name string
		edit func(*agent.Config)
		want string
	}{
		{"no broker", func(c *agent.Config) { c.BrokerURL = "" }, "no broker URL"},
		{"bad scheme", func(c *agent.Config) { c.BrokerURL = "http://x" }, "scheme"},
		{"bad id", func(c *agent.Config) { c.DeviceID = "a/b" }, "device id"},
		{"long label", func(c *agent.Config) { c.Labels = map[string]string{strings.Repeat("k", 64): "v"} }, "label key"},
		{"no format", func(c *agent.Config) {
			c.Models = []agent.ModelSpec{{Name: "m", Version: "1", Path: "/nonexistent/model"}}
		}, "no such file"},
		{"no backend", func(c *agent.Config) { c.Models[0].Format = "gguf" }, "no inference backend"},
		{"bad model", func(c *agent.Config) { c.Models[0].Bytes = []byte("garbage") }, "bad model"},
		{"dup model", func(c *agent.Config) { c.Models = append(c.Models, c.Models[0]) }, "twice"},
		{"tiny interval", func(c *agent.Config) { c.TelemetryInterval = time.Millisecond }, "telemetry interval"},
		{"no state", func(c *agent.Config) { c.Store = nil }, "state directory"},
		{"queue", func(c *agent.Config) { c.QueueLimits = telemetry.Limits{MaxWindows: 1, MaxBytes: 1} }, "max bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(t, b)
			tt.edit(&cfg)
			a, err := agent.New(cfg)
			if err == nil {
				a.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	t.Run("budget", func(t *testing.T) {
		tiny, err := profiles.Parse("generic-arm64.yaml", []byte("name: generic-arm64\ngeneric: true\nmatch: {arch: [arm64]}\nbackends: [{name: sim}]\nmodel_memory_mb: 1\nthreads: 1\n"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := baseConfig(t, b)
		cfg.Profiles = []*profiles.Profile{tiny}
		big := simModel("big", "1")
		big.Bytes = append(big.Bytes, make([]byte, 2<<20)...)
		cfg.Models = []agent.ModelSpec{big}
		if _, err := agent.New(cfg); err == nil || !strings.Contains(err.Error(), "budget of 1 MiB") {
			t.Errorf("over budget: %v", err)
		}
	})
}

func TestStateDirPersistsIdentityAndLocks(t *testing.T) {
	b := &broker{addr: "127.0.0.1:1883"}
	dir := t.TempDir()
	cfg := baseConfig(t, b)
	cfg.Store, cfg.StateDir, cfg.DeviceID = nil, dir, ""
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := a.ID()
	if err := proto.ValidateDeviceID(id); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.New(cfg); !errors.Is(err, state.ErrLocked) {
		t.Errorf("second agent on the same state dir: %v", err)
	}
	a.Close()
	a2, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a2.ID() != id {
		t.Errorf("id changed across restarts: %s then %s", id, a2.ID())
	}
	a2.Close()
	s := statetest.OpenBolt(t, dir)
	ms, _ := s.Models(context.Background())
	if len(ms) != 1 || ms[0].Name != "kws" {
		t.Errorf("installed models %v", ms)
	}
	if _, err := os.Stat(filepath.Join(dir, state.FileName)); err != nil {
		t.Error(err)
	}
}

func TestCloseWaitsForInflightInfer(t *testing.T) {
	cfg := baseConfig(t, &broker{addr: "127.0.0.1:1"})
	cfg.Backends = []agentrt.Backend{simBackend(t, map[string]simulators.Behavior{
		"kws@1.0.0": {P50: 50 * time.Millisecond, P95: 50 * time.Millisecond},
	})}
	cfg.MaxSessions = 4
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	started := make(chan struct{}, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			errs <- a.Infer(context.Background(), "kws", simulators.Input(), []agentrt.Tensor{{}})
		}()
	}
	for i := 0; i < 8; i++ {
		<-started
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		// A call either ran to the end before Close finished, or found
		// the agent closed; none fails half-way on a closed session.
		if err != nil && !errors.Is(err, agent.ErrClosed) {
			t.Errorf("Infer during Close: %v", err)
		}
	}
}
