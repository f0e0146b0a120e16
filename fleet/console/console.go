// Package console is the fleet server's web console: server-rendered pages
// from html/template and embedded static files, charts drawn as SVG by the
// server, and live updates over server-sent events. Templates are parsed
// once, in New, so a broken template stops the server at start (and fails
// a test) instead of a page at run time.
//
// Every page and form checks the caller's role itself, behind the
// auth.Wrap the server puts in front of it, so a route forgotten in the
// policy still refuses what the role does not allow. Forms carry the
// session's CSRF token; actions that change a rollout go through a
// confirmation page.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Inventory is what the console reads devices from.
type Inventory interface {
	List(ctx context.Context, q inventory.Query) (inventory.Page, error)
	Device(ctx context.Context, id string) (store.Device, error)
	Telemetry(ctx context.Context, id string, limit int) ([]store.Window, error)
	// Changed returns a channel closed at the next change to any device.
	Changed() <-chan struct{}
}

// Models is the part of the model registry the console shows.
type Models interface {
	Models(ctx context.Context, after string, limit int) ([]registry.Model, error)
	Versions(ctx context.Context, name string) ([]registry.Version, error)
	Version(ctx context.Context, name, ver string) (*registry.Version, error)
}

// Rollouts is the part of the rollout engine the console drives.
type Rollouts interface {
	List(ctx context.Context) ([]rollout.Rollout, error)
	Get(ctx context.Context, id string) (*rollout.Status, error)
	Targets(ctx context.Context, id string) ([]rollout.Target, error)
	Create(ctx context.Context, spec rollout.Spec) (*rollout.Rollout, error)
	Act(ctx context.Context, id, action, reason string) (*rollout.Status, error)
	Groups(ctx context.Context) ([]rollout.Group, error)
	PutGroup(ctx context.Context, g rollout.Group) error
	Members(ctx context.Context, name string) ([]string, error)
	Audit(ctx context.Context, rollout string, after uint64, limit int) ([]rollout.AuditEntry, error)
}

// Options configure the console.
type Options struct {
	Inventory Inventory
	// Auth holds users, sessions and the audit log. Required.
	Auth *auth.Auth
	// Models and Rollouts are optional; without them their pages say the
	// server runs without a registry or rollout engine.
	Models   Models
	Rollouts Rollouts
	// Templates replaces the embedded templates; tests use it to prove a
	// broken template fails New.
	Templates fs.FS
	// MaxStreams bounds concurrent live-update streams. Default 64.
	MaxStreams int
	// EventInterval is the shortest time between two live updates sent to
	// a page, so a busy fleet does not make every browser refetch per
	// message. Default 1 s.
	EventInterval time.Duration
	// TickInterval is how often the stream sends "tick", on which rollout
	// pages refresh. Default 2 s.
	TickInterval time.Duration
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
}

// Console serves the web pages.
type Console struct {
	inv      Inventory
	auth     *auth.Auth
	models   Models
	rollouts Rollouts
	pages    map[string]*template.Template
	static   http.Handler
	log      *slog.Logger
	streams  atomic.Int64
	maxStrm  int64
	interval time.Duration
	tick     time.Duration
	counts   countCache
}

// pageNames are the templates besides the layout; each defines "content".
var pageNames = []string{"overview", "devices", "device", "models", "model", "rollouts", "rollout", "rollout_new", "confirm", "audit", "account", "users", "login", "message"}

// New parses the templates and returns the console.
func New(opts Options) (*Console, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tfs := opts.Templates
	if tfs == nil {
		tfs = templateFS
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 64
	}
	if opts.EventInterval <= 0 {
		opts.EventInterval = time.Second
	}
	if opts.TickInterval <= 0 {
		opts.TickInterval = 2 * time.Second
	}
	layout, err := template.New("layout").Funcs(funcs).ParseFS(tfs, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: parse layout: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := layout.Clone()
		if err == nil {
			t, err = t.ParseFS(tfs, "templates/"+name+".html")
		}
		if err != nil {
			return nil, fmt.Errorf("console: parse page %s: %w", name, err)
		}
		if t.Lookup("content") == nil {
			return nil, fmt.Errorf("console: page %s defines no \"content\" template", name)
		}
		pages[name] = t
	}
	if opts.Inventory == nil || opts.Auth == nil {
		return nil, errors.New("console: Options.Inventory and Options.Auth are required")
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &Console{
		inv: opts.Inventory, auth: opts.Auth, models: opts.Models, rollouts: opts.Rollouts, pages: pages, log: log,
		static:  http.StripPrefix("/static/", http.FileServerFS(static)),
		maxStrm: int64(opts.MaxStreams), interval: opts.EventInterval, tick: opts.TickInterval,
	}, nil
}

// Register adds the console's routes to mux.
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.loginPost)
	mux.HandleFunc("POST /logout", c.logoutPost)
	mux.HandleFunc("GET /events", c.need(auth.RoleViewer, c.events))
	mux.HandleFunc("GET /{$}", c.need(auth.RoleViewer, c.overviewPage))
	mux.HandleFunc("GET /devices", c.need(auth.RoleViewer, c.devicesPage))
	mux.HandleFunc("GET /devices/{id}", c.need(auth.RoleViewer, c.devicePage))
	mux.HandleFunc("GET /models", c.need(auth.RoleViewer, c.modelsPage))
	mux.HandleFunc("GET /models/{name}", c.need(auth.RoleViewer, c.modelPage))
	mux.HandleFunc("GET /rollouts", c.need(auth.RoleViewer, c.rolloutsPage))
	mux.HandleFunc("GET /rollouts/new", c.need(auth.RoleOperator, c.rolloutNewPage))
	mux.HandleFunc("POST /rollouts", c.need(auth.RoleOperator, c.rolloutCreate))
	mux.HandleFunc("POST /groups", c.need(auth.RoleOperator, c.groupCreate))
	mux.HandleFunc("GET /rollouts/{id}", c.need(auth.RoleViewer, c.rolloutPage))
	mux.HandleFunc("GET /rollouts/{id}/confirm", c.need(auth.RoleOperator, c.confirmPage))
	mux.HandleFunc("POST /rollouts/{id}/actions", c.need(auth.RoleOperator, c.rolloutAct))
	mux.HandleFunc("GET /audit", c.need(auth.RoleViewer, c.auditPage))
	mux.HandleFunc("GET /account", c.need(auth.RoleViewer, c.accountPage))
	mux.HandleFunc("POST /account/password", c.need(auth.RoleViewer, c.passwordPost))
	mux.HandleFunc("POST /account/tokens", c.need(auth.RoleViewer, c.tokenCreate))
	mux.HandleFunc("POST /account/tokens/{id}/revoke", c.need(auth.RoleViewer, c.tokenRevoke))
	mux.HandleFunc("GET /users", c.need(auth.RoleAdmin, c.usersPage))
	mux.HandleFunc("POST /users", c.need(auth.RoleAdmin, c.userCreate))
	mux.HandleFunc("POST /users/{name}/role", c.need(auth.RoleAdmin, c.userRole))
	mux.HandleFunc("POST /users/{name}/password", c.need(auth.RoleAdmin, c.userPassword))
	mux.HandleFunc("POST /users/{name}/delete", c.need(auth.RoleAdmin, c.userDelete))
}

