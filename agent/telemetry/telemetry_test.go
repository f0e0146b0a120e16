package telemetry_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
)

func TestBounds(t *testing.T) {
	b := telemetry.Bounds
	if b[0] != 0.05 || b[len(b)-1] != 10_000 || len(b) > proto.MaxHistogramSlots {
		t.Fatalf("bounds %v..%v, %d of them", b[0], b[len(b)-1], len(b))
	}
	for i := 1; i < len(b); i++ {
		if r := b[i] / b[i-1]; !(r > 1.05 && r < 1.3) {
			t.Fatalf("bound %d/%d ratio %v", i, i-1, r)
		}
	}
}

// exact returns the q-quantile of sorted samples by the nearest-rank rule.
func exact(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func TestQuantileAccuracy(t *testing.T) {
	// Each distribution has its own seeded generator, so the samples are
	// the same on every run.
	dists := []struct {
		name string
		tol  float64 // relative error allowed
		gen  func(r *rand.Rand) float64
	}{
		{"lognormal 8ms", 0.01, func(r *rand.Rand) float64 { return math.Exp(math.Log(8) + 0.5*r.NormFloat64()) }},
		{"uniform 1-3ms", 0.01, func(r *rand.Rand) float64 { return 1 + 2*r.Float64() }},
		// 30 % fast, 70 % slow: every checked quantile lies inside a mode
		// (at a mode's edge the quantile itself is ill-defined). A mode
		// narrower than a bucket defeats the in-bucket interpolation, so
		// the error can approach the bucket's width (19 %).
		{"bimodal", 0.10, func(r *rand.Rand) float64 {
			if r.Float64() < 0.3 {
				return 0.3 * (1 + 0.1*r.Float64())
			}
			return 40 * (1 + 0.1*r.Float64())
		}},
		{"sub-bucket", 0.01, func(r *rand.Rand) float64 { return 0.02 + 0.01*r.Float64() }},
	}
	for i, d := range dists {
		name := d.name
		r := rand.New(rand.NewPCG(1, uint64(i)))
		gen := func() float64 { return d.gen(r) }
		var h telemetry.Histogram
		xs := make([]float64, 20_000)
		for i := range xs {
			xs[i] = gen()
			h.Observe(time.Duration(xs[i] * float64(time.Millisecond)))
		}
		sort.Float64s(xs)
		for _, q := range []float64{0.5, 0.95, 0.99} {
			want := exact(xs, q)
			got := h.Quantile(q)
			if rel := math.Abs(got-want) / want; rel > d.tol {
				t.Errorf("%s p%v: histogram %.4f, exact %.4f (%.2f%% off, allowed %.0f%%)", name, q*100, got, want, rel*100, d.tol*100)
			}
			// The server's computation from the wire form, without the
			// exact min and max, stays within one bucket (19 %).
			wire := telemetry.Quantile(h.Proto(), q)
			if rel := math.Abs(wire-want) / want; rel > 0.19 && name != "sub-bucket" {
				t.Errorf("%s wire p%v: %.4f, exact %.4f", name, q*100, wire, want)
			}
		}
	}
	var empty telemetry.Histogram
	if empty.Quantile(0.5) != 0 || telemetry.Quantile(empty.Proto(), 0.99) != 0 {
		t.Error("empty histogram has a quantile")
	}
	var over telemetry.Histogram
	over.Observe(time.Minute)
	if got := over.Quantile(0.99); got != 60_000 {
		t.Errorf("overflow quantile %v, want the observed 60000", got)
	}
	if got := telemetry.Quantile(over.Proto(), 0.99); got != 10_000 {
		t.Errorf("overflow wire quantile %v, want the last bound", got)
	}
}

func TestRecorderWindow(t *testing.T) {
	rec := telemetry.NewRecorder()
	for i := 0; i < 100; i++ {
		kind := ""
		if i%10 == 0 {
			kind = "input"
		}
		rec.Observe("kws", "1.0.0", time.Duration(i+1)*time.Millisecond, kind)
	}
	for i := 0; i < 40; i++ {
		rec.Observe("kws", "2.0.0", time.Millisecond, string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	rec.Reject("kws", "2.0.0")
	start := time.UnixMilli(1_700_000_000_000)
	w := telemetry.BuildWindow("gw-1", 7, start, start.Add(10*time.Second), rec, &telemetry.ProcSampler{Root: os.DirFS("testdata")}, 3)
	b, err := proto.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := proto.DecodeTelemetry("gw-1", b)
	if err != nil {
		t.Fatalf("window does not pass the protocol's checks: %v", err)
	}
	if got.GetSeq() != 7 || got.GetWindowsDropped() != 3 || len(got.GetModels()) != 2 {
		t.Fatalf("window %v", got)
	}
	v1, v2 := got.GetModels()[0], got.GetModels()[1]
	if v1.GetVersion() != "1.0.0" || v1.GetRequests() != 100 || v1.GetErrors() != 10 || v1.GetErrorsByKind()["input"] != 10 {
		t.Errorf("v1 stats %v", v1)
	}
	if p := v1.GetP50Ms(); p < 47 || p > 53 {
		t.Errorf("v1 p50 %v, want about 50", p)
	}
	if p := v1.GetP99Ms(); p < 95 || p > 100 {
		t.Errorf("v1 p99 %v, want about 99", p)
	}
	if v2.GetRejects() != 1 || v2.GetErrors() != 40 || len(v2.GetErrorsByKind()) != telemetry.MaxErrorKinds || v2.GetErrorsByKind()["other"] != 40-telemetry.MaxErrorKinds+1 {
		t.Errorf("v2 error kinds not bounded: %v", v2.GetErrorsByKind())
	}
	if got.GetProcess().GetRssBytes() != 36000*1024 || got.GetSystem().GetMemoryAvailableBytes() != 2900000*1024 {
		t.Errorf("process/system %v %v", got.GetProcess(), got.GetSystem())
	}
	if !got.GetSystem().GetHasTemperature() || got.GetSystem().GetTemperatureC() != 51.54 || got.GetSystem().GetLoad1() != 0.52 {
		t.Errorf("system %v", got.GetSystem())
	}
	// The recorder starts a new window: nothing carried over.
	if ms := rec.Flush(); len(ms) != 0 {
		t.Errorf("second flush %v", ms)
	}
}

func TestProcSamplerCPU(t *testing.T) {
	now := time.Unix(1000, 0)
	dir := t.TempDir()
	os.MkdirAll(dir+"/proc/self", 0o755)
	stat := func(ticks int) {
		// utime 100+ticks, stime 100.
		line := "1 (a b) S 1 1 1 0 -1 0 0 0 0 0 " + itoa(100+ticks) + " 100 0 0 20 0 1 0 0 0 0\n"
		os.WriteFile(dir+"/proc/self/stat", []byte(line), 0o644)
	}
	s := &telemetry.ProcSampler{Root: os.DirFS(dir), Now: func() time.Time { return now }}
	stat(0)
	if p, sys := s.Sample(); p.GetCpuPercent() != 0 || sys.GetHasTemperature() {
		t.Fatalf("first sample %v %v", p, sys)
	}
	now = now.Add(10 * time.Second)
	stat(500) // 5 s of CPU in 10 s
	if p, _ := s.Sample(); math.Abs(p.GetCpuPercent()-50) > 1e-9 {
		t.Fatalf("cpu %v, want 50", p.GetCpuPercent())
	}
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

func TestProcSamplerHost(t *testing.T) {
	p, s := (&telemetry.ProcSampler{}).Sample()
	if s.GetMemoryTotalBytes() == 0 {
		t.Skip("host has no /proc/meminfo")
	}
	if p.GetRssBytes() == 0 || p.GetGoroutines() == 0 {
		t.Fatalf("process %v", p)
	}
}

func TestQueue(t *testing.T) {
	ctx := context.Background()
	if _, err := telemetry.NewQueue(state.NewMemory(), telemetry.Limits{MaxWindows: 0, MaxBytes: 1 << 20}, nil); !errors.Is(err, telemetry.ErrLimits) {
		t.Fatalf("zero windows: %v", err)
	}
	if _, err := telemetry.NewQueue(state.NewMemory(), telemetry.Limits{MaxWindows: 1, MaxBytes: 10}, nil); !errors.Is(err, telemetry.ErrLimits) {
		t.Fatalf("tiny bytes: %v", err)
	}
	q, err := telemetry.NewQueue(state.NewMemory(), telemetry.Limits{MaxWindows: 3, MaxBytes: 64 << 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Push(ctx, 1, make([]byte, 65<<10)); !errors.Is(err, telemetry.ErrWindowTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		if err := q.Push(ctx, seq, []byte{byte(seq)}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("push did not signal ready")
	}
	st, _ := q.Stats(ctx)
	if st.Windows != 3 || st.Dropped != 2 {
		t.Fatalf("stats %+v", st)
	}
	for want := uint64(3); want <= 5; want++ {
		seq, p, ok, err := q.Peek(ctx)
		if err != nil || !ok || seq != want || p[0] != byte(want) {
			t.Fatalf("peek %d %v %v %v, want %d", seq, p, ok, err, want)
		}
		q.Remove(ctx, seq)
	}
}

func BenchmarkRecorderObserve(b *testing.B) {
	rec := telemetry.NewRecorder()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 37 * time.Microsecond
			rec.Observe("kws", "1.0.0", d%(50*time.Millisecond), "")
		}
	})
}

func BenchmarkFlush(b *testing.B) {
	rec := telemetry.NewRecorder()
	var mu sync.Mutex
	for i := 0; i < b.N; i++ {
		mu.Lock()
		for j := 0; j < 100; j++ {
			rec.Observe("kws", "1.0.0", time.Duration(j)*time.Millisecond, "")
		}
		rec.Flush()
		mu.Unlock()
	}
}
