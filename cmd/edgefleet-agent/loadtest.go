package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

func init() {
	register("loadtest", "load a running agent's inference API and report throughput and latency", runLoadtest)
}

// loadtestOut is where the report goes; tests replace it.
var loadtestOut io.Writer = os.Stdout

// Bounds on what the flags may ask for.
const (
	maxLoadConcurrency = 4096
	maxLoadDuration    = 24 * time.Hour
	maxLoadInputBytes  = 64 << 20
	// Latencies kept for percentiles; beyond it every other one is kept.
	maxLoadSamples = 1 << 22
)

type loadtestConfig struct {
	url, socket, model, input, form string
	concurrency                     int
	duration, deadline              time.Duration
	jsonOut                         bool
}

// loadReport is what a load test measured. Latencies are the callers' view
// (request sent to answer read) of successful requests.
type loadReport struct {
	Model       string        `json:"model"`
	Version     string        `json:"version"`
	Form        string        `json:"form"`
	Concurrency int           `json:"concurrency"`
	Duration    time.Duration `json:"duration_ns"`
	Requests    int64         `json:"requests"`
	OK          int64         `json:"ok"`
	Rejected    int64         `json:"rejected"`
	Expired     int64         `json:"expired"`
	Errors      int64         `json:"errors"`
	Throughput  float64       `json:"throughput_per_s"`
	P50         time.Duration `json:"p50_ns"`
	P95         time.Duration `json:"p95_ns"`
	P99         time.Duration `json:"p99_ns"`
	Max         time.Duration `json:"max_ns"`
	// ServerCompute is the median compute time the server reported;
	// ServerP50 and ServerP99 are of queue wait plus compute, the time the
	// server accounts for (the rest is HTTP and the callers' scheduling);
	// MeanBatch is the mean batch size of successful requests.
	ServerCompute time.Duration `json:"server_compute_p50_ns"`
	ServerP50     time.Duration `json:"server_p50_ns"`
	ServerP99     time.Duration `json:"server_p99_ns"`
	MeanBatch     float64       `json:"mean_batch"`
	FirstError    string        `json:"first_error,omitempty"`
}

