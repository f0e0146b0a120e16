package console

import (
	"net/url"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/rollout"
)

// FuzzRolloutForm: the create-rollout form, as an operator's browser (or
// anyone with a session) can send it, never panics, and a form it accepts
// is a spec whose phases, bake and gates are within bounds.
func FuzzRolloutForm(f *testing.F) {
	f.Add("demo-kws@1.1.0", "plant-all", "10%, 50%, 100%", "10m", "rollback", "0.05", "100")
	f.Add("m@1", "g", "5,50", "30s", "pause", "", "")
	f.Add("@", "", ",,,", "-1s", "explode", "NaN", "1e400")
	f.Add("a@b@c", "g", "200%", "99999h", "pause", "-0", "+Inf")
	f.Add("m@1", "g", "100%", "1m", "rollback", "NaN", "1")
	f.Fuzz(func(t *testing.T, mv, group, phases, bake, onBreach, maxErr, minReq string) {
		form := formOf(url.Values{"model_version": {mv}, "group": {group}, "phases": {phases}, "bake": {bake},
			"on_breach": {onBreach}, "max_error_rate": {maxErr}, "min_requests": {minReq}})
		s, err := form.spec()
		if err != nil {
			if _, ok := err.(*fieldError); !ok {
				t.Fatalf("error %v is not a field error", err)
			}
			return
		}
		if s.Model == "" || s.Version == "" || s.Group == "" || len(s.Phases) > rollout.MaxPhases {
			t.Fatalf("accepted %+v", s)
		}
		for _, p := range s.Phases {
			if _, err := rollout.ParsePhase(p); err != nil {
				t.Fatalf("accepted phase %q: %v", p, err)
			}
		}
		if s.Gates.MaxErrorRate < 0 || s.Gates.MaxErrorRate > 1 || s.Gates.MaxErrorRate != s.Gates.MaxErrorRate {
			t.Fatalf("accepted max error rate %v", s.Gates.MaxErrorRate)
		}
	})
}

// FuzzSafeNext: the page to go to after login is always a path on this
// site.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/devices", "//evil.example", "/\\evil", "https://evil.example/", "/a\r\nSet-Cookie: x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		u, err := url.Parse(got)
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") ||
			strings.ContainsAny(got, "\r\n") || (err == nil && u.Host != "") {
			t.Fatalf("safeNext(%q) = %q", next, got)
		}
	})
}
