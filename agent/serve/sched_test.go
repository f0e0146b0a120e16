package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
)

// gateModel is a simModel whose runs block until the test opens the gate,
// so a test can hold a worker busy without guessing at timings.
type gateModel struct {
	*simModel
	started chan struct{} // receives once per run, when it begins
	gate    chan struct{} // closed to let runs finish
}

func newGate(add float32) *gateModel {
	return &gateModel{simModel: newSim(add, 0), started: make(chan struct{}, 64), gate: make(chan struct{})}
}

func (g *gateModel) NewSession() (runtime.Session, error) {
	s, err := g.simModel.NewSession()
	if err != nil {
		return nil, err
	}
	return gateSession{Session: s, g: g}, nil
}

type gateSession struct {
	runtime.Session
	g *gateModel
}

func (s gateSession) Run(ctx context.Context, in, out []runtime.Tensor) error {
	s.g.started <- struct{}{}
	select {
	case <-s.g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Session.Run(ctx, in, out)
}

func row(v float32) []runtime.Tensor {
	return []runtime.Tensor{{DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(v, v+1, v+2, v+3)}}
}

// TestSwapUnderLoad switches versions while clients keep the queue busy
// over HTTP: no request may fail, every answer must come from the version
// its header names, and each old model must be closed only after its last
// run.
func TestSwapUnderLoad(t *testing.T) {
	st := start(t, Options{Workers: 2, QueueSize: 256, DefaultDeadline: 10 * time.Second})
	const versions = 6
	models := make([]*simModel, versions)
	for i := range models {
		models[i] = newSim(float32(i*100), 500*time.Microsecond)
	}
	if err := st.Swap("sim", "v0", models[0]); err != nil {
		t.Fatal(err)
	}
	var (
		done      atomic.Int64
		failures  atomic.Int64
		mismatch  atomic.Int64
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		seenMu    sync.Mutex
		byVersion = map[string]int{}
	)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				x := float32(c*1000 + i%100)
				in := []wire.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int{1, 4}, Data: f32(x, x, x, x)}}
				infer := st.Client.Infer
				if i%2 == 1 {
					infer = st.Client.InferBinary
				}
				res, err := infer(context.Background(), "sim", in, client.Options{})
				if err != nil {
					failures.Add(1)
					t.Errorf("request failed across a switch: %v", err)
					continue
				}
				var k int
				fmt.Sscanf(res.Version, "v%d", &k)
				if got := fromF32(res.Outputs[0].Data)[0]; got != x*2+float32(k*100) {
					mismatch.Add(1)
				}
				seenMu.Lock()
				byVersion[res.Version]++
				seenMu.Unlock()
				done.Add(1)
			}
		}()
	}
	// Switch each time another 150 requests have been answered.
	for k := 1; k < versions; k++ {
		for done.Load() < int64(k*150) && failures.Load() == 0 {
			goruntime.Gosched()
		}
		if err := st.Swap("sim", fmt.Sprintf("v%d", k), models[k]); err != nil {
			t.Fatal(err)
		}
	}
	for done.Load() < int64(versions*150) && failures.Load() == 0 {
		goruntime.Gosched()
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || mismatch.Load() != 0 {
		t.Fatalf("%d failed, %d answered by another version than they claim", failures.Load(), mismatch.Load())
	}
	for k, m := range models[:versions-1] {
		if !m.closed.Load() {
			t.Errorf("v%d was replaced but never closed", k)
		}
		if m.closedWhileBusy.Load() != 0 || m.runsAfterClose.Load() != 0 {
			t.Errorf("v%d: closed while running %d times, ran after close %d times", k, m.closedWhileBusy.Load(), m.runsAfterClose.Load())
		}
		if m.sessionsOpen.Load() != 0 {
			t.Errorf("v%d: %d sessions left open", k, m.sessionsOpen.Load())
		}
	}
	if models[versions-1].closed.Load() {
		t.Error("the active version was closed")
	}
	if len(byVersion) < 4 {
		t.Errorf("answers came from only %v; the switches did not happen under load", byVersion)
	}
	t.Logf("%d requests, by version %v", done.Load(), byVersion)
}

