package simulators_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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

// TestFleetAppliesUpdates: simulated devices install desired versions
// through the real update engine, from a signed manifest and an artifact
// served over HTTP, and then behave as configured for name@version — also
// for an artifact that is not a simulator model file at all.
func TestFleetAppliesUpdates(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	srv.AddHook(new(auth.AllowHook), nil)
	srv.AddListener(listeners.NewNet("t", ln))
	var (
		mu     sync.Mutex
		final  = map[string]*proto.JobProgress{} // by job id
		online = map[string]bool{}
		cond   = make(chan struct{})
	)
	notify := func() { close(cond); cond = make(chan struct{}) }
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
		mu.Lock()
		defer mu.Unlock()
		switch m := m.(type) {
		case *proto.Hello:
			online[id] = true
			notify()
		case *proto.JobProgress:
			if m.GetState() != proto.JobProgress_STATE_IN_PROGRESS {
				final[m.GetJobId()] = m
				notify()
			}
		}
	})
	go srv.Serve()
	defer srv.Close()

	blobs := map[string][]byte{}
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := blobs[strings.TrimPrefix(r.URL.Path, "/artifacts/")]
		mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	defer web.Close()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	release := func(version string, data []byte) *proto.DesiredModel {
		sum := sha256.Sum256(data)
		sha := hex.EncodeToString(sum[:])
		mu.Lock()
		blobs[sha] = data
		mu.Unlock()
		man, sig, err := proto.SignManifest(key, &proto.Manifest{
			Artifact: proto.ArtifactRef{SHA256: sha, Size: uint64(len(data))}, Backend: "tflite", Format: "tflite",
			Model: "kws", Precision: "int8", Schema: proto.ManifestSchema, Variant: "tflite-int8", Version: version,
		})
		if err != nil {
			t.Fatal(err)
		}
		return &proto.DesiredModel{Name: "kws", Version: version, Format: "tflite", Backend: "tflite", Url: web.URL + "/artifacts/" + sha,
			Sha256: sha, SizeBytes: uint64(len(data)), Manifest: man, Signature: sig}
	}

	const n = 20
	f, err := simulators.New(simulators.Config{
		Devices: n, BrokerURL: "tcp://" + ln.Addr().String(), Seed: 9, TelemetryInterval: time.Hour,
		Models:    []simulators.Model{{Name: "kws", Version: "1.0.0"}},
		Behaviors: map[string]simulators.Behavior{"kws@3.0.0": {ErrorRate: 1}},
		FleetKey:  pub, UpdateRoot: t.TempDir(),
		Health: update.HealthPolicy{Window: 20 * time.Millisecond, MinRequests: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			c, yes := cond, ok()
			mu.Unlock()
			if yes {
				return
			}
			select {
			case <-c:
			case <-deadline:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("every device online", func() bool { return len(online) == n })

	deploy := func(gen uint64, dm *proto.DesiredModel) {
		for i := 0; i < n; i++ {
			id := f.DeviceID(i)
			m := protobuf.Clone(dm).(*proto.DesiredModel)
			m.JobId = id + "-" + dm.GetVersion()
			d := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Generation: gen, Models: []*proto.DesiredModel{m}}
			if err := srv.Publish(proto.Topic(id, proto.KindDesired), proto.MustEncode(d), true, 1); err != nil {
				t.Fatal(err)
			}
		}
		waitFor("every device's job for "+dm.GetVersion(), func() bool {
			for i := 0; i < n; i++ {
				if final[f.DeviceID(i)+"-"+dm.GetVersion()] == nil {
					return false
				}
			}
			return true
		})
		mu.Lock()
		defer mu.Unlock()
		for i := 0; i < n; i++ {
			if p := final[f.DeviceID(i)+"-"+dm.GetVersion()]; p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
				t.Errorf("%s: %v %s", f.DeviceID(i), p.GetState(), p.GetReason())
			}
		}
	}
	deploy(1, release("2.0.0", simulators.ModelFile{Name: "kws", Version: "2.0.0"}.Encode()))
	// Bytes that are no simulator model file: a real device would run
	// them; a simulated one takes its behaviour from kws@3.0.0.
	deploy(2, release("3.0.0", bytes.Repeat([]byte("TFL3"), 300)))

	agents := f.Agents()
	if len(agents) != n {
		t.Fatalf("%d agents", len(agents))
	}
	for _, a := range agents {
		if v, _ := a.ServedVersion("kws"); v != "3.0.0" {
			t.Errorf("%s serves %s, want 3.0.0", a.ID(), v)
		}
		err := a.Infer(ctx, "kws", simulators.Input(), []agentrt.Tensor{{}})
		if !errors.Is(err, simulators.ErrSimulated) {
			t.Errorf("%s: kws@3.0.0 is configured to fail every request; got %v", a.ID(), err)
		}
	}
}
