package rollout_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/proto"
)

// BenchmarkRollout measures, per fleet size, the two latencies issue 5
// asks for, on real components (bbolt store and inventory, registry,
// rollout database, embedded broker publishing through its inline client
// with no subscriber):
//
//   - start-ms: from Create to every target's desired state recorded and
//     published (one phase of 100 %, no rate limit), i.e. Create plus the
//     engine step that dispatches;
//   - rollback-ms: from the step that sees a breach (every device reported
//     its job succeeded, then 50 % errors) to every device's rollback
//     desired state published.
func BenchmarkRollout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			en := newEnv(b, n)
			ctx := context.Background()
			var start, back time.Duration
			for i := 0; b.Loop(); i++ {
				t0 := time.Now()
				r, err := en.e.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Selector: "profile=raspberry-pi-4", Phases: []string{"100%"}, Holdback: -1,
					Gates: rollout.Gates{MinRequests: 10, MinDevices: 1}})
				if err != nil {
					b.Fatal(err)
				}
				en.step()
				start += time.Since(t0)
				s := en.get(r.ID)
				if s.Dispatched != s.Targets || s.BakeStarted.IsZero() {
					b.Fatalf("dispatched %d of %d", s.Dispatched, s.Targets)
				}
				ts, _ := en.e.Targets(ctx, r.ID)
				// Job reports from many devices at once, as the broker
				// delivers them, so the database batches fill.
				var wg sync.WaitGroup
				for w := range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := w; j < len(ts); j += 64 {
							t := ts[j]
							if t.JobID != "" {
								en.e.HandleJob(ctx, &proto.JobProgress{DeviceId: t.Device, JobId: t.JobID, State: proto.JobProgress_STATE_SUCCEEDED, Step: proto.JobProgress_STEP_DONE})
							}
						}
					}()
				}
				wg.Wait()
				for _, t := range ts {
					if !t.Sent && t.Incompatible == "" {
						b.Fatalf("%s not sent", t.Device)
					}
					en.e.HandleTelemetry(&proto.TelemetryWindow{DeviceId: t.Device, Seq: uint64(i + 1), Models: []*proto.ModelStats{{Name: model, Version: "2.0.0", Requests: 10, Errors: 5}}})
				}
				t1 := time.Now()
				en.step()
				back += time.Since(t1)
				if s := en.get(r.ID); s.State != rollout.StateRolledBack || s.RolledBack != s.Targets {
					b.Fatalf("state %s, %d of %d rolled back", s.State, s.RolledBack, s.Targets)
				}
			}
			b.ReportMetric(float64(start.Milliseconds())/float64(b.N), "start-ms")
			b.ReportMetric(float64(back.Milliseconds())/float64(b.N), "rollback-ms")
			b.ReportMetric(float64(start.Microseconds())/float64(b.N)/float64(n*9/10), "start-µs/device")
		})
	}
}
