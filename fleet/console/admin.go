package console

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/rollout"
)

// auditPageSize is how many entries one audit page shows.
const auditPageSize = 100

type auditData struct {
	Entries []auth.Entry
	Older   uint64 // "before" of the next page; 0 on the last
	Engine  []rollout.AuditEntry
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request) {
	var before uint64
	if s := r.URL.Query().Get("before"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			c.message(w, r, http.StatusBadRequest, "Audit log", fmt.Sprintf("before=%q is not an entry number.", clipText(s)))
			return
		}
		before = n
	}
	ctx := r.Context()
	es, err := c.auth.Audit(ctx, before, auditPageSize)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := auditData{Entries: es}
	if len(es) == auditPageSize && es[len(es)-1].Seq > 1 {
		data.Older = es[len(es)-1].Seq
	}
	if c.rollouts != nil && before == 0 {
		// The engine's own log says what it decided by itself; show the
		// latest of it beside what people did.
		eng, err := c.rollouts.Audit(ctx, "", 0, 1000)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for i := len(eng) - 1; i >= 0 && len(data.Engine) < auditPageSize; i-- {
			data.Engine = append(data.Engine, eng[i])
		}
	}
	c.render(w, r, http.StatusOK, "audit", view{Title: "Audit log", Nav: "audit", Data: data})
}

type accountData struct {
	Tokens   []auth.Token
	NewToken string
	Roles    []string
}

func (c *Console) accountPage(w http.ResponseWriter, r *http.Request) {
	c.showAccount(w, r, http.StatusOK, notice(r), "", "")
}

func (c *Console) showAccount(w http.ResponseWriter, r *http.Request, code int, note, problem, newToken string) {
	id, _ := auth.FromContext(r.Context())
	ts, err := c.auth.Tokens(r.Context(), id.User)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var roles []string
	for _, ro := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		if id.Can(ro) {
			roles = append(roles, ro.String())
		}
	}
	c.render(w, r, code, "account", view{Title: "Account", Nav: "account", Notice: note, Problem: problem,
		Data: accountData{Tokens: ts, NewToken: newToken, Roles: roles}})
}

func (c *Console) passwordPost(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showAccount(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error(), "")
		return
	}
	id, _ := auth.FromContext(r.Context())
	cur, pw, again := r.PostForm.Get("current"), r.PostForm.Get("password"), r.PostForm.Get("again")
	if pw != again {
		c.showAccount(w, r, http.StatusBadRequest, "", "The new password and its repetition differ.", "")
		return
	}
	// Check the current password through Login, so the attempt counts
	// against the same rate limit; the extra session is dropped below
	// with the others.
	if _, _, err := c.auth.Login(r.Context(), id.User, cur, auth.ClientIP(r)); err != nil {
		var rl *auth.RateLimitError
		if errors.As(err, &rl) {
			c.showAccount(w, r, http.StatusTooManyRequests, "", rl.Error()+".", "")
			return
		}
		if errors.Is(err, auth.ErrBadCredentials) {
			c.showAccount(w, r, http.StatusForbidden, "", "The current password is wrong.", "")
			return
		}
		c.fail(w, r, err)
		return
	}
	auth.Note(r.Context(), "change own password")
	if err := c.auth.SetPassword(r.Context(), id.User, pw); err != nil {
		if errors.Is(err, auth.ErrInvalid) {
			c.showAccount(w, r, http.StatusBadRequest, "", "New password: "+trimSentinel(err, auth.ErrInvalid)+".", "")
			return
		}
		c.fail(w, r, err)
		return
	}
	// Every session ended with the change; log in again with the new one.
	auth.ClearSessionCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func trimSentinel(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

func (c *Console) tokenCreate(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showAccount(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error(), "")
		return
	}
	id, _ := auth.FromContext(r.Context())
	role, err := auth.ParseRole(r.PostForm.Get("role"))
	if err != nil {
		c.showAccount(w, r, http.StatusBadRequest, "", "Token role: "+trimSentinel(err, auth.ErrInvalid)+".", "")
		return
	}
	auth.Note(r.Context(), "create token "+clipText(strings.TrimSpace(r.PostForm.Get("name")))+" ("+role.String()+")")
	secret, _, err := c.auth.CreateToken(r.Context(), id.User, strings.TrimSpace(r.PostForm.Get("name")), role)
	if err != nil {
		if errors.Is(err, auth.ErrInvalid) || errors.Is(err, auth.ErrForbidden) || errors.Is(err, auth.ErrLimit) {
			c.showAccount(w, r, http.StatusBadRequest, "", "Token: "+err.Error()+".", "")
			return
		}
		c.fail(w, r, err)
		return
	}
	// Shown once, on this answer only; it is stored hashed.
	c.showAccount(w, r, http.StatusOK, "Token created. Copy it now: it is not shown again.", "", secret.Reveal())
}

