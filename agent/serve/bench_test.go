package serve

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

// benchModel is a real model with one real input.
type benchModel struct {
	name  string
	open  func() runtime.Model
	input runtime.Tensor
	info  runtime.TensorInfo
}

func benchModels(b *testing.B) []benchModel {
	d := openDemo(b, "1.0.0")
	_ = d.model.Close()
	out := []benchModel{{
		name:  "vibration-anomaly-1.0.0",
		open:  func() runtime.Model { return openDemo(b, "1.0.0").model },
		input: runtime.Tensor{DType: runtime.Int8, Shape: []int{1, 128}, Data: d.input},
		info:  d.model.Inputs()[0],
	}}
	for _, sm := range runtimetest.Models(b, "tflite") {
		if sm.Name != "tflm_person_detect_int8" || len(sm.Cases) == 0 {
			continue
		}
		raw := sm.Bytes(b)
		open := func() runtime.Model {
			m, err := tflite.New(runtime.Config{}).Open(context.Background(), raw, runtime.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return m
		}
		m := open()
		out = append(out, benchModel{name: "person_detect_int8", open: open, input: sm.Cases[0].Inputs[0], info: m.Inputs()[0]})
		_ = m.Close()
	}
	return out
}

func reportLatencies(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 {
		i := min(len(lat)-1, max(0, int(p*float64(len(lat))+0.5)-1))
		return float64(lat[i]) / 1e6
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.95), "p95-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBare runs the model directly on one session: the floor the API's
// overhead is measured against.
func BenchmarkBare(b *testing.B) {
	for _, bm := range benchModels(b) {
		b.Run(bm.name, func(b *testing.B) {
			m := bm.open()
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			outs := make([]runtime.Tensor, len(m.Outputs()))
			in := []runtime.Tensor{bm.input}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			begin := time.Now()
			for range b.N {
				t0 := time.Now()
				if err := s.Run(context.Background(), in, outs); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatencies(b, lat, time.Since(begin))
		})
	}
}

// BenchmarkAPI drives the HTTP API on loopback with the Go client, closed
// loop at 1, 8 and 32 requests in flight, batching off (max batch 1) and on
// (max batch 8), with the default worker count. Latency is the client's.
func BenchmarkAPI(b *testing.B) {
	for _, bm := range benchModels(b) {
		for _, maxBatch := range []int{1, 8} {
			for _, conc := range []int{1, 8, 32} {
				for _, form := range []string{"binary", "json"} {
					if form == "json" && (conc != 1 || maxBatch != 1) {
						continue
					}
					b.Run(fmt.Sprintf("%s/batch=%d/c=%d/%s", bm.name, maxBatch, conc, form), func(b *testing.B) {
						benchAPI(b, bm, maxBatch, conc, form)
					})
				}
			}
		}
	}
}

func benchAPI(b *testing.B, bm benchModel, maxBatch, conc int, form string) {
	s := New(Options{QueueSize: 256, MaxBatch: maxBatch, DefaultDeadline: time.Minute})
	defer s.Close()
	if err := s.Swap("m", "1", bm.open()); err != nil {
		b.Fatal(err)
	}
	ln, err := ListenTCP("127.0.0.1:0", false)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	c, err := client.New("http://"+ln.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	infer := c.InferBinary
	if form == "json" {
		infer = c.Infer
	}
	in := []wire.Tensor{{Name: bm.info.Name, DType: bm.input.DType, Shape: bm.input.Shape, Data: bm.input.Data}}
	for range conc { // warm connections and sessions
		if _, err := infer(context.Background(), "m", in, client.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	var (
		next  atomic.Int64
		mu    sync.Mutex
		lat   = make([]time.Duration, 0, b.N)
		wg    sync.WaitGroup
		batch atomic.Int64
	)
	b.ResetTimer()
	begin := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				res, err := infer(context.Background(), "m", in, client.Options{})
				d := time.Since(t0)
				if err != nil {
					b.Error(err)
					return
				}
				batch.Add(int64(res.Batch))
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	b.StopTimer()
	reportLatencies(b, lat, elapsed)
	b.ReportMetric(float64(batch.Load())/float64(len(lat)), "mean-batch")
}
