package update_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/proto"
)

// TestCrashDuringUpdate builds the real edgefleet-agent, and 50 times:
// starts it on the same state directory, hands it a new desired
// generation (alternating between two real models with self-tests, served
// over a deliberately slow link so the kill can land in the download too),
// SIGKILLs it at a seeded random moment, starts it again and checks that
// it says hello with a verified model, finishes the job, and that the
// state it leaves (after another SIGKILL) is consistent: bbolt's own
// check, the active slot's bytes match the sha256 recorded for them, one
// active version per model, the installed list agrees with the slots.
func TestCrashDuringUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the agent binary 100 times")
	}
	const rounds = 50
	started := time.Now()
	bin := filepath.Join(t.TempDir(), "edgefleet-agent")
	build := exec.Command("go", "build", "-o", bin, "./cmd/edgefleet-agent")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/edgefleet-agent: %v\n%s", err, out)
	}
	t.Logf("agent built in %v", time.Since(started).Round(time.Millisecond))

	f := startFleet(t)
	f.slow = true
	hellos := f.recordHellos(t)
	const name = "vibration-anomaly"
	demo := func(version string) release {
		p := name + "-" + version
		return release{name: name, version: version, data: demoFile(t, p+".tflite"),
			input: demoFile(t, p+".input.bin"), output: demoFile(t, p+".expected.bin")}
	}
	v1path, err := filepath.Abs(filepath.Join("..", "..", "models", "demo", name+"-1.0.0.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	hwRoot, err := filepath.Abs(filepath.Join("..", "hw", "testdata", "pi5"))
	if err != nil {
		t.Fatal(err)
	}
	// Every round installs a version never seen before (a real model
	// padded with a few bytes, which the engine ignores), so every round
	// downloads and none finds its bytes already in a slot.
	shas := map[string]string{f.put(demo("1.0.0").data): "1.0.0"}
	roundRelease := func(i int) release {
		base := map[bool]string{true: "2.0.0", false: "1.0.0"}[i%2 == 1]
		rel := demo(base)
		rel.version = fmt.Sprintf("%s.%d", strings.TrimSuffix(base, ".0"), i)
		rel.data = append(append([]byte(nil), rel.data...), make([]byte, i)...)
		shas[f.put(rel.data)] = rel.version
		return rel
	}
	dir := t.TempDir()
	const device = "gw-crash"
	logs := &lockedBuffer{}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--server", f.brokerURL(), "--state-dir", dir, "--device-id", device,
			"--fleet-key", base64.StdEncoding.EncodeToString(f.pub), "--health-window", "50ms",
			"--hw-root", hwRoot, "--hw-arch", "arm64", "--telemetry-interval", "1h", "--log-level", "info",
			"--model", name+"=1.0.0="+v1path)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	defer func() {
		if t.Failed() {
			t.Logf("agent logs (last 8 KiB):\n%s", logs.tail(8<<10))
		}
	}()

	r := rand.New(rand.NewPCG(20261127, 5))
	outcomes := map[string]int{}
	killedAt := map[string]int{} // the last step the fleet heard of before the kill
	for i := 1; i <= rounds; i++ {
		rel := roundRelease(i)
		version := rel.version
		job := fmt.Sprintf("crash-%d", i)
		cmd := start()
		f.publish(device, uint64(i), f.desiredModel(rel, job))
		// An update here takes about 100-350 ms (the slow link, the
		// self-test, a 50 ms health window); kill anywhere in 0-400 ms,
		// which includes before it starts and after it ends.
		delay := time.Duration(r.Int64N(int64(300 * time.Millisecond)))
		timer := time.NewTimer(delay)
		<-timer.C
		kill(cmd)
		at := f.lastStep(job)
		killedAt[at]++

		restarted := time.Now()
		cmd = start()
		h := hellos.since(t, restarted, 15*time.Second)
		active := activeModels(h)
		if len(active) != 1 || active[0].GetName() != name || shas[active[0].GetSha256()] != active[0].GetVersion() {
			t.Fatalf("round %d (killed after %v): after restart hello reports active %v, want one verified %s", i, delay, active, name)
		}
		if at == "DONE/SUCCEEDED" && active[0].GetVersion() != version {
			t.Fatalf("round %d: the fleet was told %s succeeded, but after a crash the agent serves %s", i, version, active[0].GetVersion())
		}
		ps := f.waitJob(job, 20*time.Second)
		outcome := final(ps).GetState()
		outcomes[outcome.String()]++
		if outcome != proto.JobProgress_STATE_SUCCEEDED {
			t.Fatalf("round %d (killed after %v): job ended %v: %s", i, delay, outcome, final(ps).GetReason())
		}
		kill(cmd)
		checkCrashState(t, i, dir, name, version, job, shas)
	}
	t.Logf("%d kill/restart rounds in %v; killed after %v; outcomes %v", rounds, time.Since(started).Round(time.Millisecond), killedAt, outcomes)
	// The kills must have landed inside updates, not only around them.
	for _, s := range []string{"DOWNLOADING", "DONE/SUCCEEDED"} {
		if killedAt[s] == 0 {
			t.Errorf("no kill landed at %s; the crash points do not cover the update (%v)", s, killedAt)
		}
	}
	if len(killedAt) < 4 {
		t.Errorf("kills landed at only %d distinct points: %v", len(killedAt), killedAt)
	}
}

