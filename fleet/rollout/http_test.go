package rollout_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/rollout"
)

func TestHTTPAPI(t *testing.T) {
	en := newEnv(t, 20)
	h := en.e.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, "alice")))
	}))
	defer srv.Close()
	c, err := rollout.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.PutGroup(ctx, rollout.Group{Name: "pis", Selector: "profile=raspberry-pi-4"}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Group: "pis", Phases: []string{"50%", "100%"}, Bake: rollout.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "r1" || s.State != rollout.StateRunning || s.Targets != 18 {
		t.Fatalf("created %+v", s.Rollout)
	}
	en.step()
	got, err := c.Get(ctx, "r1")
	if err != nil || got.Dispatched != 9 || got.Live == nil || len(got.Live.Gates) == 0 {
		t.Fatalf("status %+v %v", got, err)
	}
	ts, err := c.Targets(ctx, "r1", "dispatched")
	if err != nil || len(ts) != 9 {
		t.Fatalf("dispatched targets %d %v", len(ts), err)
	}
	if s, err := c.Act(ctx, "r1", rollout.ActionPause, "checking dashboards"); err != nil || s.State != rollout.StatePaused {
		t.Fatalf("pause: %+v %v", s, err)
	}
	as, err := c.Audit(ctx, "r1")
	if err != nil || len(as) != 3 || as[2].Event != "pause" || as[2].User != "alice" || as[0].User != "alice" || !strings.HasPrefix(as[2].Detail, "checking dashboards [phase 9 devices") {
		t.Fatalf("audit %+v %v", as, err)
	}
	rs, err := c.List(ctx)
	if err != nil || len(rs) != 1 {
		t.Fatalf("list %v %v", rs, err)
	}
	// Errors: status codes and messages a user can act on.
	for _, tc := range []struct {
		do   func() error
		code int
		msg  string
	}{
		{func() error { _, err := c.Get(ctx, "r9"); return err }, 404, "rollout \"r9\""},
		{func() error { _, err := c.Act(ctx, "r1", "explode", ""); return err }, 400, "unknown action"},
		{func() error { _, err := c.Act(ctx, "r1", rollout.ActionPause, ""); return err }, 409, "not running"},
		{func() error { _, err := c.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0"}); return err }, 400, "exactly one target"},
		{func() error {
			_, err := c.Create(ctx, rollout.Spec{Model: model, Version: "7.0.0", Group: "pis"})
			return err
		}, 404, "push it first"},
		{func() error {
			_, err := c.Create(ctx, rollout.Spec{Model: model, Version: "2.0.0", Group: "pis"})
			return err
		}, 409, "rollout r1"},
		{func() error { _, err := c.Targets(ctx, "r1", "weird"); return err }, 400, "state"},
	} {
		err := tc.do()
		var se *rollout.StatusError
		if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(se.Msg, tc.msg) {
			t.Errorf("got %v, want %d with %q", err, tc.code, tc.msg)
		}
	}
	resp, err := http.Post(srv.URL+"/api/v1/rollouts", "application/json", strings.NewReader(`{"model":"demo-kws","unknown":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("unknown field: %d", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/api/v1/devices/d000/desired")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("desired: %d", resp.StatusCode)
	}
}
