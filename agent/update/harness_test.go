package update_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

var pi5 = hw.ProbeFS(os.DirFS("../hw/testdata/pi5"), "arm64")

// fleet is a minimal fleet on loopback: a real MQTT broker (mochi, as the
// server embeds it) whose inline client publishes desired state and
// records job progress, an artifact server that answers Range requests
// the way the registry does, and a signing key.
type fleet struct {
	t    *testing.T
	addr string
	srv  *mochi.Server
	key  ed25519.PrivateKey
	pub  ed25519.PublicKey
	http *httptest.Server

	mu     sync.Mutex
	jobs   []*proto.JobProgress
	cond   chan struct{}
	blobs  map[string][]byte
	cuts   map[string][]int // per sha256: bytes to send before cutting, one entry per request
	stalls map[string][]int // per sha256: bytes to send before going silent, one entry per request
	ranges []string         // Range headers received, in order
	// ignoreRange makes the artifact server answer every request with the
	// whole body and 200, as servers without Range support do.
	ignoreRange bool
	// slow makes artifact downloads take a while (1 KiB per 10 ms), so a
	// test can interrupt one.
	slow bool
}

func startFleet(t *testing.T) *fleet {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("t", ln)); err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, addr: ln.Addr().String(), srv: srv, key: key, pub: pub, cond: make(chan struct{}),
		blobs: map[string][]byte{}, cuts: map[string][]int{}, stalls: map[string][]int{}}
	err = srv.Subscribe(proto.TopicPrefix+"+/"+string(proto.KindJobs), 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		id, _, err := proto.ParseTopic(pk.TopicName)
		if err != nil {
			t.Errorf("job progress on %s: %v", pk.TopicName, err)
			return
		}
		p, err := proto.DecodeJobProgress(id, pk.Payload)
		if err != nil {
			t.Errorf("device %s sent invalid job progress: %v", id, err)
			return
		}
		f.mu.Lock()
		f.jobs = append(f.jobs, p)
		close(f.cond)
		f.cond = make(chan struct{})
		f.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	f.http = httptest.NewServer(http.HandlerFunc(f.serveArtifact))
	t.Cleanup(f.http.Close)
	return f
}

func (f *fleet) brokerURL() string { return "tcp://" + f.addr }

// serveArtifact is GET /artifacts/{sha256} with Range and ETag, and cuts
// the connection mid-body when told to.
func (f *fleet) serveArtifact(w http.ResponseWriter, r *http.Request) {
	sha, ok := strings.CutPrefix(r.URL.Path, "/artifacts/")
	f.mu.Lock()
	b, found := f.blobs[sha]
	cut := -1
	if ok && len(f.cuts[sha]) > 0 {
		cut, f.cuts[sha] = f.cuts[sha][0], f.cuts[sha][1:]
	}
	stall := -1
	if ok && len(f.stalls[sha]) > 0 {
		stall, f.stalls[sha] = f.stalls[sha][0], f.stalls[sha][1:]
	}
	if rg := r.Header.Get("Range"); rg != "" {
		f.ranges = append(f.ranges, rg)
	}
	f.mu.Unlock()
	if !ok || !found {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", `"`+sha+`"`)
	if stall >= 0 {
		// Headers and a few bytes, then silence with the connection open
		// until the client gives up.
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		w.Write(b[:stall])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	slow, ignoreRange := f.slow, f.ignoreRange
	f.mu.Unlock()
	if ignoreRange {
		r.Header.Del("Range")
	}
	if cut < 0 && !slow {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		return
	}
	if cut < 0 {
		cut = len(b)
	}
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		s, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		start, _ = strconv.Atoi(s)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(b)-1, len(b)))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
	}
	end := min(start+cut, len(b))
	if !slow {
		w.Write(b[start:end])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}
	for i := start; i < end; i += 1024 {
		if _, err := w.Write(b[i:min(i+1024, end)]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Millisecond): // the slow link itself
		}
	}
	if end < len(b) {
		panic(http.ErrAbortHandler)
	}
}

func (f *fleet) put(b []byte) string {
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	f.mu.Lock()
	f.blobs[sha] = b
	f.mu.Unlock()
	return sha
}

func (f *fleet) artifactURL(sha string) string { return f.http.URL + "/artifacts/" + sha }

// release describes a model version to put in a desired deployment.
type release struct {
	name, version string
	data          []byte
	backend       string // default "tflite"
	input, output []byte // self-test tensors
	tolerance     float64
	profiles      []string
	minAgent      string
}

// desiredModel publishes the release's artifact and returns a correctly
// signed desired model for it.
func (f *fleet) desiredModel(r release, job string) *proto.DesiredModel {
	f.t.Helper()
	if r.backend == "" {
		r.backend = "tflite"
	}
	sha := f.put(r.data)
	m := &proto.Manifest{
		Artifact: proto.ArtifactRef{SHA256: sha, Size: uint64(len(r.data))},
		Backend:  r.backend, Format: "tflite", Model: r.name, Precision: "int8", Schema: proto.ManifestSchema,
		Variant: "tflite-int8", Version: r.version, Profiles: r.profiles, MinAgentVersion: r.minAgent,
	}
	if r.input != nil {
		in := proto.ArtifactRef{SHA256: f.put(r.input), Size: uint64(len(r.input))}
		m.SelfTest = &proto.SelfTest{Inputs: []proto.ArtifactRef{in}, Tolerance: r.tolerance}
		if r.output != nil {
			m.SelfTest.ExpectedOutputs = []proto.ArtifactRef{{SHA256: f.put(r.output), Size: uint64(len(r.output))}}
		}
	}
	man, sig, err := proto.SignManifest(f.key, m)
	if err != nil {
		f.t.Fatal(err)
	}
	return &proto.DesiredModel{
		Name: r.name, Version: r.version, Format: "tflite", Backend: r.backend, Url: f.artifactURL(sha),
		Sha256: sha, SizeBytes: uint64(len(r.data)), Manifest: man, Signature: sig, JobId: job,
	}
}

