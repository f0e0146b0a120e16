package console_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/console"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

func newInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.New(context.Background(), storetest.Open(t, store.Options{}), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func hello(t *testing.T, inv *inventory.Inventory, id string, labels map[string]string) {
	t.Helper()
	h := &proto.Hello{ProtocolVersion: 1, DeviceId: id, Session: 1, FirmwareProfile: "raspberry-pi-5", Labels: labels,
		Models: []*proto.InstalledModel{{Name: "kws", Version: "2.0.0", Active: true}}}
	if err := inv.Handle(context.Background(), id, proto.Topic(id, proto.KindHello), proto.MustEncode(h)); err != nil {
		t.Fatal(err)
	}
}

// serve runs the console behind the real auth.Wrap and returns the server
// and a session cookie of an admin.
func serve(t testing.TB, inv *inventory.Inventory) (*httptest.Server, *http.Cookie) {
	t.Helper()
	a := newAuth(t)
	c, err := console.New(console.Options{Inventory: inv, Auth: a, EventInterval: time.Millisecond, TickInterval: time.Hour})
	if err != nil {
		t.Fatalf("console.New with the embedded templates: %v", err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(a.Wrap(mux, nil))
	t.Cleanup(srv.Close)
	return srv, adminCookie(t, a)
}

func newAuth(t testing.TB) *auth.Auth {
	t.Helper()
	st := storetest.Open(t, store.Options{})
	a, err := auth.Open(auth.Options{DB: st.DB(), BcryptCost: bcrypt.MinCost})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func adminCookie(t testing.TB, a *auth.Auth) *http.Cookie {
	t.Helper()
	if err := a.CreateUser(context.Background(), "root", "root-password", auth.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	tok, _, err := a.Login(context.Background(), "root", "root-password", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: auth.SessionCookie, Value: tok.Reveal()}
}

func get(t testing.TB, ck *http.Cookie, u string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ck != nil {
		req.AddCookie(ck)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestBrokenTemplateFailsAtStart(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"syntax": {
			"templates/layout.html":  {Data: []byte(`{{define "layout"}}{{template "content" .}}{{end}}`)},
			"templates/devices.html": {Data: []byte(`{{define "content"}}{{range .Devices}}{{end}`)},
		},
		"missing page": {
			"templates/layout.html": {Data: []byte(`{{define "layout"}}{{end}}`)},
		},
		"no content block": {
			"templates/layout.html":  {Data: []byte(`{{define "layout"}}{{end}}`)},
			"templates/devices.html": {Data: []byte(`{{define "other"}}{{end}}`)},
		},
	} {
		if _, err := console.New(console.Options{Templates: fsys, Inventory: newInventory(t), Auth: newAuth(t)}); err == nil {
			t.Errorf("%s: console.New accepted a broken template set", name)
		}
	}
}

func TestDevicesPage(t *testing.T) {
	inv := newInventory(t)
	hello(t, inv, "gw-1", map[string]string{"site": "<b>plant-7</b>"})
	hello(t, inv, "gw-2", nil)
	srv, ck := serve(t, inv)
	resp := get(t, ck, srv.URL+"/devices")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"gw-1", "gw-2", "raspberry-pi-5", "kws@2.0.0", `class="status online"`, "2</span> online of", "&lt;b&gt;plant-7&lt;/b&gt;", `src="/static/console.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>plant-7</b>") {
		t.Error("label value was not escaped")
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("no Content-Security-Policy")
	}
	for _, p := range []string{"/static/console.js", "/static/console.css"} {
		r := get(t, nil, srv.URL+p) // public: the login page needs them
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("GET %s = %d", p, r.StatusCode)
		}
	}
	r := get(t, ck, srv.URL+"/nope")
	r.Body.Close()
	if r.StatusCode != 404 {
		t.Errorf("GET /nope = %d, want 404", r.StatusCode)
	}
}

func TestEmptyPage(t *testing.T) {
	srv, ck := serve(t, newInventory(t))
	resp := get(t, ck, srv.URL+"/devices")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "No devices match") {
		t.Fatalf("empty page lacks the hint:\n%s", body)
	}
}

func TestEventsFollowInventoryChanges(t *testing.T) {
	inv := newInventory(t)
	srv, ck := serve(t, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, "event: ") {
				return l
			}
		}
		t.Fatalf("stream ended: %v", lines.Err())
		return ""
	}
	if e := next(); e != "event: devices" {
		t.Fatalf("first event = %q", e)
	}
	hello(t, inv, "gw-9", nil)
	if e := next(); e != "event: devices" {
		t.Fatalf("event after a change = %q", e)
	}
}

// TestOverviewCountsFollowChanges: the overview's cached counts are
// recounted after the inventory changes (EventInterval is the longest they
// may lag; here a nanosecond).
func TestOverviewCountsFollowChanges(t *testing.T) {
	inv := newInventory(t)
	a := newAuth(t)
	c, err := console.New(console.Options{Inventory: inv, Auth: a, EventInterval: time.Nanosecond, TickInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(a.Wrap(mux, nil))
	defer srv.Close()
	ck := adminCookie(t, a)
	total := func() string {
		t.Helper()
		resp := get(t, ck, srv.URL+"/")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := regexp.MustCompile(`id="total">([^<]*)<`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("overview without a total:\n%s", body)
		}
		return string(m[1])
	}
	hello(t, inv, "gw-1", nil)
	if got := total(); got != "1 devices" {
		t.Fatalf("total %q, want 1 devices", got)
	}
	if got := total(); got != "1 devices" { // from the cache
		t.Fatalf("total %q, want 1 devices", got)
	}
	hello(t, inv, "gw-2", nil)
	if got := total(); got != "2 devices" {
		t.Fatalf("total after a new device %q, want 2 devices", got)
	}
}
