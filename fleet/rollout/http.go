package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// maxBodyBytes bounds a request body: a spec with MaxStaticDevices ids
// fits.
const maxBodyBytes = 4 << 20

// Register adds the group, rollout and audit routes under /api/v1 to mux.
// Authentication is the caller's middleware.
//
//	GET    /api/v1/groups                      groups
//	GET    /api/v1/groups/{name}               a group and its members now
//	PUT    /api/v1/groups/{name}               create or replace (Group JSON)
//	DELETE /api/v1/groups/{name}
//	GET    /api/v1/rollouts                    rollouts, newest first
//	POST   /api/v1/rollouts                    create (Spec JSON) → 201 Status
//	GET    /api/v1/rollouts/{id}               Status: state, decisions with evidence, live gates
//	GET    /api/v1/rollouts/{id}/devices       targets (?state=incompatible|dispatched|pending)
//	GET    /api/v1/rollouts/{id}/audit         the rollout's audit log
//	POST   /api/v1/rollouts/{id}/{action}      pause, resume, promote, abort, rollback ({"reason": ...})
//	GET    /api/v1/audit?after=&limit=         the whole audit log
//	GET    /api/v1/devices/{id}/desired        what the server last told the device to run
func (e *Engine) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/groups", e.handleGroups)
	mux.HandleFunc("GET /api/v1/groups/{name}", e.handleGroup)
	mux.HandleFunc("PUT /api/v1/groups/{name}", e.handlePutGroup)
	mux.HandleFunc("DELETE /api/v1/groups/{name}", e.handleDeleteGroup)
	mux.HandleFunc("GET /api/v1/rollouts", e.handleList)
	mux.HandleFunc("POST /api/v1/rollouts", e.handleCreate)
	mux.HandleFunc("GET /api/v1/rollouts/{id}", e.handleGet)
	mux.HandleFunc("GET /api/v1/rollouts/{id}/devices", e.handleTargets)
	mux.HandleFunc("GET /api/v1/rollouts/{id}/audit", e.handleAudit)
	mux.HandleFunc("POST /api/v1/rollouts/{id}/{action}", e.handleAct)
	mux.HandleFunc("GET /api/v1/audit", e.handleAudit)
	mux.HandleFunc("GET /api/v1/devices/{id}/desired", e.handleDesired)
}

// Handler serves the routes of Register alone.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	e.Register(mux)
	return mux
}

// APIError is the body of an error response.
type APIError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (e *Engine) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrLimit):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrNoTargets):
		code = http.StatusUnprocessableEntity
	case errors.Is(err, ErrClosed):
		code = http.StatusServiceUnavailable
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		e.log.Error("rollout API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error; the server log has the cause"
	}
	writeJSON(w, code, APIError{Error: msg})
}

func decodeBody(r *http.Request, v any, optional bool) error {
	body := http.MaxBytesReader(nil, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return nil
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: request body over %d bytes", ErrLimit, maxBodyBytes)
		}
		return fmt.Errorf("%w: request body is not the expected JSON: %v", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: request body has data after the JSON object", ErrInvalid)
	}
	return nil
}

func (e *Engine) handleGroups(w http.ResponseWriter, r *http.Request) {
	gs, err := e.Groups(r.Context())
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": nonNil(gs)})
}

// GroupMembers is a group with the devices it selects now.
type GroupMembers struct {
	Group
	Members []string `json:"members"`
}

func (e *Engine) handleGroup(w http.ResponseWriter, r *http.Request) {
	g, err := e.Group(r.Context(), r.PathValue("name"))
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	ids, err := e.Members(r.Context(), g.Name)
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, GroupMembers{Group: g, Members: nonNil(ids)})
}

func (e *Engine) handlePutGroup(w http.ResponseWriter, r *http.Request) {
	var g Group
	if err := decodeBody(r, &g, false); err != nil {
		e.writeError(w, r, err)
		return
	}
	if g.Name == "" {
		g.Name = r.PathValue("name")
	}
	if g.Name != r.PathValue("name") {
		e.writeError(w, r, fmt.Errorf("%w: body names group %q, path %q", ErrInvalid, truncate(g.Name), truncate(r.PathValue("name"))))
		return
	}
	if err := e.PutGroup(r.Context(), g); err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, g)
}

func (e *Engine) handleDeleteGroup(w http.ResponseWriter, r *http.Request) {
	if err := e.DeleteGroup(r.Context(), r.PathValue("name")); err != nil {
		e.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Engine) handleList(w http.ResponseWriter, r *http.Request) {
	rs, err := e.List(r.Context())
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollouts": nonNil(rs)})
}

func (e *Engine) handleCreate(w http.ResponseWriter, r *http.Request) {
	var s Spec
	if err := decodeBody(r, &s, false); err != nil {
		e.writeError(w, r, err)
		return
	}
	ro, err := e.Create(r.Context(), s)
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, Status{Rollout: *ro})
}

func (e *Engine) handleGet(w http.ResponseWriter, r *http.Request) {
	s, err := e.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (e *Engine) handleTargets(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", "incompatible", "dispatched", "pending":
	default:
		e.writeError(w, r, fmt.Errorf("%w: state %q is not incompatible, dispatched or pending", ErrInvalid, truncate(state)))
		return
	}
	ts, err := e.Targets(r.Context(), r.PathValue("id"))
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	out := ts[:0]
	for _, t := range ts {
		switch {
		case state == "incompatible" && t.Incompatible == "",
			state == "dispatched" && t.Phase < 0,
			state == "pending" && (t.Phase >= 0 || t.Incompatible != ""):
			continue
		}
		out = append(out, t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": nonNil(out)})
}

func (e *Engine) handleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	limit := 1000
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			e.writeError(w, r, fmt.Errorf("%w: after %q is not a sequence number", ErrInvalid, truncate(s)))
			return
		}
		after = v
	}
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 10000 {
			e.writeError(w, r, fmt.Errorf("%w: limit %q is not 1..10000", ErrInvalid, truncate(s)))
			return
		}
		limit = v
	}
	id := r.PathValue("id")
	if id != "" {
		if _, err := e.Get(r.Context(), id); err != nil {
			e.writeError(w, r, err)
			return
		}
	}
	as, err := e.Audit(r.Context(), id, after, limit)
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": nonNil(as)})
}

// ActionRequest is the optional body of an action.
type ActionRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (e *Engine) handleAct(w http.ResponseWriter, r *http.Request) {
	var req ActionRequest
	if err := decodeBody(r, &req, true); err != nil {
		e.writeError(w, r, err)
		return
	}
	s, err := e.Act(r.Context(), r.PathValue("id"), r.PathValue("action"), req.Reason)
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (e *Engine) handleDesired(w http.ResponseWriter, r *http.Request) {
	d, err := e.Desired(r.Context(), r.PathValue("id"))
	if err != nil {
		e.writeError(w, r, err)
		return
	}
	if d.Models == nil {
		d.Models = []DesiredSummary{}
	}
	writeJSON(w, http.StatusOK, d)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