// TestBatchedMatchesUnbatched runs the same inputs through a batching and a
// non-batching server: outputs must be identical, and the batching one must
// really have batched.
func TestBatchedMatchesUnbatched(t *testing.T) {
	const n = 48
	run := func(opts Options, m runtime.Model) ([][]byte, []int) {
		s := New(opts)
		defer s.Close()
		if err := s.Swap("sim", "v1", m); err != nil {
			t.Fatal(err)
		}
		outs := make([][]byte, n)
		batches := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.Infer(context.Background(), "sim", row(float32(i)), InferOptions{Deadline: 10 * time.Second})
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				outs[i], batches[i] = res.Outputs[0].Data, res.Batch
			}()
		}
		wg.Wait()
		return outs, batches
	}
	plain := newSim(0, 2*time.Millisecond)
	want, b1 := run(Options{Workers: 1, QueueSize: n}, plain)
	batched := newSim(0, 2*time.Millisecond)
	got, b8 := run(Options{Workers: 1, QueueSize: n, MaxBatch: 8, MaxQueueDelay: 5 * time.Millisecond}, batched)
	for i := range n {
		if !slices.Equal(got[i], want[i]) || !slices.Equal(fromF32(want[i]), fromF32(row(float32(i))[0].Data)[:0:0]) && false {
			t.Errorf("request %d: batched %v, unbatched %v", i, fromF32(got[i]), fromF32(want[i]))
		}
		x := float32(i)
		if w := []float32{2 * x, 2*x + 2, 2*x + 4, 2*x + 6}; !slices.Equal(fromF32(want[i]), w) {
			t.Errorf("request %d: %v, want %v", i, fromF32(want[i]), w)
		}
	}
	if slices.Max(b1) != 1 || plain.runs.Load() != n {
		t.Errorf("unbatched server made batches %v in %d runs", b1, plain.runs.Load())
	}
	if slices.Max(b8) < 2 || slices.Max(b8) > 8 || batched.runs.Load() >= n {
		t.Errorf("batching server: batch sizes %v in %d runs; want some batches of 2..8", b8, batched.runs.Load())
	}
	t.Logf("batched: %d runs for %d requests, largest batch %d", batched.runs.Load(), n, slices.Max(b8))
}

// TestBatchRefusedFallsBack: a backend that claims a dynamic batch
// dimension but refuses batches degrades to one request per run, and no
// request fails.
func TestBatchRefusedFallsBack(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 32, MaxBatch: 8, MaxQueueDelay: 5 * time.Millisecond})
	defer s.Close()
	m := newSim(0, time.Millisecond)
	m.failBatch = true
	if err := s.Swap("sim", "v1", m); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Infer(context.Background(), "sim", row(float32(i)), InferOptions{Deadline: 10 * time.Second})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if got := fromF32(res.Outputs[0].Data)[0]; got != float32(2*i) {
				t.Errorf("request %d: y[0] = %v", i, got)
			}
		}()
	}
	wg.Wait()
	mi, _ := s.Model("sim")
	if mi.MaxBatch != 1 {
		t.Errorf("after a refused batch MaxBatch = %d, want 1", mi.MaxBatch)
	}
}

// TestBatchFixedOne: a model with a fixed batch of 1 batches only if the
// backend says it takes more; otherwise it is served by a session pool.
func TestBatchFixedOne(t *testing.T) {
	fixed := func() *simModel {
		m := newSim(0, 0)
		m.in[0].Shape = []int{1, 4}
		m.out[0].Shape = []int{1, 4}
		return m
	}
	s := New(Options{Workers: 1, MaxBatch: 8})
	defer s.Close()
	if err := s.Swap("pool", "v1", fixed()); err != nil {
		t.Fatal(err)
	}
	m := fixed()
	m.batchOne = 4
	if err := s.Swap("batch", "v1", simBatchOne{m}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want int
	}{{"pool", 1}, {"batch", 4}} {
		mi, err := s.Model(tc.name)
		if err != nil || mi.MaxBatch != tc.want {
			t.Errorf("%s: MaxBatch %d (%v), want %d", tc.name, mi.MaxBatch, err, tc.want)
		}
	}
}

