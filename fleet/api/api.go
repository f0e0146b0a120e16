// Package api is the fleet server's JSON HTTP API under /api/v1, plus the
// health and readiness probes. Handlers turn query parameters into
// inventory queries and answer bad input with a 400 that names the
// parameter, without exposing internal errors.
//
// The handlers do not authenticate: the server (fleet/fleetd) puts
// fleet/auth's Wrap in front of the whole mux, so every route but the
// probes needs a console session or an API token ("Authorization: Bearer",
// EDGEFLEET_TOKEN for Client), reads need the viewer role and writes the
// operator role.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

// Inventory is what the API reads devices from.
type Inventory interface {
	List(ctx context.Context, q inventory.Query) (inventory.Page, error)
	Device(ctx context.Context, id string) (store.Device, error)
	Telemetry(ctx context.Context, id string, limit int) ([]store.Window, error)
}

// Options configure the API.
type Options struct {
	Inventory Inventory
	// Ready reports whether the server can serve (store and broker up);
	// nil means always ready.
	Ready func() error
	// Stats returns the counters GET /api/v1/stats shows; nil serves 404.
	Stats func() Stats
	// Logger receives handler errors; nil discards them.
	Logger *slog.Logger
}

// Stats is the body of GET /api/v1/stats: the counters to watch for lost
// or refused device messages.
type Stats struct {
	// Rejected counts dropped device messages by reason (inventory.Reason*).
	Rejected map[string]uint64 `json:"rejected"`
	// DuplicateTelemetry counts resent windows that were not counted again.
	DuplicateTelemetry uint64 `json:"duplicate_telemetry"`
	// Broker holds the MQTT side's counters (embedded or external).
	Broker map[string]int64 `json:"broker"`
}

// API serves the HTTP API.
type API struct {
	inv   Inventory
	ready func() error
	stats func() Stats
	log   *slog.Logger
}

// New returns the API.
func New(opts Options) *API {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ready := opts.Ready
	if ready == nil {
		ready = func() error { return nil }
	}
	return &API{inv: opts.Inventory, ready: ready, stats: opts.Stats, log: log}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/devices", a.listDevices)
	mux.HandleFunc("GET /api/v1/devices/{id}", a.getDevice)
	mux.HandleFunc("GET /api/v1/devices/{id}/telemetry", a.getTelemetry)
	mux.HandleFunc("GET /api/v1/stats", a.getStats)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
}

// Handler returns a mux with only the API's routes, for tests and for
// servers that mount nothing else.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux)
	return mux
}

// Device is a device as the API shows it.
type Device struct {
	ID              string                 `json:"id"`
	Status          string                 `json:"status"`
	Profile         string                 `json:"profile"`
	Labels          map[string]string      `json:"labels"`
	LastSeen        string                 `json:"last_seen"`
	FirstSeen       string                 `json:"first_seen"`
	Models          []store.InstalledModel `json:"models"`
	ActiveModel     string                 `json:"active_model,omitempty"`
	Hardware        store.Hardware         `json:"hardware"`
	Backends        []store.Backend        `json:"backends"`
	AgentVersion    string                 `json:"agent_version"`
	ProtocolVersion uint32                 `json:"protocol_version"`
	Session         uint64                 `json:"session"`
	LastSeq         uint64                 `json:"last_telemetry_seq"`
	WindowsDropped  uint64                 `json:"telemetry_windows_dropped"`
}

// DeviceList is the body of GET /api/v1/devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
	// Next is the cursor of the following page; empty on the last one.
	Next string `json:"next"`
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	// Param names the query parameter at fault, for 400s.
	Param string `json:"param,omitempty"`
}

