package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// TestDesiredReceivedBeforeConnectionLossIsApplied: a desired state the
// device received, and so acknowledged, while it was busy (here in
// OnDesired; in a fleet restart, waiting for a PUBACK the stopping server
// never sends) is still handed over when the connection breaks before the
// device got to it. The broker does not send it again, and a restarted
// broker may have lost its retained copy (here it was never retained).
func TestDesiredReceivedBeforeConnectionLossIsApplied(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	c := &cutter{}
	cfg.Dial = c.dial
	got := make(chan uint64, 16)
	var mu sync.Mutex
	var release chan struct{}
	cfg.OnDesired = func(ctx context.Context, d *proto.DesiredDeployment) {
		got <- d.GetGeneration()
		mu.Lock()
		r := release
		mu.Unlock()
		if d.GetGeneration()%2 == 1 && r != nil {
			select {
			case <-r:
			case <-ctx.Done():
			}
		}
	}
	a, _ := start(t, cfg)
	b.waitFor("hello", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) >= 1 })
	topic := proto.Topic(a.ID(), proto.KindDesired)
	publish := func(gen uint64) {
		t.Helper()
		d := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.ID(), Generation: gen,
			Models: []*proto.DesiredModel{{Name: "kws", Version: "2.0.0"}}}
		if err := b.srv.Publish(topic, proto.MustEncode(d), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(gen uint64) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case g := <-got:
				if g == gen {
					return
				}
			case <-timeout:
				t.Fatalf("desired generation %d never reached the device", gen)
			}
		}
	}
	// The connection lost and the message waiting are seen together by the
	// agent, which picks either first: a few rounds make a miss certain.
	for i := uint64(0); i < 4; i++ {
		b.waitFor("connected", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) >= int(i)+1 })
		r := make(chan struct{})
		mu.Lock()
		release = r
		mu.Unlock()
		publish(2*i + 1)
		expect(2*i + 1) // the device is now busy with it
		publish(2*i + 2)
		time.Sleep(300 * time.Millisecond) // received and acknowledged, waiting
		c.setDown(true)
		time.Sleep(300 * time.Millisecond) // the loss is noticed
		close(r)
		c.setDown(false)
		expect(2*i + 2)
	}
}
