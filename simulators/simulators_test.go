package simulators_test

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"

	"github.com/edgefleet/edgefleet/agent/hw"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

func TestBackendBehavior(t *testing.T) {
	b, err := simulators.NewBackend(simulators.BackendConfig{Seed: 7, Behaviors: map[string]simulators.Behavior{
		"m@3": {P50: 0, P95: 0, ErrorRate: 0.3},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	open := func(version string, beh *simulators.Behavior) agentrt.Session {
		m, err := b.Open(ctx, simulators.ModelFile{Name: "m", Version: version, Behavior: beh}.Encode(), agentrt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s3 := open("3", nil)
	out := []agentrt.Tensor{{}}
	fails := 0
	for i := 0; i < 2000; i++ {
		if err := s3.Run(ctx, simulators.Input(), out); errors.Is(err, simulators.ErrSimulated) {
			fails++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if fails < 520 || fails > 680 {
		t.Errorf("%d of 2000 failed at a 30%% error rate", fails)
	}
	in := simulators.Input()
	in[0].Shape = []int{1, 5}
	if err := s3.Run(ctx, in, out); !errors.Is(err, agentrt.ErrInput) {
		t.Errorf("bad shape: %v", err)
	}
	slow := open("4", &simulators.Behavior{P50: 2 * time.Second, P95: 4 * time.Second})
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := slow.Run(cctx, simulators.Input(), out); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow run past its deadline: %v", err)
	}
}

func TestBehaviorDistribution(t *testing.T) {
	// The latency model itself, sampled without sleeping: p50 and p95 of
	// the draws match the configured ones.
	beh := simulators.Behavior{P50: 10 * time.Millisecond, P95: 30 * time.Millisecond}
	r := rand.New(rand.NewPCG(1, 1))
	xs := make([]float64, 20000)
	for i := range xs {
		xs[i] = float64(simulators.SampleLatency(beh, r))
	}
	sort.Float64s(xs)
	p50, p95 := time.Duration(xs[10000]), time.Duration(xs[19000])
	if p50 < 9*time.Millisecond || p50 > 11*time.Millisecond || p95 < 27*time.Millisecond || p95 > 33*time.Millisecond {
		t.Errorf("p50 %v p95 %v, want 10ms and 30ms", p50, p95)
	}
}

func TestBackendRejectsBadFiles(t *testing.T) {
	b, _ := simulators.NewBackend(simulators.BackendConfig{})
	for _, data := range []string{"", "{", `{"format":"other","name":"a","version":"1"}`, `{"format":"edgefleet-sim","name":"a"}`,
		`{"format":"edgefleet-sim","name":"a","version":"1","behavior":{"p50":5,"p95":1}}`,
		`{"format":"edgefleet-sim","name":"a","version":"1","behavior":{"error_rate":2}}`} {
		if _, err := b.Open(context.Background(), []byte(data), agentrt.Options{}); !errors.Is(err, agentrt.ErrBadModel) {
			t.Errorf("%q: %v", data, err)
		}
	}
	if _, err := simulators.NewBackend(simulators.BackendConfig{Behaviors: map[string]simulators.Behavior{"a@1": {ErrorRate: -1}}}); err == nil {
		t.Error("negative error rate accepted")
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(simulators.ModelFile{Name: "a", Version: "1"}.Encode())
	f.Add([]byte(`{"format":"edgefleet-sim","name":"a","version":"1","behavior":{"p50":1000,"p95":2000,"error_rate":0.5}}`))
	b, _ := simulators.NewBackend(simulators.BackendConfig{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := b.Open(context.Background(), data, agentrt.Options{})
		if err != nil {
			if !errors.Is(err, agentrt.ErrBadModel) {
				t.Fatalf("error does not wrap ErrBadModel: %v", err)
			}
			return
		}
		m.Close()
	})
}

func TestHardwareMix(t *testing.T) {
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(42, 0))
	seen := map[string]int{}
	for i := 0; i < 1000; i++ {
		p, err := hw.Match(*simulators.PickHardware(r), ps)
		if err != nil {
			t.Fatal(err)
		}
		seen[p.Name]++
	}
	for _, want := range []string{"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "x86-ipc-avx2", "coral-dev-board", "generic-amd64"} {
		if seen[want] == 0 {
			t.Errorf("no simulated device matched %s: %v", want, seen)
		}
	}
}

type hub struct {
	mu     sync.Mutex
	hellos map[string]*proto.Hello
	reqs   map[string]uint64
	ch     chan struct{}
}

func TestFleet(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	srv.AddHook(new(auth.AllowHook), nil)
	srv.AddListener(listeners.NewNet("t", ln))
	h := &hub{hellos: map[string]*proto.Hello{}, reqs: map[string]uint64{}, ch: make(chan struct{}, 1)}
	srv.Subscribe(proto.TopicPrefix+"#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		id, kind, err := proto.ParseTopic(pk.TopicName)
		if err != nil || !kind.FromDevice() {
			return
		}
		m, err := proto.Decode(kind, id, pk.Payload)
		if err != nil {
			t.Errorf("%s: %v", id, err)
			return
		}
		h.mu.Lock()
		switch m := m.(type) {
		case *proto.Hello:
			h.hellos[id] = m
		case *proto.TelemetryWindow:
			for _, ms := range m.GetModels() {
				h.reqs[id] += ms.GetRequests()
			}
		}
		h.mu.Unlock()
		select {
		case h.ch <- struct{}{}:
		default:
		}
	})
	go srv.Serve()
	var closeOnce sync.Once
	closeBroker := func() { closeOnce.Do(func() { srv.Close() }) }
	defer closeBroker()

	const n = 20
	f, err := simulators.New(simulators.Config{
		Devices: n, BrokerURL: "tcp://" + ln.Addr().String(), Seed: 3,
		TelemetryInterval: 100 * time.Millisecond, Ramp: 200 * time.Millisecond, Rate: 50,
		Models: []simulators.Model{{Name: "kws", Version: "2.0.0", Behavior: &simulators.Behavior{P50: time.Millisecond, P95: 2 * time.Millisecond}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	deadline := time.After(20 * time.Second)
	for {
		h.mu.Lock()
		ready := len(h.hellos) == n
		for _, r := range h.reqs {
			if r == 0 {
				ready = false
			}
		}
		ready = ready && len(h.reqs) == n
		h.mu.Unlock()
		if ready {
			break
		}
		select {
		case <-h.ch:
		case <-deadline:
			t.Fatalf("only %d of %d devices said hello / reported requests", len(h.hellos), n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	profilesSeen := map[string]bool{}
	for id, hello := range h.hellos {
		profilesSeen[hello.GetFirmwareProfile()] = true
		if hello.GetLabels()["simulated"] != "true" || len(hello.GetModels()) != 1 || hello.GetModels()[0].GetBackend() != "tflite" {
			t.Errorf("%s hello %v", id, hello)
		}
		// The backends are the profile's, by name, in its order.
		want := map[string]string{"raspberry-pi-4": "tflite,onnxruntime", "raspberry-pi-5": "tflite,onnxruntime",
			"jetson-orin-nano": "onnxruntime,tflite", "x86-ipc-avx2": "onnxruntime,tflite", "coral-dev-board": "tflite",
			"generic-amd64": "tflite,onnxruntime", "generic-arm64": "tflite,onnxruntime"}[hello.GetFirmwareProfile()]
		var got []string
		for _, b := range hello.GetBackends() {
			got = append(got, b.GetName())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s (%s) backends %v, want %s", id, hello.GetFirmwareProfile(), got, want)
		}
	}
	h.mu.Unlock()
	if len(profilesSeen) < 3 {
		t.Errorf("a fleet of %d with only profiles %v", n, profilesSeen)
	}
	if f.DeviceID(7) != "sim-00007" {
		t.Errorf("device id %s", f.DeviceID(7))
	}
	// Everything the fleet (and the broker) started has stopped.
	closeBroker()
	stop := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(stop) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling a count
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []simulators.Config{
		{Devices: 0, BrokerURL: "tcp://x:1"},
		{Devices: 1},
		{Devices: 1, BrokerURL: "tcp://x:1", Rate: -1},
		{Devices: 1, BrokerURL: "tcp://x:1", Ramp: -time.Second},
		{Devices: 1, BrokerURL: "tcp://x:1", Behaviors: map[string]simulators.Behavior{"a@1": {P50: 2, P95: 1}}},
	} {
		if _, err := simulators.New(c); !errors.Is(err, simulators.ErrConfig) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
