package enroll

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// HTTPOptions configure the enrolment routes.
type HTTPOptions struct {
	// BrokerURL is the broker address handed to enrolled devices: the one
	// they can reach, which may differ from where the server listens.
	BrokerURL string
	// FleetKey is the model-signing public key devices pin; nil leaves it out.
	FleetKey ed25519.PublicKey
	// CACert is the PEM CA certificate devices pin for TLS; nil leaves it out.
	CACert []byte
	// ServerUser and ServerSecret are the fleet server's own credentials
	// on an external broker, which the broker-auth endpoints (EMQX) allow
	// on every device topic. Empty ServerUser disables that.
	ServerUser   string
	ServerSecret Secret
	// SignClient, when set, issues client certificates for devices that
	// send a certificate request (tlsca.CA.SignClient).
	SignClient func(csrPEM []byte, deviceID string) ([]byte, error)
	Logger     *slog.Logger
}

// Handler serves the enrolment API.
type Handler struct {
	e    *Enroll
	opts HTTPOptions
	log  *slog.Logger
}

// NewHandler returns the enrolment API of e.
func NewHandler(e *Enroll, opts HTTPOptions) *Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{e: e, opts: opts, log: log}
}

// Register adds the routes to mux. POST /api/v1/enroll is for devices;
// /api/v1/enroll-tokens and /api/v1/enrollments are for operators; the
// /api/v1/mqtt/ endpoints are for an EMQX broker's HTTP auth and
// authorisation.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+proto.EnrollPath, h.enroll)
	mux.HandleFunc("POST /api/v1/enroll-tokens", h.createToken)
	mux.HandleFunc("GET /api/v1/enroll-tokens", h.listTokens)
	mux.HandleFunc("DELETE /api/v1/enroll-tokens/{id}", h.revokeToken)
	mux.HandleFunc("GET /api/v1/enrollments", h.listDevices)
	mux.HandleFunc("POST /api/v1/enrollments/{id}/{action}", h.deviceAction)
	mux.HandleFunc("DELETE /api/v1/enrollments/{id}", h.removeDevice)
	mux.HandleFunc("POST /api/v1/mqtt/auth", h.mqttAuth)
	mux.HandleFunc("POST /api/v1/mqtt/acl", h.mqttACL)
}

// maxBodyBytes bounds every request body of these routes.
const maxBodyBytes = 16 << 10

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("request body is not the expected JSON: %v", err)})
		return false
	}
	return true
}

// writeError maps the package's errors to statuses; their messages are
// written for the user, and anything else is an internal error that is
// logged, not shown.
func (h *Handler) writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadToken), errors.Is(err, ErrTokenExpired), errors.Is(err, ErrTokenUsedUp):
		code = http.StatusUnauthorized
	case errors.Is(err, ErrRefused):
		code = http.StatusForbidden
	case errors.Is(err, ErrExists):
		code = http.StatusConflict
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrLimit):
		code = http.StatusTooManyRequests
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	if code >= 500 {
		h.log.Error("enrolment request failed", "error", err)
		writeJSON(w, code, errorBody{"internal error; see the server log"})
		return
	}
	writeJSON(w, code, errorBody{err.Error()})
}

func (h *Handler) response(c Credentials) proto.EnrollResponse {
	out := proto.EnrollResponse{DeviceID: c.DeviceID, Secret: string(c.Secret), Labels: c.Labels, BrokerURL: h.opts.BrokerURL, CACert: string(h.opts.CACert)}
	if h.opts.FleetKey != nil {
		out.FleetKey = base64.StdEncoding.EncodeToString(h.opts.FleetKey)
	}
	return out
}

func (h *Handler) enroll(w http.ResponseWriter, r *http.Request) {
	var req proto.EnrollRequest
	if !readJSON(w, r, &req) {
		return
	}
	var (
		c          Credentials
		err        error
		clientCert []byte
	)
	// Sign first: a bad request must not use up the token.
	if req.CSR != "" {
		if h.opts.SignClient == nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"this server issues no client certificates (it runs without --tls=self-signed); enrol without one"})
			return
		}
		if err := proto.ValidateDeviceID(req.DeviceID); err != nil {
			h.writeError(w, fmt.Errorf("%w: %w", ErrInvalid, err))
			return
		}
		if clientCert, err = h.opts.SignClient([]byte(req.CSR), req.DeviceID); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("certificate request: %v", err)})
			return
		}
	}
	switch {
	case req.Token != "":
		c, err = h.e.Enrol(r.Context(), req.Token, req.DeviceID)
	case req.RequestKey != "":
		c, err = h.e.Request(r.Context(), req.DeviceID, req.RequestKey)
	default:
		err = fmt.Errorf("%w: give a token, or a request key to wait for an operator", ErrInvalid)
	}
	if errors.Is(err, ErrPending) {
		writeJSON(w, http.StatusAccepted, errorBody{err.Error()})
		return
	}
	if err != nil {
		h.log.Info("enrolment refused", "device", req.DeviceID, "remote", r.RemoteAddr, "error", err)
		h.writeError(w, err)
		return
	}
	resp := h.response(c)
	resp.ClientCert = string(clientCert)
	writeJSON(w, http.StatusOK, resp)
}