// TestQueueFullAndDeadline holds the only worker busy and checks the
// three ways a request is turned away: queue full and deadline unmeetable
// at once with a retry hint, and expired in the queue without running.
func TestQueueFullAndDeadline(t *testing.T) {
	rec := &recorder{}
	s := New(Options{Workers: 1, QueueSize: 1, Observer: rec})
	defer s.Close()
	g := newGate(0)
	if err := s.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	// Teach the estimator what one run costs: an open gate, one request.
	close(g.gate)
	if _, err := s.Infer(context.Background(), "sim", row(0), InferOptions{}); err != nil {
		t.Fatal(err)
	}
	<-g.started
	g2 := newGate(0)
	if err := s.Swap("sim", "v2", g2); err != nil {
		t.Fatal(err)
	}
	// A is running (held by the gate), B waits in the one queue slot.
	resA := make(chan error, 1)
	go func() {
		_, err := s.Infer(context.Background(), "sim", row(1), InferOptions{Deadline: 10 * time.Second})
		resA <- err
	}()
	<-g2.started
	bDeadline := 50 * time.Millisecond
	bSent := time.Now()
	resB := make(chan error, 1)
	go func() {
		_, err := s.Infer(context.Background(), "sim", row(2), InferOptions{Deadline: bDeadline})
		resB <- err
	}()
	e := s.entry("sim")
	for len(e.queue) == 0 {
		goruntime.Gosched()
	}
	_, err := s.Infer(context.Background(), "sim", row(3), InferOptions{Deadline: 10 * time.Second})
	if !isBusy(err, ErrQueueFull) {
		t.Errorf("third request with a full queue: %v, want ErrQueueFull with RetryAfter", err)
	}
	// Wait for B's deadline to pass, then let A finish: B must be dropped.
	<-time.After(time.Until(bSent.Add(bDeadline)))
	close(g2.gate)
	if err := <-resA; err != nil {
		t.Errorf("A: %v", err)
	}
	if err := <-resB; !isBusy(err, ErrExpired) {
		t.Errorf("B whose deadline passed in the queue: %v, want ErrExpired", err)
	}
	if runs := g2.runs.Load(); runs != 1 {
		t.Errorf("v2 ran %d times, want 1 (B must be dropped before it runs)", runs)
	}
	// With runs estimated at ≥ the time A took, a 1 ms deadline cannot be
	// met: rejected at once.
	e.estExec.Store(int64(20 * time.Millisecond))
	_, err = s.Infer(context.Background(), "sim", row(4), InferOptions{Deadline: time.Millisecond})
	if !isBusy(err, ErrDeadlineUnmeetable) {
		t.Errorf("1 ms deadline: %v, want ErrDeadlineUnmeetable", err)
	}
	want := map[Outcome]int{OutcomeOK: 2, OutcomeQueueFull: 1, OutcomeExpired: 1, OutcomeDeadlineUnmeetable: 1}
	for o, n := range want {
		if got := rec.count(o); got != n {
			t.Errorf("observer saw %d %s, want %d", got, o, n)
		}
	}
	if got := metricSum(t, s, "edgefleet_serve_rejects_total", map[string]string{"model": "sim"}); got != 2 {
		t.Errorf("rejects_total = %v, want 2", got)
	}
	if got := metricSum(t, s, "edgefleet_serve_errors_total", map[string]string{"model": "sim", "kind": "expired"}); got != 1 {
		t.Errorf("errors_total{kind=expired} = %v, want 1", got)
	}
}

func TestCancelWhileQueued(t *testing.T) {
	rec := &recorder{}
	s := New(Options{Workers: 1, QueueSize: 4, Observer: rec})
	defer s.Close()
	g := newGate(0)
	if err := s.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	resA := make(chan error, 1)
	go func() { _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); resA <- err }()
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	resB := make(chan error, 1)
	go func() { _, err := s.Infer(ctx, "sim", row(2), InferOptions{}); resB <- err }()
	for len(s.entry("sim").queue) == 0 {
		goruntime.Gosched()
	}
	cancel()
	if err := <-resB; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled request: %v", err)
	}
	close(g.gate)
	if err := <-resA; err != nil {
		t.Error(err)
	}
	// Flush: a third request runs after the worker skipped B.
	if _, err := s.Infer(context.Background(), "sim", row(3), InferOptions{}); err != nil {
		t.Error(err)
	}
	if g.runs.Load() != 2 || rec.count(OutcomeCanceled) != 1 {
		t.Errorf("runs %d (want 2: the canceled one must not run), canceled events %d", g.runs.Load(), rec.count(OutcomeCanceled))
	}
}

