// Package console is the fleet server's web console: server-rendered pages
// from html/template and embedded static files, with live updates over
// server-sent events. Templates are parsed once, in New, so a broken
// template stops the server at start (and fails a test) instead of a page
// at run time.
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
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/inventory"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Inventory is what the console reads devices from.
type Inventory interface {
	List(ctx context.Context, q inventory.Query) (inventory.Page, error)
	// Changed returns a channel closed at the next change to any device.
	Changed() <-chan struct{}
}

// Options configure the console.
type Options struct {
	Inventory Inventory
	// Templates replaces the embedded templates; tests use it to prove a
	// broken template fails New.
	Templates fs.FS
	// MaxStreams bounds concurrent live-update streams. Default 64.
	MaxStreams int
	// EventInterval is the shortest time between two live updates sent to
	// a page, so a busy fleet does not make every browser refetch per
	// message. Default 1 s.
	EventInterval time.Duration
	// Logger receives errors; nil discards them.
	Logger *slog.Logger
}

// Console serves the web pages.
type Console struct {
	inv      Inventory
	pages    map[string]*template.Template
	static   http.Handler
	log      *slog.Logger
	streams  atomic.Int64
	maxStrm  int64
	interval time.Duration
}

// pageLimit is how many devices the device page shows.
const pageLimit = 500

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
	layout, err := template.ParseFS(tfs, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: parse layout: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"devices"} {
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
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &Console{
		inv: opts.Inventory, pages: pages, log: log,
		static:  http.StripPrefix("/static/", http.FileServerFS(static)),
		maxStrm: int64(opts.MaxStreams), interval: opts.EventInterval,
	}, nil
}

// Register adds the console's routes to mux.
func (c *Console) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", c.devicesPage)
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("GET /events", c.events)
}

type devicesData struct {
	Title   string
	Devices []api.Device
	Online  int
	More    bool
	Limit   int
}

func (c *Console) devicesPage(w http.ResponseWriter, r *http.Request) {
	page, err := c.inv.List(r.Context(), inventory.Query{Limit: pageLimit})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := devicesData{Title: "Devices", More: page.Next != "", Limit: pageLimit}
	for _, d := range page.Devices {
		data.Devices = append(data.Devices, api.DeviceOf(d))
		if d.Online {
			data.Online++
		}
	}
	c.render(w, r, "devices", data)
}

// render executes into a buffer first, so a failing template yields a clean
// 500 rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, page string, data any) {
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = buf.WriteTo(w)
}

// fail answers 500 with a message for the user; the cause goes to the log.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	c.log.Error("console page failed", "path", r.URL.Path, "error", err)
	http.Error(w, "The page could not be shown; the server log has the details.", http.StatusInternalServerError)
}

// events streams a "devices" event whenever the inventory changes, at most
// once per EventInterval, until the client leaves or the server shuts down
// (the request context ends).
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
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	send := func() bool {
		if _, err := fmt.Fprint(w, "event: devices\ndata: {}\n\n"); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	// Take the change channel before each send, so a change that happens
	// while the page is being told about the previous one is not missed.
	changed := c.inv.Changed()
	if !send() {
		return
	}
	keepalive := time.NewTicker(30 * time.Second)
	defer keepalive.Stop()
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
		if !send() {
			return
		}
	}
}