// TokenRequest is the body of POST /api/v1/enroll-tokens; TTL is a Go
// duration ("24h").
type TokenRequest struct {
	Labels  map[string]string `json:"labels,omitempty"`
	Group   string            `json:"group,omitempty"`
	TTL     string            `json:"ttl,omitempty"`
	MaxUses int               `json:"max_uses,omitempty"`
}

// TokenCreated is the answer to POST /api/v1/enroll-tokens; Secret is the
// full token, shown only here.
type TokenCreated struct {
	Token  Token  `json:"token"`
	Secret string `json:"secret"`
}

func (h *Handler) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	spec := TokenSpec{Labels: req.Labels, Group: req.Group, MaxUses: req.MaxUses}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("ttl %q is not a duration like 24h", req.TTL)})
			return
		}
		spec.TTL = d
	}
	t, s, err := h.e.CreateToken(r.Context(), spec)
	if err != nil {
		h.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, TokenCreated{Token: t, Secret: string(s)})
}

func (h *Handler) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := h.e.Tokens(r.Context())
	if err != nil {
		h.writeError(w, err)
		return
	}
	if ts == nil {
		ts = []Token{}
	}
	writeJSON(w, http.StatusOK, ts)
}

func (h *Handler) revokeToken(w http.ResponseWriter, r *http.Request) {
	if err := h.e.RevokeToken(r.Context(), r.PathValue("id")); err != nil {
		h.writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "", StatePending, StateAccepted, StateRejected, StateRevoked:
	default:
		writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("state %q is not one of pending, accepted, rejected, revoked", state)})
		return
	}
	ds, err := h.e.Devices(r.Context(), state)
	if err != nil {
		h.writeError(w, err)
		return
	}
	if ds == nil {
		ds = []Device{}
	}
	writeJSON(w, http.StatusOK, ds)
}

// PreauthorizeRequest is the optional body of
// POST /api/v1/enrollments/{id}/preauthorize.
type PreauthorizeRequest struct {
	Labels map[string]string `json:"labels,omitempty"`
}

func (h *Handler) deviceAction(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var err error
	switch r.PathValue("action") {
	case "accept":
		err = h.e.Accept(r.Context(), id)
	case "reject":
		err = h.e.Reject(r.Context(), id)
	case "revoke":
		err = h.e.Revoke(r.Context(), id)
	case "preauthorize":
		var req PreauthorizeRequest
		if r.ContentLength != 0 && !readJSON(w, r, &req) {
			return
		}
		c, err := h.e.Preauthorize(r.Context(), id, req.Labels)
		if err != nil {
			h.writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, h.response(c))
		return
	default:
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no action %q; use accept, reject, revoke or preauthorize", r.PathValue("action"))})
		return
	}
	if err != nil {
		h.writeError(w, err)
		return
	}
	d, err := h.e.Device(r.Context(), id)
	if err != nil {
		h.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) removeDevice(w http.ResponseWriter, r *http.Request) {
	if err := h.e.Remove(r.Context(), r.PathValue("id")); err != nil {
		h.writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// BrokerAuthRequest is what EMQX's HTTP authenticator and authoriser are
// configured to send (see deploy/mosquitto/README.md): the client id, the
// username, and the password or the topic and action.
type BrokerAuthRequest struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
	Topic    string `json:"topic,omitempty"`
	// Action is "publish" or "subscribe".
	Action string `json:"action,omitempty"`
}

// BrokerAuthResponse is EMQX's expected answer: result "allow" or "deny".
type BrokerAuthResponse struct {
	Result string `json:"result"`
}

func (h *Handler) isServer(user, password string) bool {
	if h.opts.ServerUser == "" || user != h.opts.ServerUser {
		return false
	}
	a, b := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(h.opts.ServerSecret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (h *Handler) mqttAuth(w http.ResponseWriter, r *http.Request) {
	var req BrokerAuthRequest
	if !readJSON(w, r, &req) {
		return
	}
	allow := h.isServer(req.Username, req.Password)
	if !allow && req.ClientID == req.Username {
		allow = h.e.Authenticate(r.Context(), req.Username, []byte(req.Password)) == nil
	}
	writeJSON(w, http.StatusOK, BrokerAuthResponse{Result: result(allow)})
}

func (h *Handler) mqttACL(w http.ResponseWriter, r *http.Request) {
	var req BrokerAuthRequest
	if !readJSON(w, r, &req) {
		return
	}
	var allow bool
	switch {
	case h.opts.ServerUser != "" && req.Username == h.opts.ServerUser:
		// The password was checked at connect; EMQX does not send it here.
		allow = true
	case req.ClientID != req.Username:
		allow = false
	case req.Action == "publish":
		allow = TopicAllowed(req.ClientID, req.Topic, true)
	case req.Action == "subscribe":
		allow = TopicAllowed(req.ClientID, req.Topic, false)
	}
	writeJSON(w, http.StatusOK, BrokerAuthResponse{Result: result(allow)})
}

func result(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// TopicAllowed is the device ACL, the same for every broker: a device
// publishes (write) only under its own id on the kinds devices send, and
// reads only its own desired state and commands. Wildcards, $SYS and
// every other topic are denied.
func TopicAllowed(deviceID, topic string, write bool) bool {
	id, kind, err := proto.ParseTopic(topic)
	if err != nil || id != deviceID {
		return false
	}
	return kind.FromDevice() == write
}
