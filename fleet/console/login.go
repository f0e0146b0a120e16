package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/edgefleet/edgefleet/fleet/auth"
)

// loginCookie carries the login form's CSRF token before there is a
// session (double submit): a page on another site cannot read it, so it
// cannot fill in the matching field, and cannot log a victim in as the
// attacker.
const loginCookie = "edgefleet_login"

type loginData struct {
	Next string
	Name string
	CSRF string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "", "")
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, code int, name, problem string) {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 3600})
	next := safeNext(r.FormValue("next"))
	c.render(w, r, code, "login", view{Title: "Log in", Problem: problem, Data: loginData{Next: next, Name: name, CSRF: tok}})
}

// safeNext keeps redirects after login on this site: only a local path.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/") || strings.HasPrefix(n, "//") || strings.HasPrefix(n, "/\\") || len(n) > 512 || strings.ContainsAny(n, "\r\n") {
		return "/"
	}
	return n
}

func (c *Console) loginPost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showLogin(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error())
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	ck, err := r.Cookie(loginCookie)
	field := r.PostForm.Get(auth.CSRFField)
	if err != nil || field == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(field)) != 1 {
		c.showLogin(w, r, http.StatusForbidden, name, "The login form is out of date or was not sent by this console; try again.")
		return
	}
	if name == "" || r.PostForm.Get("password") == "" {
		c.showLogin(w, r, http.StatusBadRequest, name, "Enter a user name and a password.")
		return
	}
	tok, id, err := c.auth.Login(r.Context(), name, r.PostForm.Get("password"), auth.ClientIP(r))
	var rl *auth.RateLimitError
	switch {
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", fmt.Sprint(int(rl.RetryAfter.Seconds())+1))
		c.showLogin(w, r, http.StatusTooManyRequests, name, rl.Error()+".")
		return
	case errors.Is(err, auth.ErrBadCredentials):
		c.showLogin(w, r, http.StatusUnauthorized, name, "Wrong user name or password.")
		return
	case err != nil:
		c.fail(w, r, err)
		return
	}
	c.auth.SetSessionCookie(w, r, tok)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/login", MaxAge: -1})
	if id.OneTime {
		seeOther(w, r, "/account", "You logged in with a one-time password; choose your own now.")
		return
	}
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (c *Console) logoutPost(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(auth.SessionCookie); err == nil {
		if err := c.auth.Logout(r.Context(), ck.Value); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	auth.ClearSessionCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
