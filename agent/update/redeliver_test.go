package update_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/proto"
)

// TestRedeliveredGenerationRetriesFailedDownload: the artifact server is
// away (a fleet server restart) when a desired generation arrives, so the
// job fails for want of the bytes; when the device reconnects, the broker
// delivers the same retained generation again and the device must apply
// it then, not ignore it as already seen. A job that ended with a real
// verdict is not retried.
func TestRedeliveredGenerationRetriesFailedDownload(t *testing.T) {
	f := startFleet(t)
	srv, err := agent.New(agent.Config{BrokerURL: "tcp://127.0.0.1:1", Store: state.NewMemory(), Facts: &pi5,
		Backends: []agentrt.Backend{simBackend(t, nil)}, Models: []agent.ModelSpec{simSpec("kws", "1.0.0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	reports := make(chan *proto.JobProgress, 256)
	u, err := update.New(update.Config{
		FleetKey: f.pub, Dir: t.TempDir(), DeviceID: "gw-1", Store: state.NewMemory(), Server: srv,
		Backends: []agentrt.Backend{simBackend(t, nil)}, Health: defaultTestHealth,
		Report:  func(p *proto.JobProgress) { reports <- p },
		Profile: "raspberry-pi-5", AgentVersion: "0.2.0",
		StallTimeout: 300 * time.Millisecond, RetryMin: time.Millisecond, RetryMax: 2 * time.Millisecond, Retries: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		u.Close()
	}()
	wait := func(job string) *proto.JobProgress {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case p := <-reports:
				if p.GetJobId() == job && p.GetState() != proto.JobProgress_STATE_IN_PROGRESS {
					return p
				}
			case <-timeout:
				t.Fatalf("job %s did not finish", job)
			}
		}
	}
	desired := func(gen uint64, dm *proto.DesiredModel) *proto.DesiredDeployment {
		return &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: "gw-1", Generation: gen, Models: []*proto.DesiredModel{dm}}
	}

	dm := f.desiredModel(release{name: "kws", version: "2.0.0", data: simModelFile("kws", "2.0.0")}, "j2")
	f.mu.Lock()
	f.cuts[dm.GetSha256()] = []int{0, 0} // the server goes away: every connection drops at once
	f.mu.Unlock()
	u.Desired(desired(2, dm))
	if p := wait("j2"); p.GetState() != proto.JobProgress_STATE_FAILED || !strings.Contains(p.GetReason(), update.ErrDownload.Error()) {
		t.Fatalf("with the artifact server away: %v %q, want FAILED by the download", p.GetState(), p.GetReason())
	}
	// The server is back and the broker redelivers the retained state.
	u.Desired(desired(2, dm))
	if p := wait("j2"); p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
		t.Fatalf("after redelivery: %v %q, want SUCCEEDED", p.GetState(), p.GetReason())
	}
	if v, _ := srv.ServedVersion("kws"); v != "2.0.0" {
		t.Errorf("serving %s, want 2.0.0", v)
	}

	// The broker is back before the artifact server: the redelivery
	// arrives while the download still fails; the job is retried once it
	// has failed, without another delivery.
	dm3 := f.desiredModel(release{name: "kws", version: "2.0.2", data: simModelFile("kws", "2.0.2")}, "j3")
	f.mu.Lock()
	f.stalls[dm3.GetSha256()] = []int{0, 0} // connections that hang until the stall timeout
	f.mu.Unlock()
	u.Desired(desired(3, dm3))
	deadline := time.After(5 * time.Second)
	for downloading := false; !downloading; {
		select {
		case p := <-reports:
			downloading = p.GetJobId() == "j3" && p.GetStep() == proto.JobProgress_STEP_DOWNLOADING
		case <-deadline:
			t.Fatal("job j3 did not start downloading")
		}
	}
	u.Desired(desired(3, dm3))
	if p := wait("j3"); p.GetState() != proto.JobProgress_STATE_FAILED {
		t.Fatalf("with the artifact server hanging: %v %q, want FAILED", p.GetState(), p.GetReason())
	}
	if p := wait("j3"); p.GetState() != proto.JobProgress_STATE_SUCCEEDED {
		t.Fatalf("after a redelivery during the failing download: %v %q, want SUCCEEDED", p.GetState(), p.GetReason())
	}

	// A real verdict is final for its generation.
	bad := f.desiredModel(release{name: "kws", version: "2.0.1", data: simModelFile("kws", "2.0.1"), backend: "onnxruntime"}, "j4")
	u.Desired(desired(4, bad))
	if p := wait("j4"); p.GetState() != proto.JobProgress_STATE_INCOMPATIBLE {
		t.Fatalf("missing backend: %v %q", p.GetState(), p.GetReason())
	}
	u.Desired(desired(4, bad))
	select {
	case p := <-reports:
		if p.GetJobId() == "j4" {
			t.Errorf("an incompatible job was retried on redelivery: %v", p)
		}
	case <-time.After(300 * time.Millisecond):
	}
}