// publish sends a retained desired deployment to a device.
func (f *fleet) publish(device string, gen uint64, models ...*proto.DesiredModel) {
	f.t.Helper()
	d := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: device, Generation: gen, Models: models,
		IssuedUnixMs: time.Now().UnixMilli(), RolloutId: "r1"}
	if err := f.srv.Publish(proto.Topic(device, proto.KindDesired), proto.MustEncode(d), true, 1); err != nil {
		f.t.Fatal(err)
	}
}

// waitJob waits for a job to report a state other than IN_PROGRESS and
// returns every message of that job.
func (f *fleet) waitJob(job string, timeout time.Duration) []*proto.JobProgress {
	f.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		var mine []*proto.JobProgress
		done := false
		for _, p := range f.jobs {
			if p.GetJobId() == job {
				mine = append(mine, p)
				done = done || p.GetState() != proto.JobProgress_STATE_IN_PROGRESS
			}
		}
		ch := f.cond
		f.mu.Unlock()
		if done {
			return mine
		}
		select {
		case <-ch:
		case <-deadline.C:
			f.t.Fatalf("job %s did not finish in %v; progress so far: %v", job, timeout, steps(mine))
		}
	}
}

// waitStep waits until a job reports a step.
func (f *fleet) waitStep(job string, step proto.JobProgress_Step, timeout time.Duration) {
	f.t.Helper()
	f.waitStepN(job, step, 1, timeout)
}

// waitStepN waits until a job has reported a step n times.
func (f *fleet) waitStepN(job string, step proto.JobProgress_Step, n int, timeout time.Duration) {
	f.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ch := f.cond
		seen := 0
		for _, p := range f.jobs {
			if p.GetJobId() == job && p.GetStep() == step {
				seen++
			}
		}
		f.mu.Unlock()
		if seen >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			f.t.Fatalf("job %s did not reach %v in %v", job, step, timeout)
		}
	}
}

func (f *fleet) jobCount(job string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.jobs {
		if p.GetJobId() == job {
			n++
		}
	}
	return n
}

func steps(ps []*proto.JobProgress) string {
	var s []string
	for _, p := range ps {
		x := strings.TrimPrefix(p.GetStep().String(), "STEP_")
		if p.GetState() != proto.JobProgress_STATE_IN_PROGRESS {
			x += "/" + strings.TrimPrefix(p.GetState().String(), "STATE_")
		}
		if len(s) == 0 || s[len(s)-1] != x {
			s = append(s, x)
		}
	}
	return strings.Join(s, " ")
}

func final(ps []*proto.JobProgress) *proto.JobProgress {
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].GetState() != proto.JobProgress_STATE_IN_PROGRESS {
			return ps[i]
		}
	}
	return nil
}

func simModelFile(name, version string) []byte {
	return simulators.ModelFile{Name: name, Version: version}.Encode()
}

func simBackend(t *testing.T, behaviors map[string]simulators.Behavior) agentrt.Backend {
	t.Helper()
	b, err := simulators.NewBackend(simulators.BackendConfig{Name: "tflite", Formats: []string{"tflite"}, Seed: 1, Behaviors: behaviors})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// agentConfig is a device with the fleet's key pinned, serving m1 from
// its configuration.
func (f *fleet) agentConfig(t *testing.T, dir string, backend agentrt.Backend, m1 agent.ModelSpec) agent.Config {
	return agent.Config{
		BrokerURL: f.brokerURL(), DeviceID: "gw-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		StateDir: dir, TelemetryInterval: time.Hour, AgentVersion: "0.1.0-test", Facts: &pi5,
		Backends: []agentrt.Backend{backend}, Models: []agent.ModelSpec{m1}, MaxSessions: 2,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second,
		FleetKey: f.pub, Health: defaultTestHealth,
	}
}

// runAgent builds and runs an agent until the test ends (or stop is
// called), checking that Run returns cleanly.
func runAgent(t *testing.T, cfg agent.Config) (*agent.Agent, func()) {
	t.Helper()
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	agentsRunning.Add(1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10 s after cancel")
			}
			if err := a.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if agentsRunning.Add(-1) == 0 {
				checkNoGoroutines(t)
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// agentsRunning counts the agents runAgent started and has not stopped;
// goroutines are checked when the last one stops.
var agentsRunning atomic.Int32

// checkNoGoroutines fails the test if goroutines of the agent or the
// updater outlive Run and Close (polling the goroutine list, bounded).
func checkNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "edgefleet/agent/update.") || strings.Contains(g, "edgefleet/agent.(") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines of the agent or updater left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(5 * time.Millisecond) // polling the goroutine list; nothing to wait on
	}
}

func servedVersion(t *testing.T, a *agent.Agent, name string) string {
	t.Helper()
	v, ok := a.ServedVersion(name)
	if !ok {
		t.Fatalf("%s is not served", name)
	}
	return v
}

// lastStep names the last progress a job reported, "" for none.
func (f *fleet) lastStep(job string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var mine []*proto.JobProgress
	for _, p := range f.jobs {
		if p.GetJobId() == job {
			mine = append(mine, p)
		}
	}
	if len(mine) == 0 {
		return "none"
	}
	s := steps(mine[len(mine)-1:])
	return s
}
