package rollout

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// Limits on what an operator controls.
const (
	MaxPhases        = 20
	MaxStaticDevices = 100_000
	MaxBake          = 30 * 24 * time.Hour
	MaxNameLen       = 64
	MaxReasonLen     = 512
	// MaxDecisions bounds the decisions kept with a rollout; the audit log
	// keeps all of them.
	MaxDecisions = 200
)

// Breach actions.
const (
	OnBreachPause    = "pause"
	OnBreachRollback = "rollback"
)

// Spec is what an operator asks for when creating a rollout.
type Spec struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// Target: exactly one of Group (a stored group's name), Selector
	// ("profile=raspberry-pi-4,site=plant-7") or Devices (explicit ids).
	Group    string   `json:"group,omitempty"`
	Selector string   `json:"selector,omitempty"`
	Devices  []string `json:"devices,omitempty"`
	// Phases are cumulative shares of the targeted devices: "1%", "10%",
	// "100%", or counts "5", "50". Default 1%, 10%, 50%, 100%.
	Phases []string `json:"phases,omitempty"`
	// Bake is how long each phase runs, once fully dispatched, before its
	// gates may promote it. Default 10 minutes.
	Bake Duration `json:"bake,omitempty"`
	// RatePerMinute bounds desired states sent per minute; 0 is unbounded.
	RatePerMinute int `json:"rate_per_minute,omitempty"`
	// Window restricts dispatching to a daily UTC time window.
	Window *Window `json:"window,omitempty"`
	// OnBreach is "rollback" (default) or "pause".
	OnBreach string `json:"on_breach,omitempty"`
	// Holdback is how many devices the final phase keeps on the previous
	// version as its live control, and updates once the phase passes:
	// without it the last phase could only be compared with an earlier
	// phase's control, measured at another time. Default 5 % of the
	// targets (at least Gates.MinDevices); -1 for none.
	Holdback int   `json:"holdback,omitempty"`
	Gates    Gates `json:"gates"`
}

// Window is a daily maintenance window in UTC, "HH:MM" to "HH:MM"; an end
// before the start spans midnight.
type Window struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Gates are the thresholds a phase must meet. Zero fields take defaults
// (DefaultGates); a phase passes only when every gate has enough evidence.
type Gates struct {
	// MinDevices is how many devices of the phase must report the new
	// version (capped at the phase size).
	MinDevices int `json:"min_devices,omitempty"`
	// MinReportingShare is the share of the phase's devices that must
	// report the new version: in a large phase a handful of devices is not
	// yet evidence. The larger of the two minimums applies.
	MinReportingShare float64 `json:"min_reporting_share,omitempty"`
	// MinRequests is how many requests the phase, and the control cohort,
	// must have served since the phase started.
	MinRequests uint64 `json:"min_requests,omitempty"`
	// MaxErrorRate is the absolute ceiling of the phase's error rate.
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxErrorRatio bounds the phase's error rate relative to control:
	// phase <= control*ratio + ErrorRateSlack, so a control with no errors
	// does not make a single error a breach.
	MaxErrorRatio  float64 `json:"max_error_ratio,omitempty"`
	ErrorRateSlack float64 `json:"error_rate_slack,omitempty"`
	// MaxP95Ratio bounds the phase's p95 latency relative to control.
	MaxP95Ratio float64 `json:"max_p95_ratio,omitempty"`
	// MaxActivationFailures bounds the share of the phase's devices whose
	// update job ended FAILED or ROLLED_BACK.
	MaxActivationFailures float64 `json:"max_activation_failures,omitempty"`
	// MaxOffline bounds the share of the phase's devices that were online
	// when dispatched and are offline now.
	MaxOffline float64 `json:"max_offline,omitempty"`
	// Settle is how long after a phase is fully dispatched its telemetry
	// starts to count (default none): devices still downloading and
	// switching are not what the new version does.
	Settle Duration `json:"settle,omitempty"`
	// OfflineGrace is how long a device must have been unseen before it
	// counts as lost (default 1 minute), so a reconnect, or a server
	// restart that marks every device offline until it reconnects, is not
	// taken for a device the update broke.
	OfflineGrace Duration `json:"offline_grace,omitempty"`
}