var overloadFor = flag.Duration("overload", 3*time.Second, "how long TestOverload offers 10× capacity (the figures in docs/benchmarks.md use 30s)")

// TestOverload offers 10× what the model can run for 3 s (-overload). Rejects must be
// counted, the queue must stay bounded, every accepted request must meet its
// deadline, and the observer must see every request.
func TestOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("3 s overload run")
	}
	duration := *overloadFor
	const (
		compute  = 10 * time.Millisecond // capacity: 100 requests/s on one worker
		rate     = 1000                  // offered per second: 10×
		deadline = 100 * time.Millisecond
		queue    = 16
	)
	rec := &recorder{}
	s := New(Options{Workers: 1, QueueSize: queue, Observer: rec})
	defer s.Close()
	m := newSim(0, compute)
	if err := s.Swap("sim", "v1", m); err != nil {
		t.Fatal(err)
	}
	var ms0 goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&ms0)
	g0 := goruntime.NumGoroutine()

	var (
		wg                    sync.WaitGroup
		ok, rejected, expired atomic.Int64
		late, other, maxQueue atomic.Int64
		callerLate            atomic.Int64
		sent                  int
		worstLate             atomic.Int64
		tick                  = time.NewTicker(10 * time.Millisecond)
		end                   = time.Now().Add(duration)
		e                     = s.entry("sim")
	)
	defer tick.Stop()
	for now := range tick.C {
		if now.After(end) {
			break
		}
		if q := int64(len(e.queue)); q > maxQueue.Load() {
			maxQueue.Store(q)
		}
		for range rate / 100 {
			sent++
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				res, err := s.Infer(context.Background(), "sim", row(1), InferOptions{Deadline: deadline})
				if took := time.Since(t0); took > deadline {
					callerLate.Add(1)
				}
				switch {
				case err == nil:
					ok.Add(1)
					// The server's own account: queued plus the run. What
					// the caller sees adds the scheduling of this test's
					// thousands of goroutines on two shared cores.
					if took := res.Queue + res.Compute; took > deadline {
						late.Add(1)
						if int64(took) > worstLate.Load() {
							worstLate.Store(int64(took))
						}
					}
				case isBusy(err, ErrQueueFull), isBusy(err, ErrDeadlineUnmeetable):
					rejected.Add(1)
				case isBusy(err, ErrExpired):
					expired.Add(1)
				default:
					other.Add(1)
					t.Errorf("unexpected error: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	var ms1 goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&ms1)

	t.Logf("sent %d: ok %d, rejected %d, expired %d, late %d (worst %v; %d late as the caller saw it), max queue %d, runs %d, heap %d→%d KiB",
		sent, ok.Load(), rejected.Load(), expired.Load(), late.Load(), time.Duration(worstLate.Load()), callerLate.Load(), maxQueue.Load(), m.runs.Load(), ms0.HeapInuse>>10, ms1.HeapInuse>>10)
	if ok.Load() == 0 || rejected.Load() < int64(sent)/2 {
		t.Errorf("ok %d, rejected %d of %d: overload should reject most and serve some", ok.Load(), rejected.Load(), sent)
	}
	if late.Load() != 0 {
		t.Errorf("%d accepted requests missed their %v deadline (worst %v)", late.Load(), deadline, time.Duration(worstLate.Load()))
	}
	if maxQueue.Load() > queue {
		t.Errorf("queue reached %d, bound is %d", maxQueue.Load(), queue)
	}
	if got := metricSum(t, s, "edgefleet_serve_rejects_total", map[string]string{"model": "sim"}); int64(got) != rejected.Load() {
		t.Errorf("rejects_total = %v, callers saw %d", got, rejected.Load())
	}
	if rec.total() != sent {
		t.Errorf("observer saw %d events for %d requests", rec.total(), sent)
	}
	if grow := int64(ms1.HeapInuse) - int64(ms0.HeapInuse); grow > 32<<20 {
		t.Errorf("heap in use grew by %d MiB under overload", grow>>20)
	}
	checkGoroutines(t, g0)
}

// TestDegradedMode: while the big model stays overloaded, requests go to its
// lighter variant, and responses and metrics say so.
func TestDegradedMode(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 2, DegradeAfter: 50 * time.Millisecond})
	defer s.Close()
	big := newGate(0)
	if err := s.Swap("big", "v1", big); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { close(big.gate) }) }
	defer release()
	if err := s.Swap("small", "v1", newSim(1000, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVariant("big", "small"); err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 3)
	for i := range 3 {
		go func() {
			_, err := s.Infer(context.Background(), "big", row(float32(i)), InferOptions{Deadline: 10 * time.Second})
			results <- err
		}()
		if i == 0 {
			<-big.started
		}
	}
	e := s.entry("big")
	for len(e.queue) < 2 {
		goruntime.Gosched()
	}
	_, err := s.Infer(context.Background(), "big", row(9), InferOptions{Deadline: 10 * time.Second})
	if !isBusy(err, ErrQueueFull) {
		t.Fatalf("request with a full queue: %v", err)
	}
	// Overloaded since that reject; once DegradeAfter has passed, requests
	// are routed to the variant.
	<-time.After(time.Until(time.Unix(0, e.overSince.Load()).Add(50 * time.Millisecond)))
	// The variant needs a run slot too, and the gated runs of big hold the
	// only one: let them finish. The overload lasts until an admission to
	// big finds its queue empty.
	release()
	for range 3 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	res, err := s.Infer(context.Background(), "big", row(5), InferOptions{Deadline: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.ServedBy != "small" || fromF32(res.Outputs[0].Data)[0] != 1010 {
		t.Errorf("degraded answer served by %q with y[0]=%v, want small's 1010", res.ServedBy, fromF32(res.Outputs[0].Data)[0])
	}
	if got := metricSum(t, s, "edgefleet_serve_degraded_total", map[string]string{"model": "big", "variant": "small"}); got != 1 {
		t.Errorf("degraded_total = %v, want 1", got)
	}
}

// TestCloseFailsQueued: Close answers queued requests with ErrClosed and
// waits for the running one, then closes the model.
func TestCloseFailsQueued(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 4})
	g := newGate(0)
	if err := s.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 2)
	go func() { _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); res <- err }()
	<-g.started
	go func() { _, err := s.Infer(context.Background(), "sim", row(2), InferOptions{}); res <- err }()
	for len(s.entry("sim").queue) == 0 {
		goruntime.Gosched()
	}
	e := s.entry("sim")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Once Close has begun it waits for the running request; let it finish.
	for {
		e.mu.Lock()
		closing := e.closing
		e.mu.Unlock()
		if closing {
			break
		}
		goruntime.Gosched()
	}
	close(g.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	var errs []error
	errs = append(errs, <-res, <-res)
	nOK, nClosed := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			nOK++
		case errors.Is(err, ErrClosed):
			nClosed++
		}
	}
	if nOK != 1 || nClosed != 1 {
		t.Errorf("after Close: %v; want the running request answered and the queued one ErrClosed", errs)
	}
	if !g.closed.Load() || g.closedWhileBusy.Load() != 0 {
		t.Errorf("model closed %v, closed while busy %d", g.closed.Load(), g.closedWhileBusy.Load())
	}
	if _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Infer after Close: %v, want ErrClosed", err)
	}
	if err := s.Swap("sim", "v2", newSim(0, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Swap after Close: %v, want ErrClosed", err)
	}
}

