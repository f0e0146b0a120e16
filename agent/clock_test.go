package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/clocktest"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// With a manual clock, windows close exactly when the clock says so, on a
// fixed grid, and carry exactly the requests made inside them.
func TestWindowsFollowTheClock(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	cfg.Clock = clk
	cfg.TelemetryInterval = 10 * time.Second
	a, _ := start(t, cfg)
	b.waitFor("hello", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) == 1 })

	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := wctx.Done()
	out := []agentrt.Tensor{{}}
	for i := 1; i <= 3; i++ {
		for j := 0; j < i; j++ {
			if err := a.Infer(context.Background(), "kws", simulators.Input(), out); err != nil {
				t.Fatal(err)
			}
		}
		if !clk.WaitPending(1, done) {
			t.Fatal("the telemetry loop never waited on the clock")
		}
		// Two steps: the timer fires at the boundary, not at the first step.
		clk.Advance(9 * time.Second)
		clk.Advance(time.Second)
		b.waitFor("window", 10*time.Second, func(ms []received) bool { return len(seqs(ms)) == i })
	}
	msgs := b.waitFor("3 windows", time.Second, func(ms []received) bool { return len(seqs(ms)) == 3 })
	for i, w := range of[*proto.TelemetryWindow](msgs, proto.KindTelemetry) {
		start := t0.Add(time.Duration(i) * 10 * time.Second).UnixMilli()
		if w.GetSeq() != uint64(i+1) || w.GetStartUnixMs() != start || w.GetEndUnixMs() != start+10_000 {
			t.Errorf("window %d: seq %d, [%d, %d], want [%d, %d]", i, w.GetSeq(), w.GetStartUnixMs(), w.GetEndUnixMs(), start, start+10_000)
		}
		if len(w.GetModels()) != 1 || w.GetModels()[0].GetRequests() != uint64(i+1) {
			t.Errorf("window %d models %v, want %d requests", i, w.GetModels(), i+1)
		}
	}
}