func (c *Console) tokenRevoke(w http.ResponseWriter, r *http.Request) {
	id, _ := auth.FromContext(r.Context())
	auth.Note(r.Context(), "revoke token "+clipText(r.PathValue("id")))
	if err := c.auth.RevokeToken(r.Context(), id.User, r.PathValue("id")); err != nil {
		if errors.Is(err, auth.ErrNotFound) {
			c.showAccount(w, r, http.StatusNotFound, "", "No such token of yours.", "")
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/account", "Token revoked.")
}

type usersData struct {
	Users []auth.User
}

func (c *Console) usersPage(w http.ResponseWriter, r *http.Request) {
	c.showUsers(w, r, http.StatusOK, notice(r), "")
}

func (c *Console) showUsers(w http.ResponseWriter, r *http.Request, code int, note, problem string) {
	us, err := c.auth.Users(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, code, "users", view{Title: "Users", Nav: "users", Notice: note, Problem: problem, Data: usersData{Users: us}})
}

func (c *Console) userCreate(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showUsers(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error())
		return
	}
	role, err := auth.ParseRole(r.PostForm.Get("role"))
	auth.Note(r.Context(), "create user "+clipText(strings.TrimSpace(r.PostForm.Get("name")))+" ("+role.String()+")")
	if err == nil {
		err = c.auth.CreateUser(r.Context(), strings.TrimSpace(r.PostForm.Get("name")), r.PostForm.Get("password"), role)
	}
	if err != nil {
		if errors.Is(err, auth.ErrInvalid) || errors.Is(err, auth.ErrExists) || errors.Is(err, auth.ErrLimit) {
			c.showUsers(w, r, http.StatusBadRequest, "", "New user: "+err.Error()+".")
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/users", "User created.")
}

func (c *Console) userRole(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showUsers(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error())
		return
	}
	name := r.PathValue("name")
	role, err := auth.ParseRole(r.PostForm.Get("role"))
	if err == nil {
		if id, _ := auth.FromContext(r.Context()); id.User == name && role < auth.RoleAdmin {
			// An admin demoting themselves could leave no admin at all.
			c.showUsers(w, r, http.StatusBadRequest, "", "You cannot lower your own role; ask another admin.")
			return
		}
		auth.Note(r.Context(), "role of "+name+" to "+role.String())
		err = c.auth.SetRole(r.Context(), name, role)
	}
	if err != nil {
		if errors.Is(err, auth.ErrInvalid) || errors.Is(err, auth.ErrNotFound) {
			c.showUsers(w, r, http.StatusBadRequest, "", "Role: "+err.Error()+".")
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/users", "Role of "+name+" changed.")
}

// userPassword sets a user's password: an admin's reset for a user who
// lost theirs. The user's sessions end.
func (c *Console) userPassword(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		c.showUsers(w, r, http.StatusBadRequest, "", "The form could not be read: "+err.Error())
		return
	}
	name := r.PathValue("name")
	auth.Note(r.Context(), "reset the password of "+name)
	if err := c.auth.SetPassword(r.Context(), name, r.PostForm.Get("password")); err != nil {
		if errors.Is(err, auth.ErrInvalid) || errors.Is(err, auth.ErrNotFound) {
			c.showUsers(w, r, http.StatusBadRequest, "", "Password of "+name+": "+trimSentinel(err, auth.ErrInvalid)+".")
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/users", "Password of "+name+" set; their sessions ended.")
}

func (c *Console) userDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if id, _ := auth.FromContext(r.Context()); id.User == name {
		c.showUsers(w, r, http.StatusBadRequest, "", "You cannot delete yourself; ask another admin.")
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("confirm") != name {
		c.showUsers(w, r, http.StatusBadRequest, "", "To delete "+name+", type the user name in the confirmation field.")
		return
	}
	auth.Note(r.Context(), "delete user "+name)
	if err := c.auth.DeleteUser(r.Context(), name); err != nil {
		if errors.Is(err, auth.ErrNotFound) {
			c.showUsers(w, r, http.StatusBadRequest, "", "Delete: "+err.Error()+".")
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/users", "User "+name+" deleted with their sessions and tokens.")
}
