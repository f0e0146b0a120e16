package rollout_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// TestScenario is issue 5 §5 on the server side, with 1,000 simulated
// devices (the real agent, simulated hardware and backend) on the embedded
// broker. See docs/rollouts.md for what it proves and what the stand-in
// for agent/update does.
func TestScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("scenario with 1,000 simulated devices; skipped in -short")
	}
	n := 1000
	s := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	fleet, err := simulators.New(simulators.Config{Devices: n, BrokerURL: s.broker.URL(), Seed: 5, TelemetryInterval: time.Hour,
		Ramp: 2 * time.Second, Models: []simulators.Model{{Name: model, Version: "1.0.0"}}})
	if err != nil {
		t.Fatal(err)
	}
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(ctx) }()
	defer func() { cancel(); <-fleetDone }()

	// Every device is online and said hello (readiness: the inventory's count, checked
	// at each inventory change).
	var ids []string
	deadline := time.Now().Add(45 * time.Second)
	for {
		ch := s.inv.Changed()
		ids = ids[:0]
		q := inventory.Query{Status: inventory.StatusOnline, Labels: map[string]string{"simulated": "true"}, Limit: inventory.MaxLimit}
		for {
			page, err := s.inv.List(ctx, q)
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
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d simulated devices online after 45 s", len(ids), n)
		}
		select {
		case <-ch:
		case <-time.After(time.Second):
		}
	}

	devs := newDevices(s, ids)
	obs := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(s.broker.URL()).SetClientID("scenario-observer").SetOrderMatters(true))
	if tok := obs.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	defer obs.Disconnect(250)
	if tok := obs.Subscribe(proto.Subscription(proto.KindDesired), 1, devs.onDesired); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	telCtx, stopTel := context.WithCancel(ctx)
	var workers sync.WaitGroup
	workers.Add(1)
	go func() { defer workers.Done(); devs.telemetry(telCtx, 200*time.Millisecond, 9) }()
	for range 8 {
		workers.Add(1)
		go func() { defer workers.Done(); devs.apply(telCtx) }()
	}
	defer func() { stopTel(); workers.Wait() }()

	spec := func(ver, onBreach string) rollout.Spec {
		return rollout.Spec{Model: model, Version: ver, Selector: "simulated=true", Phases: []string{"1%", "10%", "100%"},
			Bake: rollout.Duration(2 * time.Second), OnBreach: onBreach, Gates: rollout.Gates{MinRequests: 200}}
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
	st := waitState(t, s, r2.ID, rollout.StateCompleted, 40*time.Second)
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
	devs.waitApplied(t, compatible, "2.0.0", 10*time.Second)
	for _, id := range incompatible {
		if v := devs.versionsReceived(id); len(v) > 0 {
			t.Errorf("incompatible device %s received desired states %v", id, v)
		}
	}
	if got, want := events(t, s.Engine(), r2.ID), []string{"create@0", "phase_dispatched@0", "promote@0", "phase_dispatched@1", "promote@1", "phase_dispatched@2", "complete@2"}; !slices.Equal(got, want) {
		t.Errorf("v2 audit %v, want %v", got, want)
	}
	for _, d := range st.Decisions {
		if d.Gates == nil || d.Gates.Verdict != rollout.VerdictPass || d.Gates.Phase.Requests < 200 || d.Gates.Control.Requests < 200 {
			t.Errorf("v2 decision %s without passing evidence: %+v", d.Action, d.Gates)
		}
	}

	// Bad v3: rolled back automatically in its first phase; no device
	// outside that phase ever receives it.
	r3, err := s.Engine().Create(ctx, spec("3.0.0", ""))
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, s, r3.ID, rollout.StateRolledBack, 20*time.Second)
	if got, want := events(t, s.Engine(), r3.ID), []string{"create@0", "phase_dispatched@0", "rollback@0", "rolled_back@0"}; !slices.Equal(got, want) {
		t.Errorf("v3 audit %v, want %v", got, want)
	}
	breach := st.Decisions[0]
	if breach.Actor != "engine" || breach.Gates == nil || !gateBreached(breach.Gates, "error_rate") || breach.Gates.Phase.ErrorRate < 0.2 {
		t.Errorf("v3 rollback decision does not carry the error-rate breach: %+v", breach)
	}
	t3, _ := s.Engine().Targets(ctx, r3.ID)
	phase0 := map[string]bool{}
	for _, tg := range t3 {
		if tg.Phase == 0 {
			phase0[tg.Device] = true
		} else if tg.Phase > 0 {
			t.Errorf("v3 dispatched %s in phase %d", tg.Device, tg.Phase)
		}
	}
	if len(phase0) != st.PhaseSizes[0] || st.RolledBack != len(phase0) {
		t.Errorf("v3 phase 0 has %d devices, %d rolled back; want %d", len(phase0), st.RolledBack, st.PhaseSizes[0])
	}
	devs.waitApplied(t, compatible, "2.0.0", 10*time.Second)
	for _, id := range ids {
		got3 := slices.Contains(devs.versionsReceived(id), "3.0.0")
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
	st = waitState(t, s, r4.ID, rollout.StatePaused, 20*time.Second)
	pause := st.Decisions[len(st.Decisions)-1]
	if !gateBreached(pause.Gates, "p95_ratio") || gateBreached(pause.Gates, "error_rate") {
		t.Errorf("v4 paused without a p95 breach alone: %+v", pause.Gates)
	}
	t.Logf("v4 paused: p95 phase %.2f ms vs control %.2f ms", pause.Gates.Phase.P95Ms, pause.Gates.Control.P95Ms)
	if _, err := s.Engine().Act(ctx, r4.ID, rollout.ActionRollback, "p95 three times v2"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, r4.ID, rollout.StateRolledBack, 10*time.Second)
	if got, want := events(t, s.Engine(), r4.ID), []string{"create@0", "phase_dispatched@0", "pause@0", "rollback@0", "rolled_back@0"}; !slices.Equal(got, want) {
		t.Errorf("v4 audit %v, want %v", got, want)
	}
	devs.waitApplied(t, compatible, "2.0.0", 10*time.Second)

	// Server restart during a rollout: v5 (good) is stopped in its second
	// phase and resumed from the database by a new engine.
	r5, err := s.Engine().Create(ctx, spec("5.0.0", ""))
	if err != nil {
		t.Fatal(err)
	}
	for {
		st := waitState(t, s, r5.ID, rollout.StateRunning, 5*time.Second)
		if st.Phase == 1 && !st.BakeStarted.IsZero() {
			break
		}
		if st.Phase > 1 {
			t.Fatal("v5 passed phase 1 before the restart")
		}
		time.Sleep(20 * time.Millisecond) // re-check interval for a state the engine reaches on its own ticks
	}
	s.stopEngine()
	s.startEngine()
	waitState(t, s, r5.ID, rollout.StateCompleted, 30*time.Second)
	if got, want := events(t, s.Engine(), r5.ID), []string{"create@0", "phase_dispatched@0", "promote@0", "phase_dispatched@1", "promote@1", "phase_dispatched@2", "complete@2"}; !slices.Equal(got, want) {
		t.Errorf("v5 audit across the restart %v, want %v", got, want)
	}
	devs.waitApplied(t, compatible, "5.0.0", 10*time.Second)

	// Every device's final state: the server's record, what it last
	// received on the wire, and what it serves agree.
	for _, id := range compatible {
		d, err := s.Engine().Desired(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		gen, ver := devs.lastReceived(id)
		if len(d.Models) != 1 || d.Models[0].Version != "5.0.0" || d.Generation != gen || ver != "5.0.0" {
			t.Errorf("device %s: server desired %+v, last received generation %d %s", id, d, gen, ver)
		}
	}
	for _, id := range incompatible {
		if d, _ := s.Engine().Desired(ctx, id); d.Generation != 0 {
			t.Errorf("incompatible device %s has desired generation %d", id, d.Generation)
		}
	}
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
