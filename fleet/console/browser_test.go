package console_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/simulators"
)

// chromiumPath is Debian's chromium; `make test` installs it when root.
const chromiumPath = "/usr/bin/chromium"

// browserBudget bounds the whole browser test.
const browserBudget = 60 * time.Second

const demoModel = "demo-kws"

// demoBehaviors: 1.1.0 is as good as 1.0.0; 1.2.0 fails a third of its
// requests, which the rollout's error-rate gate must catch.
var demoBehaviors = map[string]simulators.Behavior{
	"1.0.0": {P50: 3 * time.Millisecond, P95: 6 * time.Millisecond},
	"1.1.0": {P50: 3 * time.Millisecond, P95: 6 * time.Millisecond},
	"1.2.0": {P50: 3 * time.Millisecond, P95: 6 * time.Millisecond, ErrorRate: 0.35},
}

// publishDemo puts a simulated model version in the registry, built for
// every profile but the Coral board's, so the preview shows incompatible
// devices.
func publishDemo(t *testing.T, reg *registry.Registry, ver string) {
	t.Helper()
	ctx := context.Background()
	b := demoBehaviors[ver]
	file := simulators.ModelFile{Name: demoModel, Version: ver, Behavior: &b}.Encode()
	ref, err := reg.Artifacts().Put(ctx, bytes.NewReader(file), registry.PutOptions{Size: int64(len(file))})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Publish(ctx, demoModel, registry.PublishRequest{Version: ver, Variants: []registry.VariantSpec{{
		Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: ref,
		Profiles: []string{"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "x86-ipc-avx2", "generic-amd64", "generic-arm64", "generic-arm"},
	}}}); err != nil {
		t.Fatal(err)
	}
}

// screenshotDir is screenshots/ at the repository root (git-ignored).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "screenshots")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// browser is one headless chromium with a fresh profile.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	dir   string
	shots *[]string
}

func newBrowser(t *testing.T, parent context.Context, base, dir string, shots *[]string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base, dir: dir, shots: shots}
}

// stepTimeout bounds one step, so a stuck step fails with time left in
// the budget for the diagnostics.
const stepTimeout = 25 * time.Second

func (b *browser) run(what string, actions ...chromedp.Action) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Run(sctx, actions...); err != nil {
		var loc, text string
		_ = chromedp.Run(b.ctx, chromedp.Location(&loc), chromedp.Text("main", &text, chromedp.ByQuery, chromedp.AtLeast(0)))
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v (at %s)\n%.1500s", what, err, loc, text)
	}
}

