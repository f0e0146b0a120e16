package rollout

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// maxAggDevices bounds the reporting set of one aggregate (the group size
// bounds it anyway; this guards the persisted snapshot).
const maxAggDevices = MaxStaticDevices

// agg sums one cohort's telemetry for the version(s) watched. Histograms
// with the same bounds merge exactly; windows whose bounds differ from the
// first ones seen fall back to a request-weighted mean of their p95.
type agg struct {
	Reporting map[string]bool `json:"reporting"`
	Requests  uint64          `json:"requests"`
	Errors    uint64          `json:"errors"`
	Bounds    []float64       `json:"bounds,omitempty"`
	Counts    []uint64        `json:"counts,omitempty"`
	P95Sum    float64         `json:"p95_sum,omitempty"`
	P95Weight uint64          `json:"p95_weight,omitempty"`
}

func newAgg() *agg { return &agg{Reporting: map[string]bool{}} }

func (a *agg) add(device string, ms *proto.ModelStats) {
	n := ms.GetRequests()
	if n == 0 {
		return
	}
	if len(a.Reporting) < maxAggDevices {
		a.Reporting[device] = true
	}
	a.Requests += n
	a.Errors += min(ms.GetErrors(), n)
	h := ms.GetLatency()
	if h != nil && len(h.GetCounts()) == len(h.GetBoundsMs())+1 && len(h.GetBoundsMs()) > 0 {
		if a.Counts == nil {
			a.Bounds = slices.Clone(h.GetBoundsMs())
			a.Counts = make([]uint64, len(h.GetCounts()))
		}
		if slices.Equal(a.Bounds, h.GetBoundsMs()) {
			for i, c := range h.GetCounts() {
				a.Counts[i] += c
			}
			return
		}
	}
	a.P95Sum += ms.GetP95Ms() * float64(n)
	a.P95Weight += n
}

// p95 estimates the 95th percentile in milliseconds: from the merged
// histogram (linear within the bucket), blended with the fallback mean by
// weight.
func (a *agg) p95() float64 {
	var total uint64
	for _, c := range a.Counts {
		total += c
	}
	hist := 0.0
	if total > 0 {
		rank := 0.95 * float64(total)
		var cum float64
		for i, c := range a.Counts {
			if cum+float64(c) >= rank && c > 0 {
				lo := 0.0
				if i > 0 {
					lo = a.Bounds[i-1]
				}
				if i == len(a.Bounds) {
					hist = a.Bounds[len(a.Bounds)-1]
				} else {
					hist = lo + (a.Bounds[i]-lo)*(rank-cum)/float64(c)
				}
				break
			}
			cum += float64(c)
		}
	}
	if a.P95Weight == 0 {
		return hist
	}
	fb := a.P95Sum / float64(a.P95Weight)
	return (hist*float64(total) + fb*float64(a.P95Weight)) / float64(total+a.P95Weight)
}

func (a *agg) cohort(devices int) Cohort {
	c := Cohort{Devices: devices}
	if a == nil {
		return c
	}
	c.Reporting, c.Requests, c.Errors = len(a.Reporting), a.Requests, a.Errors
	if a.Requests > 0 {
		c.ErrorRate = float64(a.Errors) / float64(a.Requests)
	}
	c.P95Ms = a.p95()
	return c
}

