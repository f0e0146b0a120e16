package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgefleet/edgefleet/fleet/auth"
)

// clock is a settable clock for the rate limit and session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t testing.TB, opts auth.Options) (*auth.Auth, *clock) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	opts.DB, opts.Now, opts.BcryptCost = db, clk.now, bcrypt.MinCost
	a, err := auth.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, clk
}

var ctx = context.Background()

func TestUsersAndLogin(t *testing.T) {
	a, clk := open(t, auth.Options{SessionTTL: time.Hour})
	if err := a.CreateUser(ctx, "ana", "correct horse", auth.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateUser(ctx, "ana", "another one", auth.RoleViewer); !errors.Is(err, auth.ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	for _, bad := range []struct{ name, pw string }{{"", "12345678"}, {"a b", "12345678"}, {"x", "short"}, {"x", strings.Repeat("p", 73)}, {strings.Repeat("n", 65), "12345678"}} {
		if err := a.CreateUser(ctx, bad.name, bad.pw, auth.RoleViewer); !errors.Is(err, auth.ErrInvalid) {
			t.Errorf("CreateUser(%q, %q) = %v, want ErrInvalid", bad.name, bad.pw, err)
		}
	}
	if _, _, err := a.Login(ctx, "ana", "wrong password", "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := a.Login(ctx, "nobody", "correct horse", "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	tok, id, err := a.Login(ctx, "ana", "correct horse", "10.0.0.1")
	if err != nil || id.Role != auth.RoleOperator || id.CSRF == "" {
		t.Fatalf("login: %v %+v", err, id)
	}
	got, err := a.Session(ctx, tok.Reveal())
	if err != nil || got.User != "ana" || got.CSRF != id.CSRF {
		t.Fatalf("session: %v %+v", err, got)
	}
	// A role change applies to the open session at once.
	if err := a.SetRole(ctx, "ana", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Session(ctx, tok.Reveal()); got.Role != auth.RoleViewer {
		t.Fatalf("role after demotion: %v", got.Role)
	}
	clk.add(2 * time.Hour)
	if _, err := a.Session(ctx, tok.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("expired session: %v", err)
	}
	tok, _, _ = a.Login(ctx, "ana", "correct horse", "10.0.0.1")
	if err := a.SetPassword(ctx, "ana", "battery staple"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Session(ctx, tok.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("session survived a password change: %v", err)
	}
	if _, _, err := a.Login(ctx, "ana", "battery staple", "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRateLimit(t *testing.T) {
	a, clk := open(t, auth.Options{LoginBurst: 3, LoginRefill: time.Minute})
	if err := a.CreateUser(ctx, "ana", "correct horse", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, _, err := a.Login(ctx, "ana", "guess", "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	// The right password is refused too while limited: otherwise the
	// limit would only slow down wrong guesses, not stop guessing.
	_, _, err := a.Login(ctx, "ana", "correct horse", "10.0.0.1")
	var rl *auth.RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, auth.ErrRateLimited) || rl.RetryAfter <= 0 || rl.RetryAfter > time.Minute {
		t.Fatalf("4th attempt from the address: %v", err)
	}
	// Another address is limited for this user too.
	if _, _, err := a.Login(ctx, "ana", "correct horse", "10.0.0.2"); !errors.Is(err, auth.ErrRateLimited) {
		t.Fatalf("per-user limit from a second address: %v", err)
	}
	// Another user from a fresh address is not.
	if _, _, err := a.Login(ctx, "bob", "whatever1", "10.0.0.3"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("other user: %v", err)
	}
	// More refusals in the same run are not recorded again.
	for range 5 {
		if _, _, err := a.Login(ctx, "ana", "correct horse", "10.0.0.1"); !errors.Is(err, auth.ErrRateLimited) {
			t.Fatalf("still limited: %v", err)
		}
	}
	clk.add(time.Minute)
	if _, _, err := a.Login(ctx, "ana", "correct horse", "10.0.0.1"); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	es, err := a.Audit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range es {
		if e.Action == "login" && e.Status == 429 {
			refused++
		}
	}
	if refused != 2 {
		t.Fatalf("audit has %d refused logins, want 2: %+v", refused, es)
	}
}

func TestTokens(t *testing.T) {
	a, _ := open(t, auth.Options{})
	if err := a.CreateUser(ctx, "op", "operator1", auth.RoleOperator); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateToken(ctx, "op", "cli", auth.RoleAdmin); !errors.Is(err, auth.ErrForbidden) {
		t.Fatalf("token above the user's role: %v", err)
	}
	sec, tk, err := a.CreateToken(ctx, "op", "cli", auth.RoleViewer)
	if err != nil || !strings.HasPrefix(sec.Reveal(), auth.TokenPrefix) {
		t.Fatal(err, sec)
	}
	id, err := a.TokenIdentity(ctx, sec.Reveal())
	if err != nil || id.Role != auth.RoleViewer || id.User != "op" || id.Via != auth.ViaToken {
		t.Fatalf("token identity: %v %+v", err, id)
	}
	if _, err := a.TokenIdentity(ctx, sec.Reveal()+"x"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
	if err := a.RevokeToken(ctx, "someone-else", tk.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("revoke another's token: %v", err)
	}
	if err := a.RevokeToken(ctx, "op", tk.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.TokenIdentity(ctx, sec.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked token still works: %v", err)
	}
	if _, err := a.AddToken(ctx, "op", "short", "eft_short", auth.RoleViewer); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("short provisioned token: %v", err)
	}
	// A token's role is capped by its user's current role.
	sec, _, _ = a.CreateToken(ctx, "op", "cli2", auth.RoleOperator)
	if err := a.SetRole(ctx, "op", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if id, _ := a.TokenIdentity(ctx, sec.Reveal()); id.Role != auth.RoleViewer {
		t.Fatalf("token role after the user's demotion: %v", id.Role)
	}
	if s := (auth.Secret("abc")).LogValue().String(); s != "REDACTED" {
		t.Fatalf("secret logs as %q", s)
	}
}

func TestEnsureAdmin(t *testing.T) {
	a, _ := open(t, auth.Options{})
	name, pw, created, err := a.EnsureAdmin(ctx)
	if err != nil || !created || name != "admin" || len(pw.Reveal()) < auth.MinPasswordLen {
		t.Fatalf("first start: %v %v %q", err, created, name)
	}
	_, id, err := a.Login(ctx, "admin", pw.Reveal(), "127.0.0.1")
	if err != nil || id.Role != auth.RoleAdmin || !id.OneTime {
		t.Fatalf("login with the one-time password: %v %+v", err, id)
	}
	if _, _, created, err := a.EnsureAdmin(ctx); err != nil || created {
		t.Fatalf("second start created another admin: %v", err)
	}
}

// handler echoes the identity it got, and notes what it did.
var handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, _ := auth.FromContext(r.Context())
	auth.Note(r.Context(), "did "+r.URL.Path)
	w.Write([]byte("ok " + id.User + " " + id.Role.String()))
})

func TestWrap(t *testing.T) {
	a, _ := open(t, auth.Options{})
	for name, role := range map[string]auth.Role{"viewer": auth.RoleViewer, "operator": auth.RoleOperator, "admin": auth.RoleAdmin} {
		if err := a.CreateUser(ctx, name, "password-"+name, role); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(a.Wrap(handler, nil))
	defer srv.Close()
	session := map[string]string{}
	csrf := map[string]string{}
	tokens := map[string]string{}
	for _, name := range []string{"viewer", "operator", "admin"} {
		tok, id, err := a.Login(ctx, name, "password-"+name, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		session[name], csrf[name] = tok.Reveal(), id.CSRF
		sec, _, err := a.CreateToken(ctx, name, "t", id.Role)
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = sec.Reveal()
	}
	type req struct {
		name             string
		method, path     string
		cookie, bearer   string
		csrfHdr, csrfFld string
		origin           string
		accept           string
		want             int
	}
	cases := []req{
		{name: "probe is public", method: "GET", path: "/healthz", want: 200},
		{name: "artifact download is public", method: "GET", path: "/artifacts/abc", want: 200},
		{name: "artifact upload is not", method: "POST", path: "/artifacts/abc", want: 401},
		{name: "api without auth", method: "GET", path: "/api/v1/devices", want: 401},
		{name: "page without auth redirects", method: "GET", path: "/devices", accept: "text/html", want: 303},
		{name: "bad bearer", method: "GET", path: "/api/v1/devices", bearer: "eft_nope", want: 401},
		{name: "viewer token reads", method: "GET", path: "/api/v1/devices", bearer: tokens["viewer"], want: 200},
		{name: "viewer token cannot write", method: "POST", path: "/api/v1/rollouts", bearer: tokens["viewer"], want: 403},
		{name: "operator token writes without csrf", method: "POST", path: "/api/v1/rollouts", bearer: tokens["operator"], want: 200},
		{name: "operator cannot manage users", method: "POST", path: "/api/v1/users", bearer: tokens["operator"], want: 403},
		{name: "admin manages users", method: "POST", path: "/api/v1/users", bearer: tokens["admin"], want: 200},
		{name: "viewer session reads", method: "GET", path: "/devices", cookie: session["viewer"], want: 200},
		{name: "session write without csrf", method: "POST", path: "/rollouts", cookie: session["operator"], want: 403},
		{name: "session write with wrong csrf", method: "POST", path: "/rollouts", cookie: session["operator"], csrfHdr: csrf["viewer"], want: 403},
		{name: "session write with csrf header", method: "POST", path: "/rollouts", cookie: session["operator"], csrfHdr: csrf["operator"], want: 200},
		{name: "session write with csrf field", method: "POST", path: "/rollouts", cookie: session["operator"], csrfFld: csrf["operator"], want: 200},
		{name: "cross-origin form", method: "POST", path: "/rollouts", cookie: session["operator"], csrfFld: csrf["operator"], origin: "http://evil.example", want: 403},
		{name: "viewer session cannot write", method: "POST", path: "/rollouts", cookie: session["viewer"], csrfHdr: csrf["viewer"], want: 403},
		{name: "logout needs csrf", method: "POST", path: "/logout", cookie: session["viewer"], want: 403},
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range cases {
		var body *strings.Reader
		if c.csrfFld != "" {
			body = strings.NewReader(url.Values{"csrf": {c.csrfFld}}.Encode())
		} else {
			body = strings.NewReader("")
		}
		r, _ := http.NewRequest(c.method, srv.URL+c.path, body)
		if c.csrfFld != "" {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if c.cookie != "" {
			r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: c.cookie})
		}
		if c.bearer != "" {
			r.Header.Set("Authorization", "Bearer "+c.bearer)
		}
		if c.csrfHdr != "" {
			r.Header.Set(auth.CSRFHeader, c.csrfHdr)
		}
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.accept != "" {
			r.Header.Set("Accept", c.accept)
		}
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, resp.StatusCode, c.want)
		}
		if c.want == 303 && !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=") {
			t.Errorf("%s: redirect to %q", c.name, resp.Header.Get("Location"))
		}
	}
	// Writes are in the audit log with who, from where and the outcome.
	es, err := a.Audit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var sawAdmin, sawRefusal bool
	for _, e := range es {
		if e.Actor == "admin" && e.Action == "POST /api/v1/users" && e.IP == "127.0.0.1" && e.Status == 200 && e.Detail == "did /api/v1/users; token t" {
			sawAdmin = true
		}
		if e.Actor == "viewer" && e.Action == "POST /rollouts" && e.Status == 403 {
			sawRefusal = true
		}
	}
	if !sawAdmin || !sawRefusal {
		t.Fatalf("audit log lacks the admin's write (%v) or the viewer's refusal (%v): %+v", sawAdmin, sawRefusal, es)
	}
}

func TestAuditBounded(t *testing.T) {
	a, _ := open(t, auth.Options{MaxAudit: 5})
	for i := range 12 {
		a.Record(ctx, auth.Entry{Actor: "x", Action: "a", Status: i})
	}
	es, err := a.Audit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 5 || es[0].Seq != 12 || es[4].Seq != 8 {
		t.Fatalf("kept %d entries: %+v", len(es), es)
	}
	older, _ := a.Audit(ctx, 10, 2)
	if len(older) != 2 || older[0].Seq != 9 || older[1].Seq != 8 {
		t.Fatalf("page before 10: %+v", older)
	}
}

func TestDeleteUser(t *testing.T) {
	a, _ := open(t, auth.Options{})
	if err := a.CreateUser(ctx, "gone", "gone-password", auth.RoleOperator); err != nil {
		t.Fatal(err)
	}
	sess, _, err := a.Login(ctx, "gone", "gone-password", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := a.CreateToken(ctx, "gone", "cli", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteUser(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Session(ctx, sess.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("session of a deleted user: %v", err)
	}
	if _, err := a.TokenIdentity(ctx, tok.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("token of a deleted user: %v", err)
	}
	if ts, _ := a.Tokens(ctx, "gone"); len(ts) != 0 {
		t.Fatalf("tokens left: %+v", ts)
	}
	if err := a.DeleteUser(ctx, "gone"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	// A new user of the same name does not inherit anything.
	if err := a.CreateUser(ctx, "gone", "other-password", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := a.TokenIdentity(ctx, tok.Reveal()); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("old token works for the new user: %v", err)
	}
}
