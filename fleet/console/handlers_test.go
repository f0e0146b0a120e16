package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/console"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
)

// user is a browser-like client logged in through the login form.
type user struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func newClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login creates the user with the role and logs in through the form.
func login(t *testing.T, f *fleettest.Fleet, name string, role auth.Role) *user {
	t.Helper()
	if err := f.Server.Auth().CreateUser(context.Background(), name, name+"-password", role); err != nil {
		t.Fatal(err)
	}
	u := &user{t: t, base: f.HTTPURL, c: newClient()}
	code, body, _ := u.do("GET", "/login", nil)
	m := csrfRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("login page: %d\n%s", code, body)
	}
	code, body, loc := u.do("POST", "/login", url.Values{"csrf": {m[1]}, "name": {name}, "password": {name + "-password"}, "next": {"/devices"}})
	if code != http.StatusSeeOther || loc != "/devices" {
		t.Fatalf("login as %s: %d %q\n%s", name, code, loc, body)
	}
	code, body, _ = u.do("GET", "/account", nil)
	if m = csrfRE.FindStringSubmatch(body); code != 200 || m == nil {
		t.Fatalf("account page: %d", code)
	}
	u.csrf = m[1]
	return u
}

// do sends a request; a form is sent urlencoded. It returns the status,
// body and Location.
func (u *user) do(method, path string, form url.Values) (int, string, string) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.base+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

// post sends a form with the session's CSRF token.
func (u *user) post(path string, form url.Values) (int, string, string) {
	u.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", u.csrf)
	return u.do("POST", path, form)
}

var pages = []struct {
	path string
	role auth.Role
}{
	{"/", auth.RoleViewer}, {"/devices", auth.RoleViewer}, {"/models", auth.RoleViewer}, {"/rollouts", auth.RoleViewer},
	{"/audit", auth.RoleViewer}, {"/account", auth.RoleViewer}, {"/rollouts/new", auth.RoleOperator}, {"/users", auth.RoleAdmin},
}

var forms = []struct {
	path string
	role auth.Role
}{
	{"/rollouts", auth.RoleOperator}, {"/groups", auth.RoleOperator}, {"/rollouts/r1/actions", auth.RoleOperator},
	{"/account/password", auth.RoleViewer}, {"/account/tokens", auth.RoleViewer}, {"/account/tokens/x/revoke", auth.RoleViewer},
	{"/users", auth.RoleAdmin}, {"/users/x/role", auth.RoleAdmin}, {"/users/x/password", auth.RoleAdmin}, {"/users/x/delete", auth.RoleAdmin},
	{"/logout", auth.RoleViewer},
}

// TestHandlersEnforceAuth: every page needs a login and the right role;
// every form needs the right role and the session's CSRF token.
func TestHandlersEnforceAuth(t *testing.T) {
	f := fleettest.Start(t)
	anon := &user{t: t, base: f.HTTPURL, c: newClient()}
	users := map[auth.Role]*user{
		auth.RoleViewer:   login(t, f, "vera", auth.RoleViewer),
		auth.RoleOperator: login(t, f, "otto", auth.RoleOperator),
		auth.RoleAdmin:    login(t, f, "ada", auth.RoleAdmin),
	}
	for _, p := range pages {
		if code, _, loc := anon.do("GET", p.path, nil); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?next=") {
			t.Errorf("GET %s without login: %d %q, want a redirect to /login", p.path, code, loc)
		}
		for role, u := range users {
			code, body, _ := u.do("GET", p.path, nil)
			want := http.StatusOK
			if role < p.role {
				want = http.StatusForbidden
			}
			if code != want {
				t.Errorf("GET %s as %s: %d, want %d\n%.300s", p.path, role, code, want, body)
			}
			if want == http.StatusForbidden && !strings.Contains(body, "does not allow") {
				t.Errorf("GET %s as %s: refusal without a reason: %.300s", p.path, role, body)
			}
		}
	}
	for _, fm := range forms {
		if code, _, _ := anon.do("POST", fm.path, url.Values{}); code != http.StatusUnauthorized {
			t.Errorf("POST %s without login: %d, want 401", fm.path, code)
		}
		for role, u := range users {
			// Without the CSRF token: refused whatever the role.
			if code, body, _ := u.do("POST", fm.path, url.Values{"x": {"1"}}); code != http.StatusForbidden || !strings.Contains(body, "reload the page") {
				t.Errorf("POST %s as %s without CSRF: %d %.200s", fm.path, role, code, body)
			}
			if fm.path == "/logout" {
				continue
			}
			code, body, _ := u.post(fm.path, url.Values{})
			if role < fm.role {
				if code != http.StatusForbidden {
					t.Errorf("POST %s as %s: %d, want 403\n%.300s", fm.path, role, code, body)
				}
			} else if code == http.StatusUnauthorized || strings.Contains(body, "does not allow") || strings.Contains(body, "reload the page") {
				t.Errorf("POST %s as %s (allowed): %d\n%.300s", fm.path, role, code, body)
			}
		}
	}
	// The API takes the same roles with tokens.
	tok, _, err := f.Server.Auth().CreateToken(context.Background(), "vera", "cli", auth.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/devices", "", 401},
		{"GET", "/api/v1/devices", tok.Reveal(), 200},
		{"POST", "/api/v1/rollouts", tok.Reveal(), 403},
		{"GET", "/api/v1/rollouts", tok.Reveal(), 200},
		{"GET", "/healthz", "", 200},
	} {
		req, _ := http.NewRequest(c.method, f.HTTPURL+c.path, strings.NewReader("{}"))
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s token=%v: %d, want %d: %s", c.method, c.path, c.token != "", resp.StatusCode, c.want, b)
		}
	}
}

