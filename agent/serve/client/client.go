// Package client is a Go client for the agent's local inference API
// (agent/serve), over TCP or the agent's unix socket, in the JSON form for
// small tensors and the binary form for real payloads. Errors from the
// server come back as *Error, which matches ErrBusy, ErrNotFound or
// ErrBadRequest with errors.Is.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

// MaxResponseBytes bounds a response body the client reads.
const MaxResponseBytes = 256 << 20

// Client calls one agent. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client for the API at baseURL, e.g. "http://127.0.0.1:8470".
// hc may be nil for a client with keep-alive connections and no overall
// timeout (deadlines come from each call's context and options).
func New(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must look like http://127.0.0.1:8470", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}, nil
}

// NewUnix returns a client for the API on the unix socket at path.
func NewUnix(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
	}
	return &Client{base: "http://unix", hc: &http.Client{Transport: tr}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is an error response from the server.
type Error struct {
	Status     int
	Kind       string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("inference API %d %s: %s (retry after %v)", e.Status, e.Kind, e.Message, e.RetryAfter)
	}
	return fmt.Sprintf("inference API %d %s: %s", e.Status, e.Kind, e.Message)
}

// Is makes errors.Is(err, ErrBusy) and friends work.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBusy:
		return e.Status == http.StatusTooManyRequests || (e.Status == http.StatusServiceUnavailable && e.Kind == "expired")
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrBadRequest:
		return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusNotFound && e.Status != http.StatusTooManyRequests
	}
	return false
}

// Options tune one inference call.
type Options struct {
	// Deadline is sent as X-Deadline-Ms; 0 leaves the server's default.
	Deadline time.Duration
	// Quantize has the server quantize float32 inputs for quantized model
	// inputs; Dequantize asks for quantized outputs as float32.
	Quantize, Dequantize bool
}

// Response is a successful inference.
type Response struct {
	Model, Version string
	// ServedBy is the lighter variant that answered under overload, or "".
	ServedBy string
	Outputs  []wire.Tensor
	// Queue and Compute are the server's timings; Batch the number of
	// requests in the run.
	Queue, Compute time.Duration
	Batch          int
}

// Ready returns nil when the agent's /readyz says ready.
func (c *Client) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: readyz: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("client: not ready: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// Models lists the served models.
func (c *Client) Models(ctx context.Context) ([]wire.ModelSpec, error) {
	var list wire.ModelList
	if err := c.getJSON(ctx, "/v1/models", &list); err != nil {
		return nil, err
	}
	return list.Models, nil
}

// Model describes one served model.
func (c *Client) Model(ctx context.Context, name string) (wire.ModelSpec, error) {
	var m wire.ModelSpec
	err := c.getJSON(ctx, "/v1/models/"+url.PathEscape(name), &m)
	return m, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return fmt.Errorf("client: GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return apiError(resp, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: GET %s: %v", ErrResponse, path, err)
	}
	return nil
}

// Infer runs inputs on model in the JSON form; use it for small tensors.
func (c *Client) Infer(ctx context.Context, model string, inputs []wire.Tensor, opts Options) (*Response, error) {
	jr := wire.JSONRequest{Quantize: opts.Quantize, Dequantize: opts.Dequantize, Inputs: make([]wire.JSONTensor, len(inputs))}
	for i, t := range inputs {
		data, err := wire.EncodeData(t.DType, t.Data)
		if err != nil {
			return nil, fmt.Errorf("client: input %q: %w", t.Name, err)
		}
		jr.Inputs[i] = wire.JSONTensor{Name: t.Name, DType: t.DType.String(), Shape: t.Shape, Data: data}
	}
	body, err := json.Marshal(jr)
	if err != nil {
		return nil, fmt.Errorf("client: encoding request: %w", err)
	}
	return c.post(ctx, model, wire.ContentTypeJSON, body, opts)
}

// InferBinary runs inputs on model in the binary form.
func (c *Client) InferBinary(ctx context.Context, model string, inputs []wire.Tensor, opts Options) (*Response, error) {
	f := wire.Frame{Tensors: inputs}
	if opts.Quantize {
		f.Flags |= wire.FlagQuantize
	}
	if opts.Dequantize {
		f.Flags |= wire.FlagDequantize
	}
	body, err := wire.AppendFrame(nil, f)
	if err != nil {
		return nil, fmt.Errorf("client: encoding request: %w", err)
	}
	return c.post(ctx, model, wire.ContentTypeBinary, body, opts)
}

func (c *Client) post(ctx context.Context, model, ctype string, body []byte, opts Options) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/models/"+url.PathEscape(model)+"/infer", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ctype)
	if opts.Deadline > 0 {
		req.Header.Set(wire.HeaderDeadline, strconv.FormatInt(max(1, opts.Deadline.Milliseconds()), 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: infer %s: %w", model, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("client: infer %s: reading response: %w", model, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(resp, rb)
	}
	rct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if rct == wire.ContentTypeBinary {
		f, err := wire.DecodeFrame(rb)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrResponse, err)
		}
		r := &Response{Model: model, Version: resp.Header.Get(wire.HeaderVersion), ServedBy: resp.Header.Get(wire.HeaderServedBy), Outputs: f.Tensors}
		r.Queue = headerMs(resp.Header.Get(wire.HeaderQueueMs))
		r.Compute = headerMs(resp.Header.Get(wire.HeaderComputeMs))
		r.Batch, _ = strconv.Atoi(resp.Header.Get(wire.HeaderBatch))
		return r, nil
	}
	var jr wire.JSONResponse
	if err := json.Unmarshal(rb, &jr); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrResponse, err)
	}
	r := &Response{Model: jr.Model, Version: jr.Version, ServedBy: jr.ServedBy, Batch: jr.Timing.BatchSize,
		Queue:   time.Duration(jr.Timing.QueueMs * float64(time.Millisecond)),
		Compute: time.Duration(jr.Timing.ComputeMs * float64(time.Millisecond))}
	for _, jt := range jr.Outputs {
		dt, err := runtime.ParseDType(jt.DType)
		if err != nil {
			return nil, fmt.Errorf("%w: output %q: %v", ErrResponse, jt.Name, err)
		}
		data, err := wire.DecodeData(dt, jt.Data, runtime.NumElements(jt.Shape))
		if err != nil {
			return nil, fmt.Errorf("%w: output %q: %w", ErrResponse, jt.Name, err)
		}
		r.Outputs = append(r.Outputs, wire.Tensor{Name: jt.Name, DType: dt, Shape: jt.Shape, Data: data})
	}
	return r, nil
}

func headerMs(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return time.Duration(f * float64(time.Millisecond))
}

func apiError(resp *http.Response, body []byte) error {
	e := &Error{Status: resp.StatusCode}
	var we wire.Error
	if err := json.Unmarshal(body, &we); err == nil && we.Kind != "" {
		e.Kind, e.Message = we.Kind, we.Message
		e.RetryAfter = time.Duration(we.RetryAfterMs) * time.Millisecond
	} else {
		e.Kind, e.Message = "http", strings.TrimSpace(string(body))
	}
	if e.RetryAfter == 0 {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
	}
	return e
}