// TestRemove: after Remove the model is unknown, its queued requests were
// answered with ErrClosed, and its model was closed after its last run.
func TestRemove(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 4})
	defer s.Close()
	g := newGate(0)
	if err := s.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 2)
	go func() { _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); res <- err }()
	<-g.started
	go func() { _, err := s.Infer(context.Background(), "sim", row(2), InferOptions{}); res <- err }()
	e := s.entry("sim")
	for len(e.queue) == 0 {
		goruntime.Gosched()
	}
	removed := make(chan error, 1)
	go func() { removed <- s.Remove("sim") }()
	for {
		e.mu.Lock()
		closing := e.closing
		e.mu.Unlock()
		if closing {
			break
		}
		goruntime.Gosched()
	}
	if g.closed.Load() {
		t.Error("model closed while its run was in progress")
	}
	close(g.gate)
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	first, second := <-res, <-res
	if (first == nil) == (second == nil) || !(errors.Is(first, ErrClosed) || errors.Is(second, ErrClosed)) {
		t.Errorf("results %v, %v: want the running one answered and the queued one ErrClosed", first, second)
	}
	if !g.closed.Load() || g.closedWhileBusy.Load() != 0 {
		t.Errorf("closed %v, closed while busy %d", g.closed.Load(), g.closedWhileBusy.Load())
	}
	if _, err := s.Infer(context.Background(), "sim", row(3), InferOptions{}); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("after Remove: %v, want ErrUnknownModel", err)
	}
	if err := s.Remove("sim"); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("second Remove: %v", err)
	}
}

