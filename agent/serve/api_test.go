package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

func TestInferJSONAndBinary(t *testing.T) {
	st := start(t, Options{Workers: 1})
	if err := st.Swap("sim", "v1", newSim(1, 0)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Client.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	models, err := st.Client.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 || models[0].Name != "sim" || models[0].Version != "v1" ||
		models[0].Inputs[0].Name != "x" || models[0].Inputs[0].DType != "float32" || !slices.Equal(models[0].Inputs[0].Shape, []int{-1, 4}) {
		t.Fatalf("models = %+v", models)
	}
	in := []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(1, 2, 3, 4)}}
	for _, form := range []string{"json", "binary"} {
		infer := st.Client.Infer
		if form == "binary" {
			infer = st.Client.InferBinary
		}
		res, err := infer(ctx, "sim", in, client.Options{Deadline: 2 * time.Second})
		if err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		if res.Version != "v1" || res.Batch != 1 || len(res.Outputs) != 1 || res.Outputs[0].Name != "y" {
			t.Fatalf("%s: response %+v", form, res)
		}
		if got := fromF32(res.Outputs[0].Data); !slices.Equal(got, []float32{3, 5, 7, 9}) || !slices.Equal(res.Outputs[0].Shape, []int{1, 4}) {
			t.Fatalf("%s: y = %v shape %v, want [3 5 7 9] [1 4]", form, got, res.Outputs[0].Shape)
		}
	}
	if n := metricSum(t, st.Server, "edgefleet_serve_successes_total", map[string]string{"model": "sim", "version": "v1"}); n != 2 {
		t.Errorf("successes_total = %v, want 2", n)
	}
	resp, err := http.Get(st.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"edgefleet_serve_requests_total", "edgefleet_serve_queue_wait_seconds_bucket", "edgefleet_serve_compute_seconds_bucket", "edgefleet_serve_batch_size_bucket"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	st := start(t, Options{Workers: 1, MaxJSONBytes: 4096})
	if err := st.Swap("sim", "v1", newSim(0, 0)); err != nil {
		t.Fatal(err)
	}
	frame, _ := wire.AppendFrame(nil, wire.Frame{Tensors: []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{1, 3}, Data: f32(1, 2, 3)}}})
	big := `{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[` + strings.Repeat("1,", 3000) + `1]}]}`
	cases := []struct {
		name, path, ctype, body string
		header                  map[string]string
		status                  int
		kind                    string
		says                    []string
	}{
		{"unknown model", "/v1/models/nope/infer", "", `{}`, nil, 404, "unknown_model", []string{`"nope"`}},
		{"malformed JSON", "/v1/models/sim/infer", "", `{"inputs":[`, nil, 400, "bad_json", []string{"malformed JSON"}},
		{"unknown field", "/v1/models/sim/infer", "", `{"inptus":[]}`, nil, 400, "bad_json", []string{"inptus"}},
		{"wrong shape", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"float32","shape":[1,5],"data":[1,2,3,4,5]}]}`, nil, 400, "bad_shape", []string{`"x"`, "[1 5]", "[-1 4]"}},
		{"wrong dtype", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"int8","shape":[1,4],"data":[1,2,3,4]}]}`, nil, 400, "bad_dtype", []string{`"x"`, "int8", "float32"}},
		{"unknown dtype", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"float8","shape":[1,4],"data":[1,2,3,4]}]}`, nil, 400, "bad_dtype", []string{"float8"}},
		{"too few elements", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,2,3]}]}`, nil, 400, "bad_size", []string{"3 elements", "needs 4"}},
		{"value out of range", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,2,3,1e99]}]}`, nil, 400, "bad_size", []string{"1e99", "float32"}},
		{"unknown input", "/v1/models/sim/infer", "", `{"inputs":[{"name":"z","dtype":"float32","shape":[1,4],"data":[1,2,3,4]}]}`, nil, 400, "bad_input_name", []string{`"z"`, `"x"`}},
		{"no inputs", "/v1/models/sim/infer", "", `{"inputs":[]}`, nil, 400, "bad_input_name", []string{"no inputs"}},
		{"oversized body", "/v1/models/sim/infer", "", big, nil, 413, "body_too_large", []string{"exceeds 4096 bytes", "binary form"}},
		{"bad deadline", "/v1/models/sim/infer", "", `{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,2,3,4]}]}`, map[string]string{"X-Deadline-Ms": "soon"}, 400, "bad_request", []string{"X-Deadline-Ms", "soon"}},
		{"bad frame", "/v1/models/sim/infer", wire.ContentTypeBinary, "XXXXXXXX", nil, 400, "bad_frame", []string{`"EFT1"`}},
		{"frame wrong shape", "/v1/models/sim/infer", wire.ContentTypeBinary, string(frame), nil, 400, "bad_shape", []string{"[1 3]", "[-1 4]"}},
		{"content type", "/v1/models/sim/infer", "text/plain", "hello", nil, 400, "bad_request", []string{"text/plain"}},
		{"no such endpoint", "/v2/whatever", "", "", nil, 404, "not_found", []string{"/v2/whatever"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, st.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e wire.Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status || e.Kind != tc.kind || !contains(e.Message, tc.says...) {
				t.Errorf("got %d %s %q; want %d %s naming %q", resp.StatusCode, e.Kind, e.Message, tc.status, tc.kind, tc.says)
			}
		})
	}
	if n := metricSum(t, st.Server, "edgefleet_serve_errors_total", map[string]string{"model": "sim", "kind": "bad_input"}); n < 10 {
		t.Errorf("errors_total{kind=bad_input} = %v, want every bad request counted", n)
	}
	// The client maps the same answers to typed errors.
	_, err := st.Client.Infer(context.Background(), "nope", nil, client.Options{})
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("unknown model: %v, want client.ErrNotFound", err)
	}
	_, err = st.Client.Infer(context.Background(), "sim", []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{2}, Data: f32(1, 2)}}, client.Options{})
	var ce *client.Error
	if !errors.Is(err, client.ErrBadRequest) || !errors.As(err, &ce) || ce.Kind != "bad_shape" {
		t.Errorf("bad shape: %v, want client.ErrBadRequest of kind bad_shape", err)
	}
}

func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "efserve")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	s := New(Options{Workers: 1})
	if err := s.Swap("sim", "v1", newSim(0, 0)); err != nil {
		t.Fatal(err)
	}
	ln, err := ListenUnix(path, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want a socket with 0660", st.Mode())
	}
	if _, err := ListenUnix(path, 0o660); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener on a live socket: %v, want an error saying it is in use", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := client.NewUnix(path)
	res, err := c.InferBinary(context.Background(), "sim", []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(1, 1, 1, 1)}}, client.Options{})
	if err != nil || !slices.Equal(fromF32(res.Outputs[0].Data), []float32{2, 2, 2, 2}) {
		t.Errorf("infer over the socket: %+v, %v", res, err)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left behind after shutdown: %v", err)
	}
}

func TestListenRefusesRemote(t *testing.T) {
	if _, err := ListenTCP("0.0.0.0:0", false); err == nil || !strings.Contains(err.Error(), "not loopback") {
		t.Errorf("ListenTCP(0.0.0.0) = %v, want a refusal naming loopback", err)
	}
}

func TestQuantize(t *testing.T) {
	q := &runtime.Quantization{Scale: []float32{0.5}, ZeroPoint: []int64{1}}
	m := newSim(0, 0)
	m.in = []runtime.TensorInfo{{Name: "q", DType: runtime.Int8, Shape: []int{1, 4}, Quant: q}}
	m.out = []runtime.TensorInfo{{Name: "r", DType: runtime.Int8, Shape: []int{1, 4}, Quant: q}}
	st := start(t, Options{Workers: 1})
	if err := st.Swap("q8", "v1", m); err != nil {
		t.Fatal(err)
	}
	in := []wire.Tensor{{Name: "q", DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(1, -2, 100, 0.26)}}
	ctx := context.Background()
	res, err := st.Client.Infer(ctx, "q8", in, client.Options{Quantize: true})
	if err != nil {
		t.Fatal(err)
	}
	// round(x/0.5)+1, clamped to int8: 3, -3, 127, 2
	if got := res.Outputs[0].Data; res.Outputs[0].DType != runtime.Int8 || !bytes.Equal(got, []byte{3, 0xfd, 127, 2}) {
		t.Errorf("quantized identity = %v %v, want int8 [3 -3 127 2]", res.Outputs[0].DType, got)
	}
	res, err = st.Client.InferBinary(ctx, "q8", in, client.Options{Quantize: true, Dequantize: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := fromF32(res.Outputs[0].Data); res.Outputs[0].DType != runtime.Float32 || !slices.Equal(got, []float32{1, -2, 63, 0.5}) {
		t.Errorf("dequantized = %v %v, want float32 [1 -2 63 0.5]", res.Outputs[0].DType, got)
	}
	_, err = st.Client.Infer(ctx, "q8", in, client.Options{})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Kind != "bad_dtype" || !strings.Contains(ce.Message, "quantize") {
		t.Errorf("float32 without quantize: %v, want bad_dtype hinting at quantize", err)
	}
}

func TestModelListShowsQuantizationAndBatch(t *testing.T) {
	st := start(t, Options{Workers: 1, MaxBatch: 4})
	m := newSim(0, 0)
	m.out[0].Quant = &runtime.Quantization{Scale: []float32{0.25, 0.5}, ZeroPoint: []int64{0, 0}, Axis: 1}
	if err := st.Swap("sim", "v7", m); err != nil {
		t.Fatal(err)
	}
	spec, err := st.Client.Model(context.Background(), "sim")
	if err != nil {
		t.Fatal(err)
	}
	if spec.MaxBatch != 4 || spec.Outputs[0].Quantization == nil || spec.Outputs[0].Quantization.Axis != 1 || len(spec.Outputs[0].Quantization.Scale) != 2 {
		t.Errorf("spec = %+v", spec)
	}
	raw, _ := json.Marshal(spec)
	if !strings.Contains(string(raw), `"zero_point":[0,0]`) {
		t.Errorf("model JSON %s lacks zero points", raw)
	}
	_ = fmt.Sprint()
}

// TestHTTPBusy: over HTTP, too many bodies being received and a full queue
// both answer 429 at once with Retry-After, and the client reports ErrBusy.
func TestHTTPBusy(t *testing.T) {
	st := start(t, Options{Workers: 1, QueueSize: 1, MaxReceiving: 2})
	g := newGate(0)
	if err := st.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	in := []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(1, 2, 3, 4)}}
	ctx := context.Background()
	var ce *client.Error

	// Two bodies held half-sent take both receiving slots; a third request
	// is turned away unread.
	var writers []*io.PipeWriter
	held := make(chan int, 2)
	for range 2 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		req, _ := http.NewRequest(http.MethodPost, st.URL+"/v1/models/sim/infer", pr)
		req.Header.Set("Content-Type", wire.ContentTypeJSON)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				held <- 0
				return
			}
			resp.Body.Close()
			held <- resp.StatusCode
		}()
		if _, err := pw.Write([]byte(`{"inputs":`)); err != nil {
			t.Fatal(err)
		}
	}
	for len(st.bodies) < 2 {
		goruntime.Gosched()
	}
	_, err := st.Client.Infer(ctx, "sim", in, client.Options{})
	if !errors.Is(err, client.ErrBusy) || !errors.As(err, &ce) || ce.Status != 429 || !strings.Contains(ce.Message, "being received") || ce.RetryAfter <= 0 {
		t.Errorf("with every receiving slot taken: %v, want 429 naming requests being received", err)
	}
	for _, pw := range writers {
		pw.Write([]byte(`[]}`))
		pw.Close()
	}
	for range 2 {
		if code := <-held; code != http.StatusBadRequest {
			t.Errorf("held request finished with %d, want 400 for its empty inputs", code)
		}
	}

	// A runs, B waits in the only queue slot, C is rejected before its body
	// is read.
	results := make(chan error, 2)
	go func() {
		_, err := st.Client.InferBinary(ctx, "sim", in, client.Options{Deadline: 10 * time.Second})
		results <- err
	}()
	<-g.started
	go func() {
		_, err := st.Client.InferBinary(ctx, "sim", in, client.Options{Deadline: 10 * time.Second})
		results <- err
	}()
	for len(st.entry("sim").queue) == 0 {
		goruntime.Gosched()
	}
	_, err = st.Client.InferBinary(ctx, "sim", in, client.Options{})
	if !errors.Is(err, client.ErrBusy) || !errors.As(err, &ce) || ce.Status != 429 || ce.Kind != "queue_full" || ce.RetryAfter <= 0 {
		t.Errorf("with a full queue: %v, want 429 queue_full with RetryAfter", err)
	}
	// Even a caller that never finishes its body gets that answer (spoken
	// raw: Go's own client would not read it before its body is sent).
	conn, err := net.Dial("tcp", strings.TrimPrefix(st.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/models/sim/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"inputs\":\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a half-sent request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("half-sent request to a full queue: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(g.gate)
	for range 2 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
}

// TestRun: Run serves on the configured socket until its context ends, then
// closes the server and its models.
func TestRun(t *testing.T) {
	dir, err := os.MkdirTemp("", "efrun")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	s := New(Options{Addr: "-", Socket: sock, Workers: 1})
	m := newSim(0, 0)
	if err := s.Swap("sim", "v1", m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := client.NewUnix(sock)
	defer c.Close()
	// Readiness: the socket answers /readyz once Run has bound it.
	for c.Ready(ctx) != nil {
		select {
		case err := <-done:
			t.Fatalf("Run ended early: %v", err)
		default:
			goruntime.Gosched()
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://unix/v1/models/sim/infer", strings.NewReader(`{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,1,1,1]}]}`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"data":[2,2,2,2]`) {
		t.Errorf("curl-style request: %d %s", resp.StatusCode, body)
	}
	c.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !m.closed.Load() {
		t.Error("Run returned without closing the model")
	}
	if err := New(Options{Addr: "0.0.0.0:0"}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("Run on 0.0.0.0: %v, want a refusal", err)
	}
}