// DeviceOf converts a stored device to its API form.
func DeviceOf(d store.Device) Device {
	out := Device{
		ID: d.ID, Status: inventory.StatusOffline, Profile: d.Profile, Labels: d.Labels,
		LastSeen: formatTime(d.LastSeen), FirstSeen: formatTime(d.FirstSeen),
		Models: d.Models, Hardware: d.Hardware, Backends: d.Backends, AgentVersion: d.AgentVersion,
		ProtocolVersion: d.ProtocolVersion, Session: d.Session, LastSeq: d.LastSeq, WindowsDropped: d.WindowsDropped,
	}
	if d.Online {
		out.Status = inventory.StatusOnline
	}
	if m, ok := d.ActiveModel(); ok {
		out.ActiveModel = m.Name + "@" + m.Version
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Models == nil {
		out.Models = []store.InstalledModel{}
	}
	if out.Backends == nil {
		out.Backends = []store.Backend{}
	}
	return out
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// maxQueryBytes bounds the raw query string; the server's MaxHeaderBytes
// bounds it too, this gives a clear 400 instead.
const maxQueryBytes = 8 << 10

// ParseQuery turns the query parameters of GET /api/v1/devices into an
// inventory query. An error is a *ParamError naming the parameter.
func ParseQuery(v url.Values) (inventory.Query, error) {
	var q inventory.Query
	for key := range v {
		switch key {
		case "label", "profile", "status", "model", "limit", "cursor":
		default:
			param := key
			if param == "" {
				param = "query" // "?=x" has a parameter without a name
			}
			return q, &ParamError{Param: clip(param), Msg: fmt.Sprintf("unknown query parameter %q; known are label, profile, status, model, limit, cursor", clip(key))}
		}
	}
	for _, key := range []string{"profile", "status", "model", "limit", "cursor"} {
		if len(v[key]) > 1 {
			return q, &ParamError{Param: key, Msg: "given more than once"}
		}
	}
	if ls := v["label"]; len(ls) > 0 {
		if len(ls) > proto.MaxLabels {
			return q, &ParamError{Param: "label", Msg: fmt.Sprintf("%d label filters, limit %d", len(ls), proto.MaxLabels)}
		}
		q.Labels = map[string]string{}
		for _, l := range ls {
			k, val, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return q, &ParamError{Param: "label", Msg: fmt.Sprintf("%q is not of the form key=value", clip(l))}
			}
			if len(k) > proto.MaxLabelKeyLen || len(val) > proto.MaxLabelValueLen {
				return q, &ParamError{Param: "label", Msg: fmt.Sprintf("%q is longer than a label can be", clip(l))}
			}
			if prev, dup := q.Labels[k]; dup && prev != val {
				return q, &ParamError{Param: "label", Msg: fmt.Sprintf("key %q given with two values", clip(k))}
			}
			q.Labels[k] = val
		}
	}
	q.Profile = v.Get("profile")
	q.Model = v.Get("model")
	q.Status = v.Get("status")
	switch q.Status {
	case "", inventory.StatusOnline, inventory.StatusOffline:
	default:
		return q, &ParamError{Param: "status", Msg: fmt.Sprintf("%q is neither online nor offline", clip(q.Status))}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > inventory.MaxLimit {
			return q, &ParamError{Param: "limit", Msg: fmt.Sprintf("%q is not a number from 1 to %d", clip(s), inventory.MaxLimit)}
		}
		q.Limit = n
	}
	for _, key := range []string{"profile", "model"} {
		if len(v.Get(key)) > proto.MaxStringLen {
			return q, &ParamError{Param: key, Msg: fmt.Sprintf("longer than %d bytes", proto.MaxStringLen)}
		}
	}
	q.Cursor = v.Get("cursor")
	// Everything but the cursor is checked above, so what Validate still
	// finds is about the cursor.
	if err := q.Validate(); err != nil {
		return q, &ParamError{Param: "cursor", Msg: strings.TrimPrefix(err.Error(), inventory.ErrBadQuery.Error()+": ")}
	}
	return q, nil
}

// ParamError is a bad query parameter.
type ParamError struct {
	Param string
	Msg   string
}

func (e *ParamError) Error() string { return fmt.Sprintf("query parameter %s: %s", e.Param, e.Msg) }

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.RawQuery) > maxQueryBytes {
		writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("query string is %d bytes, limit %d", len(r.URL.RawQuery), maxQueryBytes), Param: "query"})
		return
	}
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: "query string is not valid URL encoding: " + err.Error(), Param: "query"})
		return
	}
	q, err := ParseQuery(v)
	if err != nil {
		var pe *ParamError
		errors.As(err, &pe)
		writeJSON(w, http.StatusBadRequest, Error{Error: pe.Error(), Param: pe.Param})
		return
	}
	page, err := a.inv.List(r.Context(), q)
	if err != nil {
		if errors.Is(err, inventory.ErrBadQuery) {
			writeJSON(w, http.StatusBadRequest, Error{Error: err.Error(), Param: "query"})
			return
		}
		a.internal(w, r, err)
		return
	}
	out := DeviceList{Devices: make([]Device, 0, len(page.Devices)), Next: page.Next}
	for _, d := range page.Devices {
		out.Devices = append(out.Devices, DeviceOf(d))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := proto.ValidateDeviceID(id); err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: err.Error(), Param: "id"})
		return
	}
	d, err := a.inv.Device(r.Context(), id)
	if errors.Is(err, inventory.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, Error{Error: fmt.Sprintf("no device with id %q", id)})
		return
	}
	if err != nil {
		a.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, DeviceOf(d))
}