// DefaultGates are the thresholds used for zero fields of Gates.
var DefaultGates = Gates{
	MinDevices: 3, MinReportingShare: 0.5, MinRequests: 200, MaxErrorRate: 0.05, MaxErrorRatio: 2, ErrorRateSlack: 0.01,
	MaxP95Ratio: 1.5, MaxActivationFailures: 0.1, MaxOffline: 0.1, OfflineGrace: Duration(time.Minute),
}

func (g Gates) withDefaults() Gates {
	d := DefaultGates
	if g.MinDevices == 0 {
		g.MinDevices = d.MinDevices
	}
	if g.MinRequests == 0 {
		g.MinRequests = d.MinRequests
	}
	if g.MinReportingShare == 0 {
		g.MinReportingShare = d.MinReportingShare
	}
	if g.MaxErrorRate == 0 {
		g.MaxErrorRate = d.MaxErrorRate
	}
	if g.MaxErrorRatio == 0 {
		g.MaxErrorRatio = d.MaxErrorRatio
	}
	if g.ErrorRateSlack == 0 {
		g.ErrorRateSlack = d.ErrorRateSlack
	}
	if g.MaxP95Ratio == 0 {
		g.MaxP95Ratio = d.MaxP95Ratio
	}
	if g.MaxActivationFailures == 0 {
		g.MaxActivationFailures = d.MaxActivationFailures
	}
	if g.MaxOffline == 0 {
		g.MaxOffline = d.MaxOffline
	}
	if g.OfflineGrace == 0 {
		g.OfflineGrace = d.OfflineGrace
	}
	return g
}

func (g Gates) validate() error {
	bad := func(f string, v any) error {
		return fmt.Errorf("%w: gates.%s %v is out of range", ErrInvalid, f, v)
	}
	if g.MinDevices < 0 || g.MinDevices > MaxStaticDevices {
		return bad("min_devices", g.MinDevices)
	}
	if g.Settle < 0 || time.Duration(g.Settle) > MaxBake {
		return bad("settle", time.Duration(g.Settle))
	}
	if g.OfflineGrace < 0 || time.Duration(g.OfflineGrace) > MaxBake {
		return bad("offline_grace", time.Duration(g.OfflineGrace))
	}
	for _, f := range []struct {
		name string
		v    float64
		max  float64
	}{
		{"min_reporting_share", g.MinReportingShare, 1}, {"max_error_rate", g.MaxErrorRate, 1}, {"max_error_ratio", g.MaxErrorRatio, 1e6}, {"error_rate_slack", g.ErrorRateSlack, 1},
		{"max_p95_ratio", g.MaxP95Ratio, 1e6}, {"max_activation_failures", g.MaxActivationFailures, 1}, {"max_offline", g.MaxOffline, 1},
	} {
		if math.IsNaN(f.v) || f.v < 0 || f.v > f.max {
			return bad(f.name, f.v)
		}
	}
	return nil
}

// Duration is a time.Duration that reads and writes as "10m", "30s".
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 10m", truncate(string(b)))
	}
	*d = Duration(v)
	return nil
}

// Phase is one step of a rollout: a cumulative share of the targets.
type Phase struct {
	Percent float64 `json:"percent,omitempty"`
	Count   int     `json:"count,omitempty"`
}

func (p Phase) String() string {
	if p.Count > 0 {
		return strconv.Itoa(p.Count)
	}
	return strconv.FormatFloat(p.Percent, 'f', -1, 64) + "%"
}

// ParsePhase reads "10%" or "50".
func ParsePhase(s string) (Phase, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(v) || v <= 0 || v > 100 {
			return Phase{}, fmt.Errorf("%w: phase %q: a percentage must be above 0 and at most 100", ErrInvalid, truncate(s))
		}
		return Phase{Percent: v}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > MaxStaticDevices {
		return Phase{}, fmt.Errorf("%w: phase %q is neither a percentage (10%%) nor a device count (1..%d)", ErrInvalid, truncate(s), MaxStaticDevices)
	}
	return Phase{Count: n}, nil
}

// cumulative returns how many of n targets phase p covers, at least prev.
func (p Phase) cumulative(n, prev int) int {
	c := p.Count
	if p.Count == 0 {
		c = int(math.Ceil(p.Percent * float64(n) / 100))
	}
	return max(prev, min(n, max(c, 1)))
}

