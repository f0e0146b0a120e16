package agent_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/proto"
)

// broker is a real MQTT broker (mochi, as the fleet server embeds it) on a
// loopback port, with an inline subscriber that records every device
// message, decoded and validated as the server would.
type broker struct {
	t    *testing.T
	addr string
	srv  *mochi.Server

	mu   sync.Mutex
	msgs []received
	cond chan struct{} // closed and replaced on every message
}

type received struct {
	device   string
	kind     proto.Kind
	retained bool
	msg      proto.Message
}

func startBroker(t *testing.T) *broker {
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
	b := &broker{t: t, addr: ln.Addr().String(), srv: srv, cond: make(chan struct{})}
	err = srv.Subscribe(proto.TopicPrefix+"#", 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		id, kind, err := proto.ParseTopic(pk.TopicName)
		if err != nil || !kind.FromDevice() {
			return
		}
		m, err := proto.Decode(kind, id, pk.Payload)
		if err != nil {
			t.Errorf("device %s sent an invalid %s: %v", id, kind, err)
			return
		}
		b.mu.Lock()
		b.msgs = append(b.msgs, received{id, kind, pk.FixedHeader.Retain, m})
		close(b.cond)
		b.cond = make(chan struct{})
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *broker) url() string { return "tcp://" + b.addr }

// waitFor waits until pred holds over the received messages, or fails
// the test after timeout.
func (b *broker) waitFor(what string, timeout time.Duration, pred func([]received) bool) []received {
	b.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		msgs := append([]received(nil), b.msgs...)
		ch := b.cond
		b.mu.Unlock()
		if pred(msgs) {
			return msgs
		}
		select {
		case <-ch:
		case <-deadline.C:
			b.t.Fatalf("timed out after %v waiting for %s; got %d messages", timeout, what, len(msgs))
		}
	}
}

func of[T proto.Message](msgs []received, kind proto.Kind) []T {
	var out []T
	for _, m := range msgs {
		if m.kind == kind {
			out = append(out, m.msg.(T))
		}
	}
	return out
}

// cutter dials real connections and can cut them all without an MQTT
// DISCONNECT, as a pulled cable or a crashed process would, and refuse new
// ones while "the network is down".
type cutter struct {
	mu    sync.Mutex
	down  bool
	conns []*cutConn
	dials int
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	c.dials++
	down := c.down
	c.mu.Unlock()
	if down {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errNetDown}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cc := &cutConn{Conn: conn}
	c.mu.Lock()
	c.conns = append(c.conns, cc)
	c.mu.Unlock()
	return cc, nil
}

type netDown struct{}

func (netDown) Error() string { return "network is down (test)" }

var errNetDown = netDown{}

func (c *cutter) setDown(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	if down {
		for _, conn := range c.conns {
			conn.kill()
		}
		c.conns = nil
	}
}

func (c *cutter) cut() {
	c.setDown(true)
	c.setDown(false)
}

// cutConn makes a cut look like the network failing (connection reset)
// rather than like the process closing its own socket, which paho takes
// as its own doing and does not report as a lost connection.
type cutConn struct {
	net.Conn
	cut atomic.Bool
}

func (c *cutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && c.cut.Load() {
		err = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	return n, err
}

func (c *cutConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && c.cut.Load() {
		err = &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}
	}
	return n, err
}

func (c *cutConn) kill() {
	c.cut.Store(true)
	c.Conn.Close()
}