func (a *API) getStats(w http.ResponseWriter, _ *http.Request) {
	if a.stats == nil {
		writeJSON(w, http.StatusNotFound, Error{Error: "this server keeps no stats"})
		return
	}
	st := a.stats()
	if st.Rejected == nil {
		st.Rejected = map[string]uint64{}
	}
	if st.Broker == nil {
		st.Broker = map[string]int64{}
	}
	writeJSON(w, http.StatusOK, st)
}

// TelemetryList is the body of GET /api/v1/devices/{id}/telemetry.
type TelemetryList struct {
	Windows []TelemetryWindow `json:"windows"`
}

// TelemetryWindow is one stored window: when it arrived and what the
// device sent, in the protobuf JSON mapping of proto.TelemetryWindow.
type TelemetryWindow struct {
	Seq      uint64          `json:"seq"`
	Received string          `json:"received"`
	Window   json.RawMessage `json:"window"`
}

// Default and largest number of windows one telemetry request returns.
const (
	DefaultTelemetryLimit = 100
	MaxTelemetryLimit     = 1000
)

func (a *API) getTelemetry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := proto.ValidateDeviceID(id); err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: err.Error(), Param: "id"})
		return
	}
	limit := DefaultTelemetryLimit
	for key := range r.URL.Query() {
		if key != "limit" {
			writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("unknown query parameter %q; known is limit", clip(key)), Param: clip(key)})
			return
		}
	}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTelemetryLimit {
			writeJSON(w, http.StatusBadRequest, Error{Error: fmt.Sprintf("limit %q is not a number from 1 to %d", clip(s), MaxTelemetryLimit), Param: "limit"})
			return
		}
		limit = n
	}
	if _, err := a.inv.Device(r.Context(), id); err != nil {
		if errors.Is(err, inventory.ErrNotFound) {
			writeJSON(w, http.StatusNotFound, Error{Error: fmt.Sprintf("no device with id %q", id)})
			return
		}
		a.internal(w, r, err)
		return
	}
	ws, err := a.inv.Telemetry(r.Context(), id, limit)
	if err != nil {
		a.internal(w, r, err)
		return
	}
	out := TelemetryList{Windows: make([]TelemetryWindow, 0, len(ws))}
	for _, win := range ws {
		// Stored windows passed Decode when they arrived; decode again
		// without the validation of this build's rules, which may be
		// stricter than those of the build that stored them.
		var m proto.TelemetryWindow
		if err := protobuf.Unmarshal(win.Payload, &m); err != nil {
			a.log.Warn("stored telemetry window does not decode; skipped", "device", id, "seq", win.Seq, "error", err)
			continue
		}
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&m)
		if err != nil {
			a.internal(w, r, err)
			return
		}
		out.Windows = append(out.Windows, TelemetryWindow{Seq: win.Seq, Received: formatTime(win.Received), Window: b})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := a.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, Error{Error: "not ready: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// internal answers 500 without the cause, which may name files or
// internals; the cause goes to the log.
func (a *API) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	writeJSON(w, http.StatusInternalServerError, Error{Error: "internal error; see the server log"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