// parseClock reads "HH:MM" as minutes after midnight.
func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("%w: window time %q is not HH:MM (UTC)", ErrInvalid, truncate(s))
	}
	return t.Hour()*60 + t.Minute(), nil
}

// open reports whether t falls in the window.
func (w *Window) open(t time.Time) bool {
	if w == nil {
		return true
	}
	s, err1 := parseClock(w.Start)
	e, err2 := parseClock(w.End)
	if err1 != nil || err2 != nil {
		return false // validated at create; a bad stored window dispatches nothing
	}
	t = t.UTC()
	m := t.Hour()*60 + t.Minute()
	if s <= e {
		return m >= s && m < e
	}
	return m >= s || m < e
}

// normalize validates s and fills defaults; it returns the parsed phases.
func (s *Spec) normalize() ([]Phase, error) {
	if !proto.ValidName(s.Model) {
		return nil, fmt.Errorf("%w: model %q is not a model name", ErrInvalid, truncate(s.Model))
	}
	s.Version = strings.TrimPrefix(s.Version, "v")
	if !proto.ValidSemver(s.Version) {
		return nil, fmt.Errorf("%w: version %q is not a MAJOR.MINOR.PATCH version", ErrInvalid, truncate(s.Version))
	}
	n := 0
	if s.Group != "" {
		n++
		if !proto.ValidName(s.Group) {
			return nil, fmt.Errorf("%w: group %q is not a group name (lowercase letters, digits, '.', '_', '-')", ErrInvalid, truncate(s.Group))
		}
	}
	if s.Selector != "" {
		n++
		if _, err := ParseSelector(s.Selector); err != nil {
			return nil, err
		}
	}
	if len(s.Devices) > 0 {
		n++
		if err := checkDevices(s.Devices); err != nil {
			return nil, err
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("%w: name exactly one target: group, selector or devices", ErrInvalid)
	}
	if len(s.Phases) == 0 {
		s.Phases = []string{"1%", "10%", "50%", "100%"}
	}
	if len(s.Phases) > MaxPhases {
		return nil, fmt.Errorf("%w: %d phases, limit %d", ErrInvalid, len(s.Phases), MaxPhases)
	}
	phases := make([]Phase, len(s.Phases))
	for i, p := range s.Phases {
		ph, err := ParsePhase(p)
		if err != nil {
			return nil, err
		}
		phases[i] = ph
	}
	if s.Bake == 0 {
		s.Bake = Duration(10 * time.Minute)
	}
	if s.Bake < 0 || time.Duration(s.Bake) > MaxBake {
		return nil, fmt.Errorf("%w: bake %v is outside 0..%v", ErrInvalid, time.Duration(s.Bake), MaxBake)
	}
	if s.RatePerMinute < 0 || s.RatePerMinute > 1_000_000 {
		return nil, fmt.Errorf("%w: rate_per_minute %d is outside 0..1000000", ErrInvalid, s.RatePerMinute)
	}
	if s.Holdback < -1 || s.Holdback > MaxStaticDevices {
		return nil, fmt.Errorf("%w: holdback %d is outside -1..%d", ErrInvalid, s.Holdback, MaxStaticDevices)
	}
	if s.Window != nil {
		if _, err := parseClock(s.Window.Start); err != nil {
			return nil, err
		}
		if _, err := parseClock(s.Window.End); err != nil {
			return nil, err
		}
		if s.Window.Start == s.Window.End {
			return nil, fmt.Errorf("%w: window %s-%s is empty", ErrInvalid, s.Window.Start, s.Window.End)
		}
	}
	switch s.OnBreach {
	case "":
		s.OnBreach = OnBreachRollback
	case OnBreachPause, OnBreachRollback:
	default:
		return nil, fmt.Errorf("%w: on_breach %q is neither pause nor rollback", ErrInvalid, truncate(s.OnBreach))
	}
	if err := s.Gates.validate(); err != nil {
		return nil, err
	}
	s.Gates = s.Gates.withDefaults()
	return phases, nil
}

func checkDevices(ids []string) error {
	if len(ids) > MaxStaticDevices {
		return fmt.Errorf("%w: %d devices, limit %d", ErrLimit, len(ids), MaxStaticDevices)
	}
	for i, id := range ids {
		if err := proto.ValidateDeviceID(id); err != nil {
			return fmt.Errorf("%w: devices[%d]: %v", ErrInvalid, i, err)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