// TestCarryCountedOnce: requests of several rows that overflow a batch are
// carried to the next one; the count of requests held by workers, which
// admission's estimate uses, must come back to zero.
func TestCarryCountedOnce(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 32, MaxBatch: 4, MaxQueueDelay: 20 * time.Millisecond})
	defer s.Close()
	if err := s.Swap("sim", "v1", newSim(0, time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := []runtime.Tensor{{DType: runtime.Float32, Shape: []int{3, 4}, Data: f32(make([]float32, 12)...)}}
			res, err := s.Infer(context.Background(), "sim", in, InferOptions{Deadline: 10 * time.Second})
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			if !slices.Equal(res.Outputs[0].Shape, []int{3, 4}) {
				t.Errorf("request %d: output shape %v", i, res.Outputs[0].Shape)
			}
		}()
	}
	wg.Wait()
	// Workers let go of a request just after answering it: stop them first.
	e := s.entry("sim")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := e.taken.Load(); n != 0 {
		t.Errorf("taken = %d after all requests finished, want 0", n)
	}
}

// TestMetricsForgetOldVersions: only the last few replaced versions keep
// their series.
func TestMetricsForgetOldVersions(t *testing.T) {
	s := New(Options{Workers: 1})
	defer s.Close()
	for k := range 6 {
		v := fmt.Sprintf("v%d", k)
		if err := s.Swap("sim", v, newSim(0, 0)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 6 {
		v := fmt.Sprintf("v%d", k)
		got := metricSum(t, s, "edgefleet_serve_successes_total", map[string]string{"model": "sim", "version": v})
		want := 1.0
		if k < 6-1-keptVersions {
			want = 0
		}
		if got != want {
			t.Errorf("%s: successes_total %v, want %v", v, got, want)
		}
	}
}

// TestQueuedBytesBound: the queue refuses inputs beyond its byte budget even
// with request slots free, and the budget is given back as requests leave.
func TestQueuedBytesBound(t *testing.T) {
	s := New(Options{Workers: 1, QueueSize: 8, MaxQueuedBytes: 20})
	defer s.Close()
	g := newGate(0)
	if err := s.Swap("sim", "v1", g); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 2)
	go func() { _, err := s.Infer(context.Background(), "sim", row(1), InferOptions{}); res <- err }()
	<-g.started
	go func() { _, err := s.Infer(context.Background(), "sim", row(2), InferOptions{}); res <- err }() // 16 bytes queued
	e := s.entry("sim")
	for len(e.queue) == 0 {
		goruntime.Gosched()
	}
	_, err := s.Infer(context.Background(), "sim", row(3), InferOptions{})
	if !isBusy(err, ErrQueueFull) || !strings.Contains(err.Error(), "exceed 20 bytes") {
		t.Errorf("over the byte budget: %v, want ErrQueueFull naming the budget", err)
	}
	close(g.gate)
	for range 2 {
		if err := <-res; err != nil {
			t.Error(err)
		}
	}
	if n := e.queuedBytes.Load(); n != 0 {
		t.Errorf("queued bytes %d after the queue drained", n)
	}
}
