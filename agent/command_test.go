package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

func TestCommands(t *testing.T) {
	b := startBroker(t)
	a, _ := start(t, baseConfig(t, b))
	b.waitFor("hello", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) == 1 })
	send := func(c *proto.Command) {
		t.Helper()
		c.ProtocolVersion = proto.ProtocolVersion
		if err := b.srv.Publish(proto.Topic(a.ID(), proto.KindCommand), proto.MustEncode(c), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	send(&proto.Command{RequestId: "r-expired", Name: "ping", ExpiresUnixMs: time.Now().Add(-time.Minute).UnixMilli()})
	if err := b.srv.Publish(proto.Topic(a.ID(), proto.KindCommand), []byte("garbage"), false, 1); err != nil {
		t.Fatal(err)
	}
	send(&proto.Command{RequestId: "r-ping", Name: "ping", ExpiresUnixMs: time.Now().Add(time.Minute).UnixMilli()})
	send(&proto.Command{RequestId: "r-what", Name: "self-destruct"})
	send(&proto.Command{RequestId: "r-hello", Name: "resend-hello"})
	msgs := b.waitFor("acks of ping, unknown command and resend-hello", 10*time.Second, func(ms []received) bool {
		return len(of[*proto.Ack](ms, proto.KindAck)) >= 3
	})
	acks := of[*proto.Ack](msgs, proto.KindAck)
	if len(acks) != 3 {
		t.Fatalf("%d acks: %v", len(acks), acks)
	}
	// Commands are handled in the order they were sent; the expired one
	// and the garbage were dropped before them.
	if acks[0].GetRequestId() != "r-ping" || !acks[0].GetOk() {
		t.Errorf("ack 0 %v", acks[0])
	}
	if acks[1].GetRequestId() != "r-what" || acks[1].GetOk() || acks[1].GetError() == "" {
		t.Errorf("ack 1 %v", acks[1])
	}
	if acks[2].GetRequestId() != "r-hello" || !acks[2].GetOk() {
		t.Errorf("ack 2 %v", acks[2])
	}
	if n := len(of[*proto.Hello](msgs, proto.KindHello)); n != 2 {
		t.Errorf("%d hellos after resend-hello, want 2", n)
	}
}

func TestDesiredIsValidatedAndSurvivesGarbage(t *testing.T) {
	b := startBroker(t)
	cfg := baseConfig(t, b)
	got := make(chan *proto.DesiredDeployment, 4)
	cfg.OnDesired = func(_ context.Context, d *proto.DesiredDeployment) { got <- d }
	a, _ := start(t, cfg)
	b.waitFor("hello", 10*time.Second, func(ms []received) bool { return len(of[*proto.Hello](ms, proto.KindHello)) == 1 })
	topic := proto.Topic(a.ID(), proto.KindDesired)
	for _, p := range [][]byte{[]byte("\xff\xff"), proto.MustEncode(&proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: "someone-else"})} {
		if err := b.srv.Publish(topic, p, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	// The agent keeps serving: a command still gets its answer.
	c := &proto.Command{ProtocolVersion: proto.ProtocolVersion, RequestId: "after", Name: "ping"}
	if err := b.srv.Publish(proto.Topic(a.ID(), proto.KindCommand), proto.MustEncode(c), false, 1); err != nil {
		t.Fatal(err)
	}
	b.waitFor("ack after bad desired state", 10*time.Second, func(ms []received) bool { return len(of[*proto.Ack](ms, proto.KindAck)) == 1 })
	if len(got) != 0 {
		t.Fatalf("invalid desired deployment reached OnDesired: %v", <-got)
	}
	// A valid one, retained, reaches OnDesired.
	good := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.ID(), Generation: 7,
		Models: []*proto.DesiredModel{{Name: "kws", Version: "2.0.0"}}}
	if err := b.srv.Publish(topic, proto.MustEncode(good), true, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.GetGeneration() != 7 || d.GetModels()[0].GetVersion() != "2.0.0" {
			t.Errorf("OnDesired got %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("valid desired deployment never reached OnDesired")
	}
}
