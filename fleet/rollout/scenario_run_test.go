package rollout_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/simulators"
)

// TestScenario is issue 5 §5 on the server side, end to end: 1,000
// simulated devices — the real agent with agent/update, simulated hardware
// and backend — on the embedded broker, downloading signed artifacts from
// the registry over HTTP. The devices' own health window is made lenient
// (it never rolls back), so every verdict here is the server's gates'.
// docs/rollouts.md says what it proves.
func TestScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("scenario with 1,000 simulated devices; skipped in -short")
	}
	if raceEnabled {
		t.Skip("skipped under -race: mochi's retained-message data race (mochi-mqtt/server#200) would be reported; see race_on_test.go")
	}
	const n = 1000
	s := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	fleet, err := simulators.New(simulators.Config{Devices: n, BrokerURL: s.broker.URL(), Seed: 5,
		TelemetryInterval: time.Second, Rate: 4, Ramp: 2 * time.Second, ReconnectMax: 2 * time.Second,
		Models:   []simulators.Model{{Name: model, Version: "1.0.0"}},
		FleetKey: s.reg.PublicKey(), UpdateRoot: t.TempDir(),
		Health: update.HealthPolicy{Window: 300 * time.Millisecond, MinRequests: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()

	ids := waitOnline(t, s, n, 60*time.Second)
	obs := observe(t, s.broker.URL())
	serving := func(id string) string {
		for _, a := range fleet.Agents() {
			if a.ID() == id {
				for _, m := range a.Models() {
					if m.Name == model {
						return m.Version
					}
				}
			}
		}
		return ""
	}
	// waitServing waits until every listed device serves ver and its job
	// for the rollout ended SUCCEEDED; it re-checks every 200 ms.
	waitServing := func(r string, devices []string, ver string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			bad := 0
			ts, err := s.Engine().Targets(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			byID := map[string]rollout.Target{}
			for _, tg := range ts {
				byID[tg.Device] = tg
			}
			example := ""
			for _, id := range devices {
				if serving(id) != ver || byID[id].JobState != "succeeded" {
					bad++
					tg := byID[id]
					g, v := obs.last(id)
					example = fmt.Sprintf("%s serves %s; target phase %d generation %d sent %v job %q %q %q; last on the wire generation %d %s",
						id, serving(id), tg.Phase, tg.Generation, tg.Sent, tg.JobStep, tg.JobState, tg.JobReason, g, v)
				}
			}
			if bad == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d devices do not serve %s with a succeeded job after %v (e.g. %s)", bad, len(devices), ver, timeout, example)
			}
			<-tick.C
		}
	}

	// Gates as the issue sets them, with a p95 ceiling of 2x: all 1,000
	// agents share this machine's two cores with other work, so latencies
	// of cohorts measured side by side still differ by up to ~1.5x when a
	// few hundred devices have just switched; v4 at 3x stays far above.
	spec := func(ver, onBreach string) rollout.Spec {
		return rollout.Spec{Model: model, Version: ver, Selector: "simulated=true", Phases: []string{"1%", "10%", "100%"},
			Bake: rollout.Duration(3 * time.Second), OnBreach: onBreach, Gates: rollout.Gates{MinRequests: 150, MaxP95Ratio: 2, Settle: rollout.Duration(3 * time.Second)}}
	}

	// Good v2: 1% → 10% → 100% and converges.
	r2, err := s.Engine().Create(ctx, spec("2.0.0", ""))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Targets+r2.Incompatible != n || r2.Incompatible == 0 || r2.Targets == 0 {
		t.Fatalf("v2 targets %d compatible + %d incompatible, want %d with some of each (Coral boards)", r2.Targets, r2.Incompatible, n)
	}
	t.Logf("v2: %d compatible, %d incompatible, phase sizes %v", r2.Targets, r2.Incompatible, r2.PhaseSizes)
	st := waitState(t, s, r2.ID, rollout.StateCompleted, 60*time.Second)
	targets, err := s.Engine().Targets(ctx, r2.ID)
	if err != nil {
		t.Fatal(err)
	}
	var compatible, incompatible []string
	for _, tg := range targets {
		if tg.Incompatible != "" {
			incompatible = append(incompatible, tg.Device)
			if !strings.Contains(tg.Incompatible, "device has coral-dev-board") {
				t.Errorf("incompatible reason of %s does not name the profile: %s", tg.Device, tg.Incompatible)
			}
		} else {
			compatible = append(compatible, tg.Device)
		}
	}
	waitServing(r2.ID, compatible, "2.0.0", 20*time.Second)
	for _, id := range incompatible {
		if v := obs.versions(id); len(v) > 0 {
			t.Errorf("incompatible device %s received desired states %v", id, v)
		}
	}
	if got, want := events(t, s.Engine(), r2.ID), []string{"create@0", "phase_dispatched@0", "promote@0", "phase_dispatched@1", "promote@1", "phase_dispatched@2", "complete@2"}; !slices.Equal(got, want) {
		t.Errorf("v2 audit %v, want %v", got, want)
	}
	for _, d := range st.Decisions {
		if d.Gates == nil || d.Gates.Verdict != rollout.VerdictPass || d.Gates.Phase.Requests < 150 || d.Gates.Control.Requests < 150 {
			t.Errorf("v2 decision %s without passing evidence: %+v", d.Action, d.Gates)
		}
	}
	t.Logf("v2 phase 1 evidence: %+v vs control %+v", st.Decisions[0].Gates.Phase, st.Decisions[0].Gates.Control)

	// Bad v3: rolled back automatically in its first phase; no device
	// outside that phase ever receives it.
	r3, err := s.Engine().Create(ctx, spec("3.0.0", ""))
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, s, r3.ID, rollout.StateRolledBack, 30*time.Second)
	if got, want := events(t, s.Engine(), r3.ID), []string{"create@0", "phase_dispatched@0", "rollback@0", "rolled_back@0"}; !slices.Equal(got, want) {
		t.Errorf("v3 audit %v, want %v", got, want)
	}
	breach := st.Decisions[0]
	if breach.Actor != "engine" || breach.Gates == nil || !gateBreached(breach.Gates, "error_rate") || breach.Gates.Phase.ErrorRate < 0.15 {
		t.Errorf("v3 rollback decision does not carry the error-rate breach: %+v", breach)
	}
	t.Logf("v3 rolled back: phase %+v, control %+v", breach.Gates.Phase, breach.Gates.Control)
	t3, _ := s.Engine().Targets(ctx, r3.ID)
	phase0 := map[string]bool{}
	var phase0IDs []string
	for _, tg := range t3 {
		if tg.Phase == 0 {
			phase0[tg.Device] = true
			phase0IDs = append(phase0IDs, tg.Device)
		} else if tg.Phase > 0 {
			t.Errorf("v3 dispatched %s in phase %d", tg.Device, tg.Phase)
		}
	}
	if len(phase0) != st.PhaseSizes[0] || st.RolledBack != len(phase0) {
		t.Errorf("v3 phase 0 has %d devices, %d rolled back; want %d", len(phase0), st.RolledBack, st.PhaseSizes[0])
	}
	waitServing(r3.ID, phase0IDs, "2.0.0", 20*time.Second)
	for _, id := range ids {
		got3 := slices.Contains(obs.versions(id), "3.0.0")
		if got3 != phase0[id] {
			t.Errorf("device %s received v3: %v; in v3's first phase: %v", id, got3, phase0[id])
		}
	}

	// Slow v4: the latency gate catches it; this rollout pauses on a
	// breach, and the operator rolls it back.
	r4, err := s.Engine().Create(ctx, spec("4.0.0", rollout.OnBreachPause))
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, s, r4.ID, rollout.StatePaused, 30*time.Second)
	pause := st.Decisions[len(st.Decisions)-1]
	if !gateBreached(pause.Gates, "p95_ratio") || gateBreached(pause.Gates, "error_rate") {
		t.Errorf("v4 paused without a p95 breach alone: %+v", pause.Gates)
	}
	t.Logf("v4 paused: p95 phase %.2f ms vs control %.2f ms", pause.Gates.Phase.P95Ms, pause.Gates.Control.P95Ms)
	if _, err := s.Engine().Act(ctx, r4.ID, rollout.ActionRollback, "p95 three times v2"); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, s, r4.ID, rollout.StateRolledBack, 10*time.Second)
	if got, want := events(t, s.Engine(), r4.ID), []string{"create@0", "phase_dispatched@0", "pause@0", "rollback@0", "rolled_back@0"}; !slices.Equal(got, want) {
		t.Errorf("v4 audit %v, want %v", got, want)
	}
	t4, _ := s.Engine().Targets(ctx, r4.ID)
	var v4IDs []string
	for _, tg := range t4 {
		if tg.Phase >= 0 {
			v4IDs = append(v4IDs, tg.Device)
		}
	}
	waitServing(r4.ID, v4IDs, "2.0.0", 20*time.Second)

	// Server restart during a rollout: v5 (good) is stopped in its second
	// phase — store, broker and engine closed, devices disconnected — and
	// resumed from the files.
	// The restart comes while phase 1 bakes, once its devices finished
	// their jobs: a device killed in the middle of its own update is
	// agent/update's crash test, not this one. A longer bake leaves room.
	spec5 := spec("5.0.0", "")
	spec5.Bake = rollout.Duration(8 * time.Second)
	r5, err := s.Engine().Create(ctx, spec5)
	if err != nil {
		t.Fatal(err)
	}
	for {
		st := waitState(t, s, r5.ID, rollout.StateRunning, 30*time.Second)
		if st.Phase == 1 && !st.BakeStarted.IsZero() {
			ts, err := s.Engine().Targets(ctx, r5.ID)
			if err != nil {
				t.Fatal(err)
			}
			done := true
			for _, tg := range ts {
				if tg.Phase == 1 && tg.JobState != "succeeded" {
					done = false
				}
			}
			if done {
				break
			}
		}
		if st.Phase > 1 {
			t.Fatal("v5 passed phase 1 before the restart")
		}
		time.Sleep(20 * time.Millisecond) // re-check interval for a state the engine reaches on its own ticks
	}
	s.restart()
	waitState(t, s, r5.ID, rollout.StateCompleted, 60*time.Second)
	if got, want := events(t, s.Engine(), r5.ID), []string{"create@0", "phase_dispatched@0", "promote@0", "phase_dispatched@1", "promote@1", "phase_dispatched@2", "complete@2"}; !slices.Equal(got, want) {
		t.Errorf("v5 audit across the restart %v, want %v", got, want)
	}
	waitServing(r5.ID, compatible, "5.0.0", 30*time.Second)

	// Every device's final state: the server's record, what it last
	// received on the wire and what it serves agree.
	for _, id := range compatible {
		d, err := s.Engine().Desired(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		gen, ver := obs.last(id)
		if len(d.Models) != 1 || d.Models[0].Version != "5.0.0" || d.Generation != gen || ver != "5.0.0" || serving(id) != "5.0.0" {
			t.Errorf("device %s: server desired %+v, last received generation %d %s, serving %s", id, d, gen, ver, serving(id))
		}
	}
	for _, id := range incompatible {
		if d, _ := s.Engine().Desired(ctx, id); d.Generation != 0 || serving(id) != "1.0.0" {
			t.Errorf("incompatible device %s has desired generation %d, serves %s", id, d.Generation, serving(id))
		}
	}
	// Memory stays bounded: server and 1,000 agents in one process.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use at the end: %d MiB (peak system %d MiB)", ms.HeapInuse>>20, ms.Sys>>20)
	if ms.HeapInuse > 1<<30 {
		t.Errorf("heap in use %d MiB, over 1 GiB", ms.HeapInuse>>20)
		if f, err := os.CreateTemp("", "scenario-heap-*.pprof"); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
			t.Logf("heap profile: %s", f.Name())
		}
	}
}

// waitOnline waits until n devices are online and said hello, checking at
// each inventory change.
func waitOnline(t *testing.T, s *server, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	ctx := context.Background()
	for {
		inv := s.Inventory()
		ch := inv.Changed()
		var ids []string
		q := inventory.Query{Status: inventory.StatusOnline, Labels: map[string]string{"simulated": "true"}, Limit: inventory.MaxLimit}
		for {
			page, err := inv.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page.Devices {
				ids = append(ids, d.ID)
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		if len(ids) == n {
			return ids
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%d of %d simulated devices online after %v", len(ids), n, timeout)
		}
	}
}
