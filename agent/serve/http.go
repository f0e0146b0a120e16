package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

// Handler returns the HTTP API:
//
//	GET  /v1/models               models, active versions, inputs and outputs
//	GET  /v1/models/{name}        one model
//	POST /v1/models/{name}/infer  run the active version (JSON or binary)
//	GET  /healthz                 200 while the process serves HTTP
//	GET  /readyz                  200 once a model is loaded, 503 before and while stopping
//	GET  /metrics                 Prometheus metrics
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("GET /v1/models/{name}", s.handleModel)
	mux.HandleFunc("POST /v1/models/{name}/infer", s.handleInfer)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s; see GET /v1/models", r.Method, r.URL.Path), 0)
	})
	return mux
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closed, n := s.closed, len(s.entries)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case closed || s.stopping.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "stopping\n")
	case n == 0:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "no model loaded\n")
	default:
		_, _ = io.WriteString(w, "ready\n")
	}
}

func specOf(m ModelInfo) wire.ModelSpec {
	spec := wire.ModelSpec{Name: m.Name, Version: m.Version, MaxBatch: m.MaxBatch, Variant: m.Variant}
	for _, ti := range m.Inputs {
		spec.Inputs = append(spec.Inputs, wire.SpecOf(ti))
	}
	for _, ti := range m.Outputs {
		spec.Outputs = append(spec.Outputs, wire.SpecOf(ti))
	}
	return spec
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	list := wire.ModelList{Models: []wire.ModelSpec{}}
	for _, m := range s.Models() {
		list.Models = append(list.Models, specOf(m))
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	m, err := s.Model(r.PathValue("name"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, specOf(m))
}

// parsed is an inference request as read from either form.
type parsed struct {
	tensors    []wire.Tensor
	deadline   time.Duration
	quantize   bool
	dequantize bool
	binary     bool
}

func (s *Server) handleInfer(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	name := r.PathValue("name")
	m, err := s.Model(name)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	// Bodies are read whole before admission, so the number being read at
	// once is bounded too: past it, callers are turned away unread.
	select {
	case s.bodies <- struct{}{}:
	default:
		w.Header().Set("Connection", "close") // do not drain the body first
		s.observe(Event{Model: name, Version: m.Version, Outcome: OutcomeQueueFull})
		s.writeErr(w, &BusyError{Err: fmt.Errorf("%w: %d requests are already being received", ErrQueueFull, cap(s.bodies)), Model: name, RetryAfter: 10 * time.Millisecond})
		return
	}
	// A full queue rejects before the body is read.
	if e := s.entry(name); e != nil && len(e.queue) == cap(e.queue) {
		<-s.bodies
		// Close the connection rather than drain the unread body first,
		// which net/http would do while this handler still runs.
		w.Header().Set("Connection", "close")
		e.markOverload(time.Now())
		s.writeErr(w, e.reject(&request{model: name}, OutcomeQueueFull, ErrQueueFull, max(e.waitEstimate(), time.Millisecond)))
		return
	}
	p, err := s.readRequest(w, r)
	<-s.bodies
	if err == nil {
		var inputs []runtime.Tensor
		if inputs, err = orderInputs(m, p.tensors); err == nil {
			// Checked against the active version here so a bad request
			// never takes a queue slot; the worker checks again against
			// the version that runs it.
			if err = checkRequest(m, inputs, p.quantize); err == nil {
				var res *Result
				res, err = s.Infer(r.Context(), name, inputs, InferOptions{Deadline: p.deadline, Quantize: p.quantize, Dequantize: p.dequantize, Arrived: arrived})
				if err == nil {
					writeResult(w, name, res, p.binary)
					return
				}
				s.writeErr(w, err)
				return
			}
		}
	}
	// The request never reached the queue; still count it.
	s.observe(Event{Model: name, Version: m.Version, Outcome: OutcomeBadInput})
	s.writeErr(w, err)
}

func (s *Server) readRequest(w http.ResponseWriter, r *http.Request) (parsed, error) {
	var p parsed
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil && r.Header.Get("Content-Type") != "" {
		return p, fmt.Errorf("%w: Content-Type %q: %v", ErrBadRequest, r.Header.Get("Content-Type"), err)
	}
	switch ct {
	case wire.ContentTypeBinary, "application/octet-stream":
		p.binary = true
	case "", wire.ContentTypeJSON, "application/x-www-form-urlencoded":
		// The last is what curl -d sends when no type is given; the body
		// is parsed as JSON all the same.
	default:
		return p, fmt.Errorf("%w: Content-Type %q; use %s or %s", ErrBadRequest, ct, wire.ContentTypeJSON, wire.ContentTypeBinary)
	}
	limit := s.opts.MaxJSONBytes
	if p.binary {
		limit = s.opts.MaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			hint := ""
			if !p.binary {
				hint = fmt.Sprintf("; send large tensors in the binary form (%s, up to %d bytes)", wire.ContentTypeBinary, s.opts.MaxBodyBytes)
			}
			return p, fmt.Errorf("%w: request body exceeds %d bytes%s", errTooLarge, limit, hint)
		}
		return p, fmt.Errorf("%w: reading the body: %v", ErrBadRequest, err)
	}
	if p.binary {
		f, err := wire.DecodeFrame(body)
		if err != nil {
			return p, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		p.tensors = f.Tensors
		p.quantize = f.Flags&wire.FlagQuantize != 0
		p.dequantize = f.Flags&wire.FlagDequantize != 0
	} else {
		if err := p.readJSON(body); err != nil {
			return p, err
		}
	}
	if h := r.Header.Get(wire.HeaderDeadline); h != "" {
		ms, err := strconv.ParseInt(h, 10, 64)
		if err != nil || ms <= 0 {
			return p, fmt.Errorf("%w: %s %q must be a positive number of milliseconds", ErrBadRequest, wire.HeaderDeadline, h)
		}
		p.deadline = time.Duration(min(ms, int64(s.opts.MaxDeadline/time.Millisecond))) * time.Millisecond
	}
	return p, nil
}

func (p *parsed) readJSON(body []byte) error {
	var req wire.JSONRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("%w: malformed JSON body: %v", errJSON, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: malformed JSON body: data after the request object", errJSON)
	}
	if req.DeadlineMs < 0 {
		return fmt.Errorf("%w: deadline_ms %d must be positive", ErrBadRequest, req.DeadlineMs)
	}
	if len(req.Inputs) == 0 {
		return fmt.Errorf("%w: %w: request has no inputs", ErrBadInput, ErrInputName)
	}
	if len(req.Inputs) > wire.MaxTensors {
		return fmt.Errorf("%w: %d inputs, at most %d allowed", ErrBadRequest, len(req.Inputs), wire.MaxTensors)
	}
	p.deadline = time.Duration(min(req.DeadlineMs, int64(time.Hour/time.Millisecond))) * time.Millisecond
	p.quantize, p.dequantize = req.Quantize, req.Dequantize
	for i, jt := range req.Inputs {
		label := fmt.Sprintf("input %d", i)
		if jt.Name != "" {
			label = fmt.Sprintf("input %q", jt.Name)
		}
		dt, err := runtime.ParseDType(jt.DType)
		if err != nil {
			return fmt.Errorf("%w: %w: %s: %v", ErrBadInput, ErrInputDType, label, err)
		}
		if len(jt.Shape) > wire.MaxRank {
			return fmt.Errorf("%w: %w: %s has rank %d, at most %d allowed", ErrBadInput, ErrInputShape, label, len(jt.Shape), wire.MaxRank)
		}
		n := runtime.NumElements(jt.Shape)
		if n < 0 {
			return fmt.Errorf("%w: %w: %s has invalid shape %v", ErrBadInput, ErrInputShape, label, jt.Shape)
		}
		if len(jt.Data) == 0 {
			return fmt.Errorf("%w: %w: %s has no data", ErrBadInput, ErrInputSize, label)
		}
		data, err := wire.DecodeData(dt, jt.Data, n)
		if err != nil {
			kind := ErrInputSize
			if errors.Is(err, wire.ErrJSON) {
				kind = errJSON
			}
			return fmt.Errorf("%w: %w: %s: %w", ErrBadInput, kind, label, err)
		}
		p.tensors = append(p.tensors, wire.Tensor{Name: jt.Name, DType: dt, Shape: jt.Shape, Data: data})
	}
	return nil
}

// orderInputs puts named tensors in the model's input order. Unnamed
// tensors are taken in order, and only if all are unnamed.
func orderInputs(m ModelInfo, ts []wire.Tensor) ([]runtime.Tensor, error) {
	names := make([]string, len(m.Inputs))
	for i, ti := range m.Inputs {
		names[i] = ti.Name
	}
	if len(ts) != len(m.Inputs) {
		return nil, fmt.Errorf("%w: %w: model %q takes %d inputs %q, got %d", ErrBadInput, ErrInputName, m.Name, len(m.Inputs), names, len(ts))
	}
	out := make([]runtime.Tensor, len(ts))
	if allUnnamed(ts) {
		for i, t := range ts {
			out[i] = runtime.Tensor{DType: t.DType, Shape: t.Shape, Data: t.Data}
		}
		return out, nil
	}
	seen := make([]bool, len(ts))
	for _, t := range ts {
		idx := -1
		for i, n := range names {
			if n == t.Name {
				idx = i
				break
			}
		}
		switch {
		case idx < 0:
			return nil, fmt.Errorf("%w: %w: model %q has no input %q; its inputs are %q", ErrBadInput, ErrInputName, m.Name, t.Name, names)
		case seen[idx]:
			return nil, fmt.Errorf("%w: %w: input %q given twice", ErrBadInput, ErrInputName, t.Name)
		}
		seen[idx] = true
		out[idx] = runtime.Tensor{DType: t.DType, Shape: t.Shape, Data: t.Data}
	}
	return out, nil
}

func allUnnamed(ts []wire.Tensor) bool {
	for _, t := range ts {
		if t.Name != "" {
			return false
		}
	}
	return true
}

func writeResult(w http.ResponseWriter, model string, res *Result, binary bool) {
	h := w.Header()
	h.Set(wire.HeaderVersion, res.Version)
	h.Set(wire.HeaderQueueMs, strconv.FormatFloat(ms(res.Queue), 'f', 3, 64))
	h.Set(wire.HeaderComputeMs, strconv.FormatFloat(ms(res.Compute), 'f', 3, 64))
	h.Set(wire.HeaderBatch, strconv.Itoa(res.Batch))
	if res.ServedBy != "" {
		h.Set(wire.HeaderServedBy, res.ServedBy)
	}
	if binary {
		f := wire.Frame{Tensors: make([]wire.Tensor, len(res.Outputs))}
		for i, t := range res.Outputs {
			f.Tensors[i] = wire.Tensor{Name: outName(res, i), DType: t.DType, Shape: t.Shape, Data: t.Data}
		}
		b, err := wire.AppendFrame(nil, f)
		if err != nil {
			writeError(w, http.StatusInternalServerError, string(OutcomeRunError), fmt.Sprintf("encoding outputs: %v", err), 0)
			return
		}
		h.Set("Content-Type", wire.ContentTypeBinary)
		h.Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
		return
	}
	resp := wire.JSONResponse{Model: model, Version: res.Version, ServedBy: res.ServedBy,
		Timing:  wire.Timing{QueueMs: ms(res.Queue), ComputeMs: ms(res.Compute), BatchSize: res.Batch},
		Outputs: make([]wire.JSONTensor, len(res.Outputs))}
	for i, t := range res.Outputs {
		data, err := wire.EncodeData(t.DType, t.Data)
		if err != nil {
			writeError(w, http.StatusInternalServerError, string(OutcomeRunError), fmt.Sprintf("encoding output %d: %v", i, err), 0)
			return
		}
		jt := wire.JSONTensor{Name: outName(res, i), DType: t.DType.String(), Shape: t.Shape, Data: data}
		if i < len(res.OutputInfo) {
			jt.Quantization = wire.QuantizationOf(res.OutputInfo[i].Quant)
		}
		resp.Outputs[i] = jt
	}
	writeJSON(w, http.StatusOK, resp)
}

func outName(res *Result, i int) string {
	if i < len(res.OutputInfo) {
		return res.OutputInfo[i].Name
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// writeErr maps an error to its status and kind.
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var busy *BusyError
	retry := time.Duration(0)
	if errors.As(err, &busy) {
		retry = busy.RetryAfter
	}
	status, kind := http.StatusInternalServerError, string(OutcomeRunError)
	switch {
	case errors.Is(err, ErrUnknownModel):
		status, kind = http.StatusNotFound, "unknown_model"
	case errors.Is(err, ErrQueueFull):
		status, kind = http.StatusTooManyRequests, string(OutcomeQueueFull)
	case errors.Is(err, ErrDeadlineUnmeetable):
		status, kind = http.StatusTooManyRequests, string(OutcomeDeadlineUnmeetable)
	case errors.Is(err, ErrExpired):
		status, kind = http.StatusServiceUnavailable, string(OutcomeExpired)
	case errors.Is(err, errTooLarge):
		status, kind = http.StatusRequestEntityTooLarge, "body_too_large"
	case errors.Is(err, errJSON):
		status, kind = http.StatusBadRequest, "bad_json"
	case errors.Is(err, ErrInputName):
		status, kind = http.StatusBadRequest, "bad_input_name"
	case errors.Is(err, ErrInputDType):
		status, kind = http.StatusBadRequest, "bad_dtype"
	case errors.Is(err, ErrInputShape):
		status, kind = http.StatusBadRequest, "bad_shape"
	case errors.Is(err, ErrInputSize):
		status, kind = http.StatusBadRequest, "bad_size"
	case errors.Is(err, ErrQuantize):
		status, kind = http.StatusBadRequest, "bad_quantize"
	case errors.Is(err, wire.ErrFrame), errors.Is(err, wire.ErrDType), errors.Is(err, wire.ErrSize):
		status, kind = http.StatusBadRequest, "bad_frame"
	case errors.Is(err, ErrBadInput), errors.Is(err, ErrBadRequest):
		status, kind = http.StatusBadRequest, "bad_request"
	case errors.Is(err, ErrClosed):
		status, kind = http.StatusServiceUnavailable, string(OutcomeUnavailable)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status, kind = http.StatusServiceUnavailable, string(OutcomeCanceled)
	default:
		s.log.Warn("inference failed", "err", err)
	}
	writeError(w, status, kind, err.Error(), retry)
}

func writeError(w http.ResponseWriter, status int, kind, msg string, retry time.Duration) {
	e := wire.Error{Kind: kind, Message: msg}
	if retry > 0 {
		e.RetryAfterMs = max(1, int64((retry+time.Millisecond-1)/time.Millisecond))
		// Retry-After has whole seconds; X-Retry-After-Ms keeps the estimate.
		w.Header().Set("Retry-After", strconv.FormatInt(max(1, int64((retry+time.Second-1)/time.Second)), 10))
		w.Header().Set("X-Retry-After-Ms", strconv.FormatInt(e.RetryAfterMs, 10))
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"kind":"internal","error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", wire.ContentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// ListenTCP listens on addr, which must be a loopback address (127.0.0.1,
// ::1, localhost) unless allowRemote is set: the API has no authentication.
func ListenTCP(addr string, allowRemote bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("serve: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); !allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("serve: listen address %q is not loopback; the inference API is for callers on this gateway (set AllowRemote to override)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return ln, nil
}

// ListenUnix listens on a unix socket at path with the given file mode. A
// stale socket left by a crashed agent is replaced; a live one, or any
// other file, is an error.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("serve: socket path %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("serve: socket %s is in use by another process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("serve: removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if err := os.Chmod(path, mode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("serve: setting socket mode: %w", err)
	}
	return ln, nil
}

// Serve answers the API on the listeners until ctx is done, then stops
// taking connections and waits (up to 10s) for requests in progress. It
// closes the listeners but not the Server: call Close after.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	if len(lns) == 0 {
		return errors.New("serve: no listener")
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.opts.MaxDeadline + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.log.Info("inference API listening", "addr", ln.Addr().String(), "network", ln.Addr().Network())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.stopping.Store(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		_ = srv.Close()
	}
	wg.Wait()
	return err
}

// Run listens on Options.Addr and Options.Socket, serves until ctx is done,
// then closes the Server.
func (s *Server) Run(ctx context.Context) error {
	var lns []net.Listener
	fail := func(err error) error {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return errors.Join(err, s.Close())
	}
	if a := s.opts.Addr; a != "-" {
		ln, err := ListenTCP(a, s.opts.AllowRemote)
		if err != nil {
			return fail(err)
		}
		lns = append(lns, ln)
	}
	if p := strings.TrimSpace(s.opts.Socket); p != "" {
		ln, err := ListenUnix(p, os.FileMode(s.opts.SocketMode))
		if err != nil {
			return fail(err)
		}
		lns = append(lns, ln)
	}
	err := s.Serve(ctx, lns...)
	return errors.Join(err, s.Close())
}