// TestHandlersBadInput: bad input is answered with a message naming what
// is wrong, never a 500.
func TestHandlersBadInput(t *testing.T) {
	f := fleettest.Start(t)
	op := login(t, f, "otto", auth.RoleOperator)
	admin := login(t, f, "ada", auth.RoleAdmin)
	for _, c := range []struct {
		u      *user
		method string
		path   string
		form   url.Values
		code   int
		want   string
	}{
		{op, "GET", "/devices?status=sleeping", nil, 400, "is neither online nor offline"},
		{op, "GET", "/devices?label=novalue", nil, 400, "not of the form key=value"},
		{op, "GET", "/devices?cursor=garbage", nil, 400, "was not returned by this server"},
		{op, "GET", "/devices/" + url.PathEscape("bad id"), nil, 400, "not valid"},
		{op, "GET", "/devices/gw-missing", nil, 404, "No device with id"},
		{op, "GET", "/models/no-such-model", nil, 404, "No model named"},
		{op, "GET", "/rollouts/no-such-rollout", nil, 404, "No rollout with id"},
		{op, "GET", "/rollouts/new?preview=1", nil, 400, "Model version: choose a published version"},
		{op, "GET", "/rollouts/new?preview=1&model_version=m@1.0.0&group=g", nil, 400, "is not in the registry"},
		{op, "GET", "/rollouts/r1/confirm?action=explode", nil, 400, "is not one of pause"},
		{op, "GET", "/audit?before=yesterday", nil, 400, "is not an entry number"},
		{op, "POST", "/rollouts", url.Values{"model_version": {"m@1.0.0"}, "group": {"g"}, "phases": {"ten%"}}, 400, "Phases"},
		{op, "POST", "/rollouts", url.Values{"model_version": {"m@1.0.0"}, "group": {"g"}, "bake": {"forever"}}, 400, "Bake time"},
		{op, "POST", "/rollouts", url.Values{"model_version": {"m@1.0.0"}, "group": {"g"}, "settle": {"soon"}}, 400, "Settle time"},
		{op, "POST", "/rollouts", url.Values{"model_version": {"m@1.0.0"}, "group": {"g"}, "max_error_rate": {"7"}}, 400, "Max error rate"},
		{op, "POST", "/rollouts", url.Values{"model_version": {"m@1.0.0"}, "group": {"nogroup"}}, 404, "not in the registry"},
		{op, "POST", "/groups", url.Values{"name": {"g"}, "selector": {"no-equals-sign"}}, 400, "Group selector"},
		{op, "POST", "/rollouts/r1/actions", url.Values{"action": {"pause"}}, 400, "need confirmation"},
		{op, "POST", "/rollouts/r1/actions", url.Values{"action": {"pause"}, "confirm": {"pause"}}, 404, "r1"},
		{op, "POST", "/account/tokens", url.Values{"name": {"t"}, "role": {"admin"}}, 400, "higher role"},
		{op, "POST", "/account/tokens", url.Values{"name": {"bad name"}, "role": {"viewer"}}, 400, "may contain only"},
		{op, "POST", "/account/password", url.Values{"current": {"wrong"}, "password": {"newpassword"}, "again": {"newpassword"}}, 403, "current password is wrong"},
		{op, "POST", "/account/password", url.Values{"current": {"otto-password"}, "password": {"short"}, "again": {"short"}}, 400, "8 to 72"},
		{admin, "POST", "/users", url.Values{"name": {"x"}, "password": {"long-enough"}, "role": {"root"}}, 400, `role "root"`},
		{admin, "POST", "/users", url.Values{"name": {"otto"}, "password": {"long-enough"}, "role": {"viewer"}}, 400, "already exists"},
		{admin, "POST", "/users/ada/role", url.Values{"role": {"viewer"}}, 400, "cannot lower your own role"},
		{admin, "POST", "/users/nobody/role", url.Values{"role": {"viewer"}}, 400, "not found"},
		{admin, "POST", "/users/otto/password", url.Values{"password": {"short"}}, 400, "8 to 72"},
		{admin, "POST", "/users/nobody/password", url.Values{"password": {"long-enough"}}, 400, "not found"},
		{admin, "POST", "/users/otto/delete", url.Values{"confirm": {"ott"}}, 400, "type the user name"},
		{admin, "POST", "/users/ada/delete", url.Values{"confirm": {"ada"}}, 400, "cannot delete yourself"},
	} {
		var code int
		var body string
		if c.method == "GET" {
			code, body, _ = c.u.do("GET", c.path, nil)
		} else {
			code, body, _ = c.u.post(c.path, c.form)
		}
		if code != c.code || !strings.Contains(body, htmlEscape(c.want)) {
			t.Errorf("%s %s %v: %d, want %d with %q\n%.400s", c.method, c.path, c.form, code, c.code, c.want, problem(body))
		}
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer(`"`, "&#34;", "'", "&#39;").Replace(s)
}

var problemRE = regexp.MustCompile(`(?s)<p class="problem"[^>]*>(.*?)</p>`)

func problem(body string) string {
	if m := problemRE.FindStringSubmatch(body); m != nil {
		return "problem: " + m[1]
	}
	return body
}

// TestLoginForm: wrong passwords, a forged form and the rate limit are
// refused with a message; the session cookie is HttpOnly and
// SameSite=Strict; logging out ends the session.
func TestLoginForm(t *testing.T) {
	f := fleettest.Start(t)
	if err := f.Server.Auth().CreateUser(context.Background(), "lee", "lee-password", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	u := &user{t: t, base: f.HTTPURL, c: newClient()}
	// Every answer of the login page sets a new form token; take it from
	// the last page, as a browser would.
	_, body, _ := u.do("GET", "/login", nil)
	tok := csrfRE.FindStringSubmatch(body)[1]
	try := func(form url.Values) (int, string) {
		t.Helper()
		if form.Get("csrf") == "" {
			form.Set("csrf", tok)
		}
		code, body, _ := u.do("POST", "/login", form)
		if m := csrfRE.FindStringSubmatch(body); m != nil {
			tok = m[1]
		}
		return code, body
	}
	if code, body := try(url.Values{"csrf": {"forged"}, "name": {"lee"}, "password": {"lee-password"}}); code != 403 || !strings.Contains(body, "out of date") {
		t.Errorf("forged login form: %d %s", code, problem(body))
	}
	if code, body := try(url.Values{"name": {"lee"}, "password": {"nope-nope"}}); code != 401 || !strings.Contains(body, "Wrong user name or password") {
		t.Errorf("wrong password: %d %s", code, problem(body))
	}
	if code, body := try(url.Values{"name": {"lee"}}); code != 400 || !strings.Contains(body, "Enter a user name and a password") {
		t.Errorf("no password: %d %s", code, problem(body))
	}
	// The next-page parameter cannot send the browser elsewhere.
	req, _ := http.NewRequest("POST", f.HTTPURL+"/login", strings.NewReader(url.Values{"csrf": {tok}, "name": {"lee"}, "password": {"lee-password"}, "next": {"//evil.example/x"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "edgefleet_login", Value: tok})
	_ = body
	resp, err := newClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != 303 || loc != "/" {
		t.Errorf("login with an off-site next: %d %q", resp.StatusCode, loc)
	}
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == auth.SessionCookie {
			sess = c
		}
	}
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Secure {
		t.Fatalf("session cookie over plain HTTP: %+v", sess)
	}
	// Log out with the form; the cookie no longer works.
	lu := login(t, f, "lou", auth.RoleViewer)
	if code, _, loc := lu.post("/logout", nil); code != 303 || loc != "/login" {
		t.Fatalf("logout: %d %q", code, loc)
	}
	if code, _, _ := lu.do("GET", "/devices", nil); code != 303 {
		t.Fatalf("page after logout: %d, want a redirect to the login", code)
	}
	// The rate limit: after the burst the right password is refused too.
	limited := 0
	for range auth.DefaultLoginBurst + 2 {
		if code, _ := try(url.Values{"name": {"lee"}, "password": {"guess-guess"}}); code == http.StatusTooManyRequests {
			limited++
		}
	}
	code, body := try(url.Values{"name": {"lee"}, "password": {"lee-password"}})
	if limited == 0 || code != http.StatusTooManyRequests || !strings.Contains(body, "too many login attempts") {
		t.Fatalf("rate limit: %d limited, then the right password got %d %s", limited, code, problem(body))
	}
}

// TestUserAdmin: an admin creates a user, changes the role, resets the
// password and deletes the user, all through the forms.
func TestUserAdmin(t *testing.T) {
	f := fleettest.Start(t)
	admin := login(t, f, "ada", auth.RoleAdmin)
	a := f.Server.Auth()
	step := func(path string, form url.Values) {
		t.Helper()
		if code, body, loc := admin.post(path, form); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/users") {
			t.Fatalf("POST %s: %d %q %s", path, code, loc, problem(body))
		}
	}
	step("/users", url.Values{"name": {"neo"}, "password": {"first-password"}, "role": {"viewer"}})
	step("/users/neo/role", url.Values{"role": {"operator"}})
	if _, id, err := a.Login(context.Background(), "neo", "first-password", "10.1.1.1"); err != nil || id.Role != auth.RoleOperator {
		t.Fatalf("neo after the role change: %v %+v", err, id)
	}
	step("/users/neo/password", url.Values{"password": {"second-password"}})
	if _, _, err := a.Login(context.Background(), "neo", "second-password", "10.1.1.1"); err != nil {
		t.Fatalf("neo with the reset password: %v", err)
	}
	step("/users/neo/delete", url.Values{"confirm": {"neo"}})
	if _, _, err := a.Login(context.Background(), "neo", "second-password", "10.1.1.1"); err == nil {
		t.Fatal("a deleted user logged in")
	}
	_, body, _ := admin.do("GET", "/audit", nil)
	for _, want := range []string{"POST /users/neo/role", "POST /users/neo/password", "POST /users/neo/delete"} {
		if !strings.Contains(body, want) {
			t.Errorf("audit page lacks %q", want)
		}
	}
}

// TestSecureCookiesUnderTLS: served over TLS, the login and session
// cookies are Secure (and still HttpOnly, SameSite=Strict).
func TestSecureCookiesUnderTLS(t *testing.T) {
	a := newAuth(t)
	if err := a.CreateUser(context.Background(), "tess", "tess-password", auth.RoleViewer); err != nil {
		t.Fatal(err)
	}
	c, err := console.New(console.Options{Inventory: newInventory(t), Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewTLSServer(a.Wrap(mux, nil))
	defer srv.Close()
	client := srv.Client()
	client.Jar, _ = cookiejar.New(nil)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(srv.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkCookie := func(resp *http.Response, name string) {
		t.Helper()
		for _, ck := range resp.Cookies() {
			if ck.Name == name {
				if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
					t.Errorf("cookie %s over TLS: %+v", name, ck)
				}
				return
			}
		}
		t.Errorf("no cookie %s", name)
	}
	checkCookie(resp, "edgefleet_login")
	tok := csrfRE.FindStringSubmatch(string(body))[1]
	resp, err = client.PostForm(srv.URL+"/login", url.Values{"csrf": {tok}, "name": {"tess"}, "password": {"tess-password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login over TLS: %d", resp.StatusCode)
	}
	checkCookie(resp, auth.SessionCookie)
}

// TestFirstStartOneTimePassword: a server started without users logs a
// one-time admin password once; logging in with it leads to the account
// page to choose a new one, and the new one replaces it.
func TestFirstStartOneTimePassword(t *testing.T) {
	var logs syncBuffer
	f := fleettest.Start(t, fleettest.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	m := regexp.MustCompile(`no users yet.* user=(\S+) password=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no one-time password in the log:\n%s", logs.String())
	}
	name, pw := m[1], m[2]
	u := &user{t: t, base: f.HTTPURL, c: newClient()}
	_, body, _ := u.do("GET", "/login", nil)
	tok := csrfRE.FindStringSubmatch(body)[1]
	code, _, loc := u.do("POST", "/login", url.Values{"csrf": {tok}, "name": {name}, "password": {pw}})
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/account?notice=") {
		t.Fatalf("login with the one-time password: %d %q", code, loc)
	}
	code, body, _ = u.do("GET", loc, nil)
	if code != 200 || !strings.Contains(body, "one-time password") {
		t.Fatalf("account page after the one-time login: %d %s", code, problem(body))
	}
	u.csrf = csrfRE.FindStringSubmatch(body)[1]
	if code, body, loc := u.post("/account/password", url.Values{"current": {pw}, "password": {"my-own-password"}, "again": {"my-own-password"}}); code != http.StatusSeeOther || loc != "/login" {
		t.Fatalf("change the password: %d %q %s", code, loc, problem(body))
	}
	ctx := context.Background()
	if _, _, err := f.Server.Auth().Login(ctx, name, pw, "10.9.9.9"); err == nil {
		t.Fatal("the one-time password still works")
	}
	if _, id, err := f.Server.Auth().Login(ctx, name, "my-own-password", "10.9.9.9"); err != nil || id.OneTime {
		t.Fatalf("login with the new password: %v %+v", err, id)
	}
	if strings.Count(logs.String(), "no users yet") != 1 {
		t.Fatalf("the one-time password was logged %d times", strings.Count(logs.String(), "no users yet"))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