// checkCrashState opens the state a killed agent left and checks it.
func checkCrashState(t *testing.T, round int, dir, name, version, job string, shas map[string]string) {
	t.Helper()
	st, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatalf("round %d: open state: %v", round, err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	ctx := context.Background()
	ds, err := st.Deployments(ctx)
	if err != nil || len(ds) != 1 {
		t.Fatalf("round %d: deployments %v, %v", round, ds, err)
	}
	d := ds[0]
	if d.Job.ID != job || d.Job.State != int32(proto.JobProgress_STATE_SUCCEEDED) {
		t.Fatalf("round %d: state records job %s in state %d, want %s succeeded", round, d.Job.ID, d.Job.State, job)
	}
	activeSlot := d.Active
	if activeSlot == "" {
		activeSlot = "a"
	}
	slot, ok := d.Slots[activeSlot]
	{
		if !ok || slot.Version != version {
			t.Fatalf("round %d: active slot %s holds %+v, want %s", round, activeSlot, slot, version)
		}
		b, err := os.ReadFile(filepath.Join(dir, "models", "slots", name+"."+activeSlot))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := (proto.ArtifactRef{SHA256: slot.SHA256, Size: slot.Size}).CheckBytes(b); err != nil || shas[slot.SHA256] != version {
			t.Fatalf("round %d: active slot file: %v", round, err)
		}
	}
	ms, err := st.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var act []string
	for _, m := range ms {
		if m.Active {
			act = append(act, m.Version)
		}
	}
	if len(act) != 1 || act[0] != version {
		t.Fatalf("round %d: installed models %+v: active %v, want %s", round, ms, act, version)
	}
}

func activeModels(h *proto.Hello) []*proto.InstalledModel {
	var out []*proto.InstalledModel
	for _, m := range h.GetModels() {
		if m.GetActive() {
			out = append(out, m)
		}
	}
	return out
}

type helloLog struct {
	mu     sync.Mutex
	hellos []*proto.Hello
	cond   chan struct{}
}

func (f *fleet) recordHellos(t *testing.T) *helloLog {
	hl := &helloLog{cond: make(chan struct{})}
	err := f.srv.Subscribe(proto.TopicPrefix+"+/"+string(proto.KindHello), 2, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		id, _, err := proto.ParseTopic(pk.TopicName)
		if err != nil {
			return
		}
		h, err := proto.DecodeHello(id, pk.Payload)
		if err != nil {
			t.Errorf("invalid hello: %v", err)
			return
		}
		hl.mu.Lock()
		hl.hellos = append(hl.hellos, h)
		close(hl.cond)
		hl.cond = make(chan struct{})
		hl.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return hl
}

// since waits for a hello sent at or after t0 (by a process started
// then) and returns it.
func (hl *helloLog) since(t *testing.T, t0 time.Time, timeout time.Duration) *proto.Hello {
	t.Helper()
	return hl.waitFor(t, t0, timeout, func(*proto.Hello) bool { return true })
}

// waitFor waits for a hello sent at or after t0 that satisfies ok.
func (hl *helloLog) waitFor(t *testing.T, t0 time.Time, timeout time.Duration, ok func(*proto.Hello) bool) *proto.Hello {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		hl.mu.Lock()
		for _, h := range hl.hellos {
			if h.GetSentUnixMs() >= t0.UnixMilli() && ok(h) {
				hl.mu.Unlock()
				return h
			}
		}
		ch := hl.cond
		hl.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no such hello in %v", timeout)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