func runLoadtest(ctx context.Context, args []string) error {
	var cfg loadtestConfig
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.StringVar(&cfg.url, "url", "", "base URL of the agent's inference API, e.g. http://127.0.0.1:8470")
	fs.StringVar(&cfg.socket, "socket", "", "unix socket of the agent's inference API (instead of --url)")
	fs.StringVar(&cfg.model, "model", "", "model name to load (required)")
	fs.IntVar(&cfg.concurrency, "concurrency", 1, "requests in flight at once (closed loop)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to send requests")
	fs.StringVar(&cfg.input, "input", "", "raw little-endian tensor for the model's single input, or a binary tensor frame (EFT1); default zeros")
	fs.StringVar(&cfg.form, "form", "binary", "request form: binary or json")
	fs.DurationVar(&cfg.deadline, "deadline", 0, "per-request deadline sent as X-Deadline-Ms; 0 keeps the server's default")
	fs.BoolVar(&cfg.jsonOut, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep, err := loadtest(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.jsonOut {
		enc := json.NewEncoder(loadtestOut)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printLoadReport(loadtestOut, rep)
	return nil
}

func (cfg loadtestConfig) check() error {
	switch {
	case (cfg.url == "") == (cfg.socket == ""):
		return errors.New("give exactly one of --url and --socket")
	case cfg.model == "":
		return errors.New("--model is required (GET /v1/models lists them)")
	case cfg.concurrency < 1 || cfg.concurrency > maxLoadConcurrency:
		return fmt.Errorf("--concurrency %d: must be 1..%d", cfg.concurrency, maxLoadConcurrency)
	case cfg.duration <= 0 || cfg.duration > maxLoadDuration:
		return fmt.Errorf("--duration %v: must be positive and at most %v", cfg.duration, maxLoadDuration)
	case cfg.form != "binary" && cfg.form != "json":
		return fmt.Errorf("--form %q: use binary or json", cfg.form)
	case cfg.deadline < 0:
		return fmt.Errorf("--deadline %v must not be negative", cfg.deadline)
	}
	return nil
}

func loadtest(ctx context.Context, cfg loadtestConfig) (loadReport, error) {
	rep := loadReport{Model: cfg.model, Form: cfg.form, Concurrency: cfg.concurrency}
	if err := cfg.check(); err != nil {
		return rep, err
	}
	var c *client.Client
	if cfg.socket != "" {
		c = client.NewUnix(cfg.socket)
	} else {
		var err error
		if c, err = client.New(cfg.url, nil); err != nil {
			return rep, err
		}
	}
	defer c.Close()
	spec, err := c.Model(ctx, cfg.model)
	if err != nil {
		return rep, fmt.Errorf("looking up model %q: %w", cfg.model, err)
	}
	rep.Version = spec.Version
	inputs, err := loadInputs(spec, cfg.input)
	if err != nil {
		return rep, err
	}
	infer := c.InferBinary
	if cfg.form == "json" {
		infer = c.Infer
	}
	opts := client.Options{Deadline: cfg.deadline}
	// One request first, so a wrong input fails fast with the server's
	// message instead of as thousands of errors.
	if _, err := infer(ctx, cfg.model, inputs, opts); err != nil && !errors.Is(err, client.ErrBusy) {
		return rep, fmt.Errorf("first request: %w", err)
	}

	type sample struct{ lat, compute, server time.Duration }
	var (
		mu       sync.Mutex
		samples  []sample
		skip     int
		batchSum int64
		wg       sync.WaitGroup
	)
	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	begin := time.Now()
	for range cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				t0 := time.Now()
				// The run context only stops new requests; one in flight
				// finishes so its answer counts.
				res, err := infer(context.WithoutCancel(runCtx), cfg.model, inputs, opts)
				lat := time.Since(t0)
				mu.Lock()
				rep.Requests++
				switch {
				case err == nil:
					rep.OK++
					batchSum += int64(res.Batch)
					skip++
					if len(samples) < maxLoadSamples || skip%2 == 0 {
						samples = append(samples, sample{lat, res.Compute, res.Queue + res.Compute})
					}
				case errors.Is(err, client.ErrBusy):
					var ce *client.Error
					if errors.As(err, &ce) && ce.Kind == "expired" {
						rep.Expired++
					} else {
						rep.Rejected++
					}
				default:
					rep.Errors++
					if rep.FirstError == "" {
						rep.FirstError = err.Error()
					}
				}
				mu.Unlock()
				if err != nil && !errors.Is(err, client.ErrBusy) {
					// Do not spin on a broken server.
					select {
					case <-runCtx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
		}()
	}
	wg.Wait()
	rep.Duration = time.Since(begin)
	rep.Throughput = float64(rep.OK) / rep.Duration.Seconds()
	if rep.OK > 0 {
		rep.MeanBatch = float64(batchSum) / float64(rep.OK)
	}
	lats := make([]time.Duration, len(samples))
	comps := make([]time.Duration, len(samples))
	servs := make([]time.Duration, len(samples))
	for i, s := range samples {
		lats[i], comps[i], servs[i] = s.lat, s.compute, s.server
	}
	slices.Sort(lats)
	slices.Sort(comps)
	slices.Sort(servs)
	rep.ServerP50, rep.ServerP99 = quantile(servs, 0.50), quantile(servs, 0.99)
	rep.P50, rep.P95, rep.P99 = quantile(lats, 0.50), quantile(lats, 0.95), quantile(lats, 0.99)
	if n := len(lats); n > 0 {
		rep.Max = lats[n-1]
	}
	rep.ServerCompute = quantile(comps, 0.50)
	return rep, ctx.Err()
}

// quantile is the nearest-rank quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// loadInputs builds the request's inputs: the file as a binary frame, as
// the raw bytes of a single input, or zeros of each input's shape (dynamic
// dimensions taken as 1).
func loadInputs(spec wire.ModelSpec, path string) ([]wire.Tensor, error) {
	if path == "" {
		var ts []wire.Tensor
		for _, in := range spec.Inputs {
			dt, err := runtime.ParseDType(in.DType)
			if err != nil {
				return nil, fmt.Errorf("model input %q: %w", in.Name, err)
			}
			shape := make([]int, len(in.Shape))
			for i, d := range in.Shape {
				shape[i] = max(d, 1)
			}
			n := runtime.ByteSize(dt, shape)
			if n < 0 || n > maxLoadInputBytes {
				return nil, fmt.Errorf("model input %q of shape %v is too large for a zero input; pass --input", in.Name, shape)
			}
			ts = append(ts, wire.Tensor{Name: in.Name, DType: dt, Shape: shape, Data: make([]byte, n)})
		}
		return ts, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxLoadInputBytes {
		return nil, fmt.Errorf("--input %s is %d bytes, at most %d allowed", path, st.Size(), maxLoadInputBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) >= 4 && string(b[:4]) == wire.Magic {
		f, err := wire.DecodeFrame(b)
		if err != nil {
			return nil, fmt.Errorf("--input %s: %w", path, err)
		}
		return f.Tensors, nil
	}
	if len(spec.Inputs) != 1 {
		return nil, fmt.Errorf("model %q has %d inputs; a raw --input file fits only single-input models (pass an EFT1 frame)", spec.Name, len(spec.Inputs))
	}
	in := spec.Inputs[0]
	dt, err := runtime.ParseDType(in.DType)
	if err != nil {
		return nil, err
	}
	shape := make([]int, len(in.Shape))
	for i, d := range in.Shape {
		shape[i] = max(d, 1)
	}
	if want := runtime.ByteSize(dt, shape); want != len(b) {
		return nil, fmt.Errorf("--input %s has %d bytes; input %q (%s %v) needs %d", path, len(b), in.Name, in.DType, shape, want)
	}
	return []wire.Tensor{{Name: in.Name, DType: dt, Shape: shape, Data: b}}, nil
}

func printLoadReport(w io.Writer, r loadReport) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }
	fmt.Fprintf(w, "model %s@%s, %s form, concurrency %d, %.1fs\n", r.Model, r.Version, r.Form, r.Concurrency, r.Duration.Seconds())
	fmt.Fprintf(w, "requests %d: ok %d, rejected (429) %d, expired %d, errors %d\n", r.Requests, r.OK, r.Rejected, r.Expired, r.Errors)
	fmt.Fprintf(w, "throughput %.1f/s\n", r.Throughput)
	fmt.Fprintf(w, "latency p50 %s  p95 %s  p99 %s  max %s\n", ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max))
	fmt.Fprintf(w, "server queue+compute p50 %s  p99 %s; compute p50 %s; mean batch %.2f\n", ms(r.ServerP50), ms(r.ServerP99), ms(r.ServerCompute), r.MeanBatch)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}