// shot saves a screenshot of the whole page.
func (b *browser) shot(name string) {
	b.t.Helper()
	var png []byte
	if err := chromedp.Run(b.ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", len(*b.shots)+1, name))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	*b.shots = append(*b.shots, p)
}

func (b *browser) login(name, password string) {
	b.t.Helper()
	b.run("log in as "+name,
		chromedp.Navigate(b.base+"/"),
		chromedp.WaitVisible(`#login`, chromedp.ByQuery),
		chromedp.SendKeys(`#name`, name, chromedp.ByQuery),
		chromedp.SendKeys(`#password`, password, chromedp.ByQuery),
	)
	b.shot("login-" + name)
	b.run("submit the login", chromedp.Submit(`#login`, chromedp.ByQuery), chromedp.WaitVisible(`#whoami`, chromedp.ByQuery))
}

// TestBrowser drives the console in chromium against a real server and a
// simulated fleet that applies updates through the real agent code: log
// in, see the devices, open one, roll a good version out to a group, watch
// it complete, see a bad version rolled back by the gates, roll one back
// by hand; a viewer sees no operator buttons and is refused when forcing
// an action.
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no chromium at %s (install it with: apt-get install -y chromium)", chromiumPath)
	}
	if testing.Short() {
		t.Skip("browser test skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), browserBudget)
	defer cancel()
	f := fleettest.Start(t)
	reg, eng := f.Server.Registry(), f.Server.Rollouts()
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		publishDemo(t, reg, v)
	}
	const n = 20
	sim, err := simulators.New(simulators.Config{Devices: n, BrokerURL: f.MQTTURL, Seed: 7, TelemetryInterval: 250 * time.Millisecond,
		Rate: 40, Models: []simulators.Model{{Name: demoModel, Version: "1.0.0"}}, ReconnectMax: time.Second,
		FleetKey: reg.PublicKey(), UpdateRoot: t.TempDir(),
		Health: update.HealthPolicy{Window: 200 * time.Millisecond, MinRequests: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(simCtx) }()
	t.Cleanup(func() {
		stopSim()
		if err := <-simDone; err != nil {
			t.Error(err)
		}
	})
	f.WaitDevices(t, inventory.Query{Status: inventory.StatusOnline}, n, 30*time.Second)
	if err := eng.PutGroup(ctx, rollout.Group{Name: "plant-all", Selector: "simulated=true"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"ada", auth.RoleOperator}, {"vic", auth.RoleViewer}} {
		if err := f.Server.Auth().CreateUser(ctx, u.name, u.name+"-password", u.role); err != nil {
			t.Fatal(err)
		}
	}
	var shots []string
	dir := screenshotDir(t)
	defer func() { t.Logf("screenshots:\n%s", strings.Join(shots, "\n")) }()

	op := newBrowser(t, ctx, f.HTTPURL, dir, &shots)
	op.login("ada", "ada-password")
	var text string
	op.run("overview", chromedp.WaitVisible(`#total`, chromedp.ByQuery), chromedp.Text(`#total`, &text, chromedp.ByQuery))
	if text != fmt.Sprintf("%d devices", n) {
		t.Errorf("overview total %q, want %d devices", text, n)
	}
	op.shot("overview")
	first := sim.DeviceID(0)
	op.run("devices", chromedp.Click(`a[href="/devices"]`, chromedp.ByQuery), chromedp.WaitVisible(`#devices`, chromedp.ByQuery),
		chromedp.WaitVisible(`a[href="/devices/`+first+`"]`, chromedp.ByQuery))
	op.shot("devices")
	op.run("open a device", chromedp.Click(`a[href="/devices/`+first+`"]`, chromedp.ByQuery), chromedp.WaitVisible(`#profile`, chromedp.ByQuery),
		chromedp.WaitVisible(`figure.chart svg`, chromedp.ByQuery))
	op.shot("device")
	op.run("models", chromedp.Click(`a[href="/models"]`, chromedp.ByQuery), chromedp.WaitVisible(`#model-list`, chromedp.ByQuery))
	op.shot("models")
	op.run("model "+demoModel, chromedp.Click(`a[href="/models/`+demoModel+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`section.version`, chromedp.ByQuery),
		chromedp.Text(`section[aria-labelledby="v-1.0.0"] .devices-count`, &text, chromedp.ByQuery))
	if text != fmt.Sprint(n) {
		t.Errorf("model page: %s devices run 1.0.0, want %d", text, n)
	}
	op.shot("model")

	// A good version, to the group, in two phases.
	create := func(ver, phases string) string {
		t.Helper()
		op.run("rollouts", chromedp.Navigate(f.HTTPURL+"/rollouts"), chromedp.WaitVisible(`#rollouts`, chromedp.ByQuery))
		op.shot("rollouts-before-" + ver)
		op.run("new rollout of "+ver, chromedp.Click(`#new-rollout`, chromedp.ByQuery),
			chromedp.WaitVisible(`#rollout-form`, chromedp.ByQuery),
			chromedp.SetValue(`#model_version`, demoModel+"@"+ver, chromedp.ByQuery),
			chromedp.SetValue(`#group`, "plant-all", chromedp.ByQuery),
			chromedp.SetValue(`#phases`, phases, chromedp.ByQuery),
			chromedp.SetValue(`#bake`, "1s", chromedp.ByQuery),
			chromedp.SetValue(`#min_requests`, "100", chromedp.ByQuery),
			// Latency on two shared cores is noisy; the bad version is
			// caught by its error rate, not by latency.
			chromedp.SetValue(`#max_p95_ratio`, "4", chromedp.ByQuery),
			chromedp.Click(`#preview-button`, chromedp.ByQuery),
			chromedp.WaitVisible(`#preview-summary`, chromedp.ByQuery),
			chromedp.Text(`#preview-summary`, &text, chromedp.ByQuery))
		if !strings.Contains(text, fmt.Sprintf("%d devices in the group", n)) {
			t.Errorf("preview summary %q", text)
		}
		op.shot("preview-" + ver)
		var loc string
		op.run("create "+ver, chromedp.Click(`#create-button`, chromedp.ByQuery), chromedp.WaitVisible(`#state`, chromedp.ByQuery), chromedp.Location(&loc))
		op.shot("rollout-created-" + ver)
		id := strings.TrimPrefix(strings.SplitN(loc, "?", 2)[0], f.HTTPURL+"/rollouts/")
		if id == "" || strings.Contains(id, "/") {
			t.Fatalf("no rollout page after create: %s", loc)
		}
		return id
	}
	good := create("1.1.0", "50%, 100%")
	var state, reason string
	op.run("watch "+good+" finish", chromedp.WaitVisible(`#state.completed, #state.rolled_back, #state.rolling_back, #state.paused`, chromedp.ByQuery),
		chromedp.Text(`#state`, &state, chromedp.ByQuery), chromedp.Text(`p.big`, &reason, chromedp.ByQuery))
	if state != rollout.StateCompleted {
		op.shot("good-rollout-not-completed")
		t.Fatalf("rollout of the good version ended %s: %s", state, reason)
	}
	op.shot("rollout-completed")

	bad := create("1.2.0", "25%, 100%")
	op.run("watch "+bad+" roll back by itself", chromedp.WaitVisible(`#state.rolled_back, #state.rolling_back`, chromedp.ByQuery),
		chromedp.WaitVisible(`li.decision.rollback`, chromedp.ByQuery), chromedp.Text(`li.decision.rollback`, &text, chromedp.ByQuery))
	if !strings.Contains(text, "engine") || !strings.Contains(text, "error") {
		t.Errorf("the automatic rollback's decision does not show the engine and the error gate: %q", text)
	}
	op.shot("rollout-auto-rollback")

	// Roll the good one back by hand, through the confirmation page.
	op.run("roll back "+good+" by hand", chromedp.Navigate(f.HTTPURL+"/rollouts/"+good), chromedp.Click(`a.action-rollback`, chromedp.ByQuery),
		chromedp.WaitVisible(`#confirm-form`, chromedp.ByQuery), chromedp.SendKeys(`#reason`, "browser test", chromedp.ByQuery))
	op.shot("confirm-rollback")
	op.run("confirm", chromedp.Click(`#confirm-button`, chromedp.ByQuery), chromedp.WaitVisible(`#state.rolled_back, #state.rolling_back`, chromedp.ByQuery),
		chromedp.Text(`li.decision.rollback`, &text, chromedp.ByQuery))
	if !strings.Contains(text, "by operator") || !strings.Contains(text, "ada: browser test") {
		t.Errorf("the manual rollback's decision does not name the operator and the reason: %q", text)
	}
	op.shot("rollout-manual-rollback")
	op.run("audit", chromedp.Navigate(f.HTTPURL+"/audit"), chromedp.WaitVisible(`#audit`, chromedp.ByQuery), chromedp.Text(`#audit`, &text, chromedp.ByQuery))
	if !strings.Contains(text, "POST /rollouts/"+good+"/actions") || !strings.Contains(text, "rollback "+good+": ada: browser test") {
		t.Errorf("audit log lacks ada's rollback: %.500s", text)
	}
	op.shot("audit")

	// A viewer sees the rollout without the buttons, and the server
	// refuses the action when the viewer's browser forces it.
	view := newBrowser(t, ctx, f.HTTPURL, dir, &shots)
	view.login("vic", "vic-password")
	var noButtons bool
	view.run("viewer's rollout page", chromedp.Navigate(f.HTTPURL+"/rollouts/"+good), chromedp.WaitVisible(`#state`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('#actions') === null && document.querySelector('a[href*="/confirm"]') === null`, &noButtons))
	if !noButtons {
		t.Error("the viewer's rollout page shows action buttons")
	}
	view.shot("viewer-rollout")
	var status int
	view.run("force an action as the viewer", chromedp.Evaluate(`(async () => {
		const csrf = document.querySelector('input[name=csrf]').value;
		const r = await fetch(location.pathname + '/actions', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},
			body: 'csrf=' + encodeURIComponent(csrf) + '&action=resume&confirm=resume'});
		return r.status;
	})()`, &status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if status != 403 {
		t.Errorf("forced action as a viewer answered %d, want 403", status)
	}
	view.run("viewer's rollouts list", chromedp.Navigate(f.HTTPURL+"/rollouts"), chromedp.WaitVisible(`#rollouts`, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('#new-rollout') === null`, &noButtons))
	if !noButtons {
		t.Error("the viewer's rollouts page offers a new rollout")
	}
	view.shot("viewer-rollouts")
}