// evaluate applies the gates to a phase and its control. phase.Devices is
// the number of devices the phase dispatched; Failed, Incompatible, Offline
// and Succeeded come from job reports and presence.
func evaluate(g Gates, now time.Time, phase, control Cohort, controlSource string) *Report {
	rep := &Report{Time: now, Phase: phase, Control: control, ControlSource: controlSource}
	add := func(name string, value, threshold float64, verdict, detail string) {
		rep.Gates = append(rep.Gates, GateResult{Name: name, Value: value, Threshold: threshold, Verdict: verdict, Detail: detail})
	}
	eligible := phase.Devices - phase.Incompatible
	needDevices := min(max(g.MinDevices, int(math.Ceil(g.MinReportingShare*float64(eligible)))), max(eligible, 1))
	phaseEnough := phase.Requests >= g.MinRequests && phase.Reporting >= needDevices
	controlEnough := control.Requests >= g.MinRequests

	v := VerdictInsufficient
	if phase.Reporting >= needDevices {
		v = VerdictPass
	}
	add("devices_reporting", float64(phase.Reporting), float64(needDevices), v, fmt.Sprintf("%d of %d dispatched devices report the new version", phase.Reporting, phase.Devices))
	v = VerdictInsufficient
	if phase.Requests >= g.MinRequests {
		v = VerdictPass
	}
	add("requests", float64(phase.Requests), float64(g.MinRequests), v, fmt.Sprintf("phase served %d requests, control %d", phase.Requests, control.Requests))

	v = VerdictInsufficient
	if phaseEnough {
		v = verdict(phase.ErrorRate <= g.MaxErrorRate)
	}
	add("error_rate", phase.ErrorRate, g.MaxErrorRate, v, "absolute ceiling")

	v = VerdictInsufficient
	limit := control.ErrorRate*g.MaxErrorRatio + g.ErrorRateSlack
	if phaseEnough && controlEnough {
		v = verdict(phase.ErrorRate <= limit)
	}
	add("error_rate_vs_control", phase.ErrorRate, limit, v, fmt.Sprintf("control %.4f × %.2f + %.3f", control.ErrorRate, g.MaxErrorRatio, g.ErrorRateSlack))

	v = VerdictInsufficient
	ratio := 0.0
	if control.P95Ms > 0 {
		ratio = phase.P95Ms / control.P95Ms
	}
	if phaseEnough && controlEnough && control.P95Ms > 0 {
		v = verdict(ratio <= g.MaxP95Ratio)
	}
	add("p95_ratio", ratio, g.MaxP95Ratio, v, fmt.Sprintf("phase p95 %.2f ms, control %.2f ms", phase.P95Ms, control.P95Ms))

	fail := 0.0
	if eligible > 0 {
		fail = float64(phase.Failed) / float64(eligible)
	}
	v = VerdictInsufficient
	switch {
	case fail > g.MaxActivationFailures:
		v = VerdictBreach // failures are evidence on their own
	case phase.Succeeded+phase.Failed >= needDevices:
		v = VerdictPass
	}
	add("activation_failures", fail, g.MaxActivationFailures, v, fmt.Sprintf("%d failed or rolled back, %d succeeded, %d incompatible, of %d dispatched", phase.Failed, phase.Succeeded, phase.Incompatible, phase.Devices))

	off := 0.0
	if phase.Devices > 0 {
		off = float64(phase.Offline) / float64(phase.Devices)
	}
	v = verdict(off <= g.MaxOffline)
	if phase.Devices == 0 {
		v = VerdictInsufficient
	}
	add("offline_after_update", off, g.MaxOffline, v, fmt.Sprintf("%d of %d went offline after dispatch", phase.Offline, phase.Devices))

	rep.Verdict = VerdictPass
	for _, gr := range rep.Gates {
		if gr.Verdict == VerdictBreach {
			rep.Verdict = VerdictBreach
			break
		}
		if gr.Verdict == VerdictInsufficient {
			rep.Verdict = VerdictInsufficient
		}
	}
	return rep
}

func verdict(ok bool) string {
	if ok {
		return VerdictPass
	}
	return VerdictBreach
}

// breached names the breached gates of a report, for reasons and logs.
func (r *Report) breached() string {
	var s []string
	for _, g := range r.Gates {
		if g.Verdict == VerdictBreach {
			s = append(s, fmt.Sprintf("%s %.4g > %.4g", g.Name, g.Value, g.Threshold))
		}
	}
	return fmt.Sprint(s)
}