// need checks the role in the handler too, so the console does not rely
// only on the server's policy being right.
func (c *Console) need(role auth.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.FromContext(r.Context())
		if !ok {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if !id.Can(role) {
			c.message(w, r, http.StatusForbidden, "Not allowed", fmt.Sprintf("Your role (%s) does not allow this; it needs %s.", id.Role, role))
			return
		}
		h(w, r)
	}
}

// view is what every page template gets.
type view struct {
	Title string
	Nav   string
	User  auth.Identity
	// Notice and Problem are shown above the content.
	Notice  string
	Problem string
	// Live names the event the page refreshes on ("devices", "rollouts").
	Live string
	Data any
}

// CanOperate and IsAdmin decide which buttons a page shows; the handlers
// check the role again.
func (v view) CanOperate() bool  { return v.User.Can(auth.RoleOperator) }
func (v view) IsAdmin() bool     { return v.User.Can(auth.RoleAdmin) }
func (v view) CSRFField() string { return auth.CSRFField }

// render executes into a buffer first, so a failing template yields a clean
// 500 rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, page string, v view) {
	if id, ok := auth.FromContext(r.Context()); ok {
		v.User = id
	}
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// Nothing is loaded from elsewhere, no inline script runs, and no
	// other site may frame the console.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = buf.WriteTo(w)
}

// message shows a page with a title and one paragraph, for refusals and
// bad input.
func (c *Console) message(w http.ResponseWriter, r *http.Request, code int, title, msg string) {
	c.render(w, r, code, "message", view{Title: title, Problem: msg})
}

// fail answers 500 with a message for the user; the cause goes to the log.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	c.log.Error("console page failed", "path", r.URL.Path, "error", err)
	http.Error(w, "The page could not be shown; the server log has the details.", http.StatusInternalServerError)
}

// seeOther redirects after a successful form, with a notice for the next
// page in the query (not a cookie: it is only ever our own fixed text).
func seeOther(w http.ResponseWriter, r *http.Request, path, notice string) {
	if notice != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "notice=" + url.QueryEscape(notice)
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// notice reads the notice of seeOther, bounded.
func notice(r *http.Request) string {
	n := r.URL.Query().Get("notice")
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

// events streams a "devices" event whenever the inventory changes, at most
// once per EventInterval, and a "tick" every TickInterval for pages that
// watch rollouts (the engine has no change feed), until the client leaves
// or the server shuts down (the request context ends).
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	if c.streams.Add(1) > c.maxStrm {
		c.streams.Add(-1)
		http.Error(w, "too many live views open; close some and reload", http.StatusServiceUnavailable)
		return
	}
	defer c.streams.Add(-1)
	// The stream outlives the server's write timeout by design.
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		c.log.Debug("clear write deadline for event stream", "error", err)
	}
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		c.log.Debug("clear read deadline for event stream", "error", err)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	send := func(event string) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: {}\n\n", event); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	// Take the change channel before each send, so a change that happens
	// while the page is being told about the previous one is not missed.
	changed := c.inv.Changed()
	if !send("devices") {
		return
	}
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
	tick := time.NewTicker(c.tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
			continue
		case <-tick.C:
			if !send("tick") {
				return
			}
			continue
		case <-changed:
		}
		// Coalesce the changes of the next interval into one event.
		t := time.NewTimer(c.interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		changed = c.inv.Changed()
		if !send("devices") {
			return
		}
	}
}
