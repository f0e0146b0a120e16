package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SessionCookie is the name of the session cookie.
const SessionCookie = "edgefleet_session"

// CSRFField is the form field, and CSRFHeader the header, that carry a
// session's CSRF token on state-changing requests.
const (
	CSRFField  = "csrf"
	CSRFHeader = "X-CSRF-Token"
)

// Rule is what a route needs.
type Rule struct {
	// Public routes need no login.
	Public bool
	// Role is the lowest role allowed.
	Role Role
}

// Policy decides the rule of a request. DefaultPolicy is the server's.
type Policy func(r *http.Request) Rule

// DefaultPolicy: probes, static files, the login page and the artifact
// downloads devices make (their URLs are content-addressed and the
// manifests are signed) are public; user management is for admins; every
// other read is for viewers and every other write for operators.
func DefaultPolicy(r *http.Request) Rule {
	p := r.URL.Path
	switch {
	case p == "/healthz" || p == "/readyz" || p == "/login" || strings.HasPrefix(p, "/static/") ||
		(strings.HasPrefix(p, "/artifacts/") && (r.Method == http.MethodGet || r.Method == http.MethodHead)):
		return Rule{Public: true}
	case p == "/logout" || p == "/account" || strings.HasPrefix(p, "/account/"):
		return Rule{Role: RoleViewer} // everyone manages their own password and tokens
	case strings.HasPrefix(p, "/users") || strings.HasPrefix(p, "/api/v1/users"):
		return Rule{Role: RoleAdmin}
	case r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions:
		return Rule{Role: RoleViewer}
	}
	return Rule{Role: RoleOperator}
}

type ctxKey struct{}

type noteKey struct{}

// auditNote carries what a handler says about a write, for the audit
// entry Wrap records after it.
type auditNote struct{ text string }

// Note adds a detail to the audit entry of the current request (what was
// asked for, in words: "rollback r1: bad latency"); a no-op outside Wrap.
func Note(ctx context.Context, detail string) {
	if n, ok := ctx.Value(noteKey{}).(*auditNote); ok {
		if n.text != "" {
			n.text += "; "
		}
		n.text += detail
	}
}

// FromContext returns the identity Wrap attached to a request's context.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// WithIdentity returns ctx carrying id; for tests of handlers behind Wrap.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// Authenticate finds the caller of r: an API token in
// "Authorization: Bearer", or a session cookie.
func (a *Auth) Authenticate(r *http.Request) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return Identity{}, ErrUnauthenticated
		}
		return a.TokenIdentity(r.Context(), strings.TrimSpace(tok))
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return Identity{}, ErrUnauthenticated
	}
	return a.Session(r.Context(), c.Value)
}

// Wrap enforces policy on every request to next (nil policy means
// DefaultPolicy): it authenticates, checks the role, checks the CSRF token
// of state-changing requests made with a session cookie, and records
// every state-changing request in the audit log. Unauthenticated page
// requests are sent to /login; API requests get a JSON 401.
func (a *Auth) Wrap(next http.Handler, policy Policy) http.Handler {
	if policy == nil {
		policy = DefaultPolicy
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rule := policy(r)
		id, err := a.Authenticate(r)
		if err != nil && !errors.Is(err, ErrUnauthenticated) {
			a.log.Error("authenticate request", "path", r.URL.Path, "error", err)
			deny(w, r, http.StatusInternalServerError, "internal error; see the server log")
			return
		}
		authed := err == nil
		if authed {
			r = r.WithContext(WithIdentity(r.Context(), id))
		}
		if rule.Public {
			next.ServeHTTP(w, r)
			return
		}
		if !authed {
			if wantsHTML(r) && r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="edgefleet"`)
			deny(w, r, http.StatusUnauthorized, "not logged in: log in to the console, or send an API token as \"Authorization: Bearer <token>\" (EDGEFLEET_TOKEN for the CLI)")
			return
		}
		unsafe := !(r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions)
		if unsafe && id.Via == ViaSession && !a.checkCSRF(r, id) {
			a.Record(r.Context(), Entry{Actor: id.User, Role: id.Role.String(), IP: ClientIP(r), Action: r.Method + " " + r.URL.Path, Detail: "refused: bad CSRF token", Status: http.StatusForbidden})
			deny(w, r, http.StatusForbidden, ErrBadCSRF.Error())
			return
		}
		if !id.Can(rule.Role) {
			if unsafe {
				a.Record(r.Context(), Entry{Actor: id.User, Role: id.Role.String(), IP: ClientIP(r), Action: r.Method + " " + r.URL.Path, Detail: "refused: role " + id.Role.String(), Status: http.StatusForbidden})
			}
			deny(w, r, http.StatusForbidden, "your role ("+id.Role.String()+") does not allow this; it needs "+rule.Role.String())
			return
		}
		if !unsafe {
			next.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		note := &auditNote{}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), noteKey{}, note)))
		detail := note.text
		if id.Via == ViaToken {
			detail = strings.TrimPrefix(detail+"; token "+id.Token, "; ")
		}
		a.Record(r.Context(), Entry{Actor: id.User, Role: id.Role.String(), IP: ClientIP(r), Action: r.Method + " " + r.URL.Path, Detail: detail, Status: rec.status})
	})
}

// checkCSRF accepts the header, or a form field of a urlencoded form (not
// of a multipart one: parsing it here would read an upload into memory).
func (a *Auth) checkCSRF(r *http.Request, id Identity) bool {
	tok := r.Header.Get(CSRFHeader)
	if tok == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err == nil {
			tok = r.PostForm.Get(CSRFField)
		}
	}
	if tok == "" || !equal(tok, id.CSRF) {
		return false
	}
	// A browser sends Origin on cross-site POSTs; when present it must be
	// this host, a second line behind SameSite=Strict.
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// SetSessionCookie sets the session cookie on a login answer: HttpOnly,
// SameSite=Strict, and Secure when the request came over TLS.
func (a *Auth) SetSessionCookie(w http.ResponseWriter, r *http.Request, token Secret) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: token.Reveal(), Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil, MaxAge: int(a.opts.SessionTTL / time.Second),
	})
}

// ClearSessionCookie removes the session cookie.
func ClearSessionCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: -1})
}

// ClientIP is the request's peer address without the port. Forwarded
// headers are ignored: the server is reached directly, and trusting them
// would let anyone pick the address the login limit counts.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func wantsHTML(r *http.Request) bool {
	return !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/events" && strings.Contains(r.Header.Get("Accept"), "text/html")
}

func deny(w http.ResponseWriter, r *http.Request, code int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	if wantsHTML(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(msg + "\n"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
