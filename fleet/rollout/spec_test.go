package rollout

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePhase(t *testing.T) {
	for in, want := range map[string]Phase{"1%": {Percent: 1}, "0.5%": {Percent: 0.5}, "100%": {Percent: 100}, "50": {Count: 50}, " 7 ": {Count: 7}} {
		got, err := ParsePhase(in)
		if err != nil || got != want {
			t.Errorf("ParsePhase(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0%", "101%", "-1", "0", "NaN%", "1e9", "ten", "%"} {
		if _, err := ParsePhase(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePhase(%q) = %v, want ErrInvalid", in, err)
		}
	}
	// Cumulative sizes never shrink and the first phase has a device.
	if got := (Phase{Percent: 1}).cumulative(50, 0); got != 1 {
		t.Errorf("1%% of 50 = %d, want 1", got)
	}
	if got := (Phase{Count: 5}).cumulative(50, 10); got != 10 {
		t.Errorf("5 after 10 = %d, want 10", got)
	}
	if got := (Phase{Count: 500}).cumulative(50, 0); got != 50 {
		t.Errorf("500 of 50 = %d", got)
	}
}

func TestParseSelector(t *testing.T) {
	s, err := ParseSelector("site=plant-7, profile=raspberry-pi-4,ring=canary")
	if err != nil || s.Profile != "raspberry-pi-4" || s.Labels["site"] != "plant-7" || s.String() != "profile=raspberry-pi-4,ring=canary,site=plant-7" {
		t.Fatalf("got %+v %v", s, err)
	}
	for _, in := range []string{"", "site", "=x", "site=", "a=1,a=2", "profile=a,profile=b", strings.Repeat("k", 64) + "=v", "a=1,,b=2"} {
		if _, err := ParseSelector(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSelector(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func TestWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.UTC) }
	day := &Window{Start: "09:00", End: "17:00"}
	night := &Window{Start: "22:00", End: "04:00"}
	for _, c := range []struct {
		w    *Window
		t    time.Time
		want bool
	}{
		{day, at(9, 0), true}, {day, at(16, 59), true}, {day, at(17, 0), false}, {day, at(8, 59), false},
		{night, at(23, 0), true}, {night, at(3, 59), true}, {night, at(4, 0), false}, {night, at(12, 0), false},
		{nil, at(12, 0), true},
	} {
		if got := c.w.open(c.t); got != c.want {
			t.Errorf("%+v open at %s = %v", c.w, c.t.Format("15:04"), got)
		}
	}
}

func TestSpecNormalize(t *testing.T) {
	good := Spec{Model: "kws", Version: "v1.2.0", Selector: "site=a"}
	ph, err := good.normalize()
	if err != nil || len(ph) != 4 || good.Version != "1.2.0" || good.OnBreach != OnBreachRollback || good.Gates != DefaultGates || time.Duration(good.Bake) != 10*time.Minute {
		t.Fatalf("defaults: %+v %v", good, err)
	}
	for name, s := range map[string]Spec{
		"model":     {Model: "KWS", Version: "1.0.0", Selector: "a=b"},
		"version":   {Model: "kws", Version: "latest", Selector: "a=b"},
		"no target": {Model: "kws", Version: "1.0.0"},
		"two":       {Model: "kws", Version: "1.0.0", Selector: "a=b", Group: "g"},
		"device":    {Model: "kws", Version: "1.0.0", Devices: []string{"a/b"}},
		"phase":     {Model: "kws", Version: "1.0.0", Group: "g", Phases: []string{"1%", "x"}},
		"bake":      {Model: "kws", Version: "1.0.0", Group: "g", Bake: -1},
		"rate":      {Model: "kws", Version: "1.0.0", Group: "g", RatePerMinute: -5},
		"window":    {Model: "kws", Version: "1.0.0", Group: "g", Window: &Window{Start: "25:00", End: "01:00"}},
		"empty win": {Model: "kws", Version: "1.0.0", Group: "g", Window: &Window{Start: "01:00", End: "01:00"}},
		"breach":    {Model: "kws", Version: "1.0.0", Group: "g", OnBreach: "ignore"},
		"gate":      {Model: "kws", Version: "1.0.0", Group: "g", Gates: Gates{MaxErrorRate: 2}},
	} {
		if _, err := s.normalize(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"90s"`), &d); err != nil || time.Duration(d) != 90*time.Second {
		t.Fatalf("duration: %v %v", d, err)
	}
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Fatal("bad duration accepted")
	}
}

func TestEvaluate(t *testing.T) {
	g := DefaultGates
	now := time.Now()
	control := Cohort{Devices: 90, Reporting: 90, Requests: 10000, Errors: 50, ErrorRate: 0.005, P95Ms: 7}
	good := Cohort{Devices: 10, Reporting: 10, Requests: 1000, Errors: 5, ErrorRate: 0.005, P95Ms: 7.5, Succeeded: 10}
	verdictOf := func(r *Report, gate string) string {
		for _, x := range r.Gates {
			if x.Name == gate {
				return x.Verdict
			}
		}
		return "missing"
	}
	if r := evaluate(g, now, good, control, "live"); r.Verdict != VerdictPass {
		t.Fatalf("good phase: %+v", r)
	}
	few := good
	few.Requests = 100
	if r := evaluate(g, now, few, control, "live"); r.Verdict != VerdictInsufficient || verdictOf(r, "error_rate") != VerdictInsufficient {
		t.Fatalf("100 requests decide: %+v", r)
	}
	noJobs := good
	noJobs.Succeeded = 0
	if r := evaluate(g, now, noJobs, control, "live"); r.Verdict != VerdictInsufficient {
		t.Fatalf("no job outcomes passed: %+v", r)
	}
	for name, c := range map[string]struct {
		edit func(*Cohort)
		gate string
	}{
		"errors":    {func(c *Cohort) { c.ErrorRate = 0.3 }, "error_rate"},
		"relative":  {func(c *Cohort) { c.ErrorRate = 0.04 }, "error_rate_vs_control"},
		"slow":      {func(c *Cohort) { c.P95Ms = 21 }, "p95_ratio"},
		"activate":  {func(c *Cohort) { c.Failed, c.Succeeded = 2, 8 }, "activation_failures"},
		"offline":   {func(c *Cohort) { c.Offline = 2 }, "offline_after_update"},
		"fail fast": {func(c *Cohort) { c.Requests, c.Failed, c.Succeeded = 0, 5, 0 }, "activation_failures"},
	} {
		p := good
		c.edit(&p)
		r := evaluate(g, now, p, control, "live")
		if r.Verdict != VerdictBreach || verdictOf(r, c.gate) != VerdictBreach {
			t.Errorf("%s: verdict %s, %s %s", name, r.Verdict, c.gate, verdictOf(r, c.gate))
		}
	}
	// Incompatible devices are listed, not failures, and do not raise
	// the evidence needed.
	inc := Cohort{Devices: 3, Reporting: 1, Requests: 500, Incompatible: 2, Succeeded: 1, P95Ms: 7}
	if r := evaluate(g, now, inc, control, "live"); r.Verdict != VerdictPass {
		t.Fatalf("two incompatible of three: %+v", r.Gates)
	}
}

func TestAggP95(t *testing.T) {
	a := newAgg()
	// No histogram: the request-weighted mean of the windows' p95.
	a.P95Sum, a.P95Weight = 10*100+20*300, 400
	if got := a.p95(); got != 17.5 {
		t.Fatalf("fallback p95 = %v", got)
	}
	b := &agg{Bounds: []float64{1, 2, 4, 8}, Counts: []uint64{0, 90, 5, 5, 0}}
	if got := b.p95(); got != 4 {
		t.Fatalf("histogram p95 = %v, want 4 (the 95th of 100 ends the (2,4] bucket)", got)
	}
}
