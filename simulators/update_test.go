package simulators_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	protobuf "google.golang.org/protobuf/proto"

	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// updateFleet is a simulated fleet with update enabled, a real broker on
// loopback whose inline client publishes desired states and collects job
// outcomes, and an artifact server.
type updateFleet struct {
	tb    testing.TB
	srv   *mochi.Server
	web   *httptest.Server
	key   ed25519.PrivateKey
	fleet *simulators.Fleet
	n     int

	mu     sync.Mutex
	final  map[string]*proto.JobProgress // by job id
	online map[string]bool
	cond   chan struct{}
	blobs  map[string][]byte
}

func startUpdateFleet(tb testing.TB, n int, behaviors map[string]simulators.Behavior, ramp time.Duration) *updateFleet {
	return startUpdateFleetIn(tb, n, behaviors, ramp, tb.TempDir())
}

func startUpdateFleetIn(tb testing.TB, n int, behaviors map[string]simulators.Behavior, ramp time.Duration, root string) *updateFleet {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	u := &updateFleet{tb: tb, n: n, final: map[string]*proto.JobProgress{}, online: map[string]bool{}, cond: make(chan struct{}), blobs: map[string][]byte{}}
	u.srv = mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	u.srv.AddHook(new(auth.AllowHook), nil)
	u.srv.AddListener(listeners.NewNet("t", ln))
	u.srv.Subscribe(proto.TopicPrefix+"#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		id, kind, err := proto.ParseTopic(pk.TopicName)
		if err != nil || !kind.FromDevice() {
			return
		}
		m, err := proto.Decode(kind, id, pk.Payload)
		if err != nil {
			tb.Errorf("%s: %v", id, err)
			return
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		switch m := m.(type) {
		case *proto.Hello:
			u.online[id] = true
			u.notify()
		case *proto.JobProgress:
			if m.GetState() != proto.JobProgress_STATE_IN_PROGRESS {
				u.final[m.GetJobId()] = m
				u.notify()
			}
		}
	})
	go u.srv.Serve()
	tb.Cleanup(func() { u.srv.Close() })
	u.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		b, ok := u.blobs[strings.TrimPrefix(r.URL.Path, "/artifacts/")]
		u.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	tb.Cleanup(u.web.Close)
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	u.key = key
	u.fleet, err = simulators.New(simulators.Config{
		Devices: n, BrokerURL: "tcp://" + ln.Addr().String(), Seed: 9, TelemetryInterval: time.Hour, Ramp: ramp,
		Models: []simulators.Model{{Name: "kws", Version: "1.0.0"}}, Behaviors: behaviors,
		FleetKey: pub, UpdateRoot: root,
		Health: update.HealthPolicy{Window: 20 * time.Millisecond, MinRequests: 1 << 20},
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.fleet.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	u.waitFor("every device online", time.Minute, func() bool { return len(u.online) == n })
	return u
}

func (u *updateFleet) notify() { close(u.cond); u.cond = make(chan struct{}) }

func (u *updateFleet) waitFor(what string, timeout time.Duration, ok func() bool) {
	u.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		u.mu.Lock()
		c, yes := u.cond, ok()
		u.mu.Unlock()
		if yes {
			return
		}
		select {
		case <-c:
		case <-deadline.C:
			u.tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// release stores an artifact and returns a signed desired model for it.
func (u *updateFleet) release(version string, data []byte) *proto.DesiredModel {
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	u.mu.Lock()
	u.blobs[sha] = data
	u.mu.Unlock()
	man, sig, err := proto.SignManifest(u.key, &proto.Manifest{
		Artifact: proto.ArtifactRef{SHA256: sha, Size: uint64(len(data))}, Backend: "tflite", Format: "tflite",
		Model: "kws", Precision: "int8", Schema: proto.ManifestSchema, Variant: "tflite-int8", Version: version,
	})
	if err != nil {
		u.tb.Fatal(err)
	}
	return &proto.DesiredModel{Name: "kws", Version: version, Format: "tflite", Backend: "tflite", Url: u.web.URL + "/artifacts/" + sha,
		Sha256: sha, SizeBytes: uint64(len(data)), Manifest: man, Signature: sig}
}

// deploy sends generation gen naming dm to every device and waits until
// each has reported the outcome of its job, which must be success.
func (u *updateFleet) deploy(gen uint64, dm *proto.DesiredModel) {
	u.tb.Helper()
	job := func(i int) string { return fmt.Sprintf("%s-%d", u.fleet.DeviceID(i), gen) }
	for i := 0; i < u.n; i++ {
		id := u.fleet.DeviceID(i)
		m := protobuf.Clone(dm).(*proto.DesiredModel)
		m.JobId = job(i)
		d := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Generation: gen, Models: []*proto.DesiredModel{m}}
		if err := u.srv.Publish(proto.Topic(id, proto.KindDesired), proto.MustEncode(d), true, 1); err != nil {
			u.tb.Fatal(err)
		}
	}
	u.waitFor(fmt.Sprintf("every device's job for generation %d", gen), 2*time.Minute, func() bool {
		for i := 0; i < u.n; i++ {
			if u.final[job(i)] == nil {
				return false
			}
		}
		return true
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := 0; i < u.n; i++ {
		if p := u.final[job(i)]; p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
			u.tb.Errorf("%s: %v %s", u.fleet.DeviceID(i), p.GetState(), p.GetReason())
		}
	}
}

// TestFleetAppliesUpdates: simulated devices install desired versions
// through the real update engine, from a signed manifest and an artifact
// served over HTTP, and then behave as configured for name@version — also
// for an artifact that is not a simulator model file at all.
func TestFleetAppliesUpdates(t *testing.T) {
	const n = 20
	u := startUpdateFleet(t, n, map[string]simulators.Behavior{"kws@3.0.0": {ErrorRate: 1}}, 0)
	u.deploy(1, u.release("2.0.0", simulators.ModelFile{Name: "kws", Version: "2.0.0"}.Encode()))
	// Bytes that are no simulator model file: a real device would run
	// them; a simulated one takes its behaviour from kws@3.0.0.
	u.deploy(2, u.release("3.0.0", bytes.Repeat([]byte("TFL3"), 300)))

	agents := u.fleet.Agents()
	if len(agents) != n {
		t.Fatalf("%d agents", len(agents))
	}
	for _, a := range agents {
		if v, _ := a.ServedVersion("kws"); v != "3.0.0" {
			t.Errorf("%s serves %s, want 3.0.0", a.ID(), v)
		}
		err := a.Infer(context.Background(), "kws", simulators.Input(), []agentrt.Tensor{{}})
		if !errors.Is(err, simulators.ErrSimulated) {
			t.Errorf("%s: kws@3.0.0 is configured to fail every request; got %v", a.ID(), err)
		}
	}
}

// BenchmarkFleetUpdate measures how long 1,000 simulated devices take to
// apply one desired generation each, through the real update engine: from
// the first desired state published to the last device's terminal job
// report. One op is one fleet-wide update. The slots live on the test's
// temporary directory ("disk") and, when the machine has one, on a tmpfs
// ("tmpfs"), side by side: the engine syncs every artifact as a real
// device must, and the difference is what that costs here.
//
//	go test -run '^$' -bench FleetUpdate -benchtime 3x ./simulators
func BenchmarkFleetUpdate(b *testing.B) {
	const n = 1000
	roots := map[string]func(b *testing.B) string{"disk": func(b *testing.B) string { return b.TempDir() }}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		roots["tmpfs"] = func(b *testing.B) string {
			dir, err := os.MkdirTemp("/dev/shm", "edgefleet-bench-")
			if err != nil {
				b.Skip(err)
			}
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	for _, name := range []string{"disk", "tmpfs"} {
		root, ok := roots[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			u := startUpdateFleetIn(b, n, nil, 2*time.Second, root(b))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				v := fmt.Sprintf("2.0.%d", i)
				u.deploy(uint64(i+1), u.release(v, simulators.ModelFile{Name: "kws", Version: v}.Encode()))
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/fleet-update")
		})
	}
}
