package auth_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/auth"
)

// FuzzAuthenticate: whatever a client puts in the Authorization header and
// the session cookie, Authenticate never panics, fails only with
// ErrUnauthenticated, and lets in only a request that carries the real
// token or session.
func FuzzAuthenticate(f *testing.F) {
	a, _ := open(f, auth.Options{})
	if err := a.CreateUser(ctx, "fz", "fz-password", auth.RoleViewer); err != nil {
		f.Fatal(err)
	}
	tok, _, err := a.CreateToken(ctx, "fz", "t", auth.RoleViewer)
	if err != nil {
		f.Fatal(err)
	}
	sess, _, err := a.Login(ctx, "fz", "fz-password", "127.0.0.1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer "+tok.Reveal(), "")
	f.Add("", sess.Reveal())
	f.Add("Bearer eft_x", "")
	f.Add("Basic dXNlcjpwYXNz", "x")
	f.Add("bearer   "+tok.Reveal()+"x", "")
	f.Add("Bearer", "\x00\xff")
	f.Fuzz(func(t *testing.T, header, cookie string) {
		r := httptest.NewRequest("GET", "/", nil)
		if header != "" {
			r.Header["Authorization"] = []string{header}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{auth.SessionCookie + "=" + cookie}
		}
		id, err := a.Authenticate(r)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("header %q cookie %q: %v", header, cookie, err)
			}
			return
		}
		if !strings.Contains(header, tok.Reveal()) && !strings.Contains(cookie, sess.Reveal()) {
			t.Fatalf("header %q cookie %q authenticated as %+v", header, cookie, id)
		}
		if id.User != "fz" || id.Role != auth.RoleViewer {
			t.Fatalf("identity %+v", id)
		}
	})
}
