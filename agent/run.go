package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
)

// Run connects to the fleet and keeps the device reporting until ctx is
// done: it produces a telemetry window every interval (connected or not)
// and, while connected, delivers queued windows in order. On cancellation
// it publishes an OFFLINE status, disconnects cleanly and returns nil once
// everything it started has stopped. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.telemetryLoop(ctx)
	}()
	if a.upd != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runUpdater(ctx)
		}()
	}
	if a.api != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runAPI(ctx)
		}()
	}
	err := a.connectLoop(ctx)
	cancel()
	wg.Wait()
	return err
}

// telemetryLoop closes a window every interval, on a grid anchored at the
// start so windows do not drift, and queues it.
func (a *Agent) telemetryLoop(ctx context.Context) {
	start := a.clock.Now()
	next := start.Add(a.cfg.TelemetryInterval)
	for {
		t := a.clock.NewTimer(next.Sub(a.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		end := a.clock.Now()
		if err := a.produceWindow(ctx, start, end); err != nil && ctx.Err() == nil {
			a.log.Error("telemetry window lost", "err", err)
		}
		start = end
		next = next.Add(a.cfg.TelemetryInterval)
		if now := a.clock.Now(); next.Before(now) {
			// Asleep or suspended for more than a window: skip the missed
			// grid points instead of producing a burst of empty windows.
			next = now.Add(a.cfg.TelemetryInterval)
		}
	}
}

func (a *Agent) produceWindow(ctx context.Context, start, end time.Time) error {
	seq, err := a.store.NextTelemetrySeq(ctx)
	if err != nil {
		return err
	}
	qs, err := a.queue.Stats(ctx)
	if err != nil {
		return err
	}
	w := telemetry.BuildWindow(a.id, seq, start, end, a.rec, a.sampler, qs.Dropped)
	payload, err := proto.Encode(w)
	if err != nil {
		return err
	}
	return a.queue.Push(ctx, seq, payload)
}

var (
	// errConnLost ends a connection that broke; Run reconnects after it.
	errConnLost = errors.New("connection to broker lost")
	// errTimeout is returned by wait when the broker did not answer in time.
	errTimeout = errors.New("no answer from the broker in time")
)

// maxPubackTimeouts is how many PUBACK timeouts in a row end a connection.
const maxPubackTimeouts = 3

// connectLoop runs one connection after the other, with exponential
// backoff and jitter between failed attempts. It uses a new paho client
// per connection, not paho's auto-reconnect: every connection registers a
// last will with its own session number, and paho fixes the will when the
// client is built. A fresh client also starts with no stale in-flight
// publishes that paho could resend out of order.
func (a *Agent) connectLoop(ctx context.Context) error {
	failures := 0
	for {
		connected, err := a.connection(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			failures = 0
		}
		failures++
		delay := a.backoff(failures)
		a.log.Info("broker connection ended; reconnecting", "err", err, "in", delay.Round(time.Millisecond), "attempt", failures)
		t := a.clock.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// backoff returns the wait before attempt n (1-based): min·2^(n-1) capped at
// max, with "equal jitter" (half fixed, half random) so a fleet that lost
// its broker does not come back in lockstep.
func (a *Agent) backoff(n int) time.Duration {
	d := a.cfg.ReconnectMin
	for i := 1; i < n && d < a.cfg.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, a.cfg.ReconnectMax)
	return d/2 + rand.N(d/2+1)
}

// connection runs one MQTT connection until it breaks or ctx is done. It
// reports whether the connection was established.
func (a *Agent) connection(ctx context.Context) (bool, error) {
	session, err := a.store.NextSession(ctx)
	if err != nil {
		return false, fmt.Errorf("session counter: %w", err)
	}
	statusTopic := proto.Topic(a.id, proto.KindStatus)
	will, err := proto.Encode(&proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.id, State: proto.Status_STATE_OFFLINE, Session: session})
	if err != nil {
		return false, err
	}
	lost := make(chan error, 1)
	inbox := make(chan mqtt.Message, 16)
	opts := mqtt.NewClientOptions().
		AddBroker(a.brokerURL.String()).
		SetClientID(a.id).
		SetUsername(a.cfg.Username).
		SetPassword(a.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1, no fallback to 3.1
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// Handlers only hand messages to the inbox without blocking, so
		// in-order delivery costs nothing and keeps commands in order.
		SetOrderMatters(true).
		SetKeepAlive(a.cfg.KeepAlive).
		SetPingTimeout(min(a.cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(a.cfg.ConnectTimeout).
		SetWriteTimeout(a.cfg.PublishTimeout).
		SetBinaryWill(statusTopic, will, 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		}).
		// Messages without a subscription handler must still be
		// acknowledged, or the broker stops sending (paho README).
		SetDefaultPublishHandler(func(mqtt.Client, mqtt.Message) {})
	dial := a.cfg.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: a.cfg.ConnectTimeout}
		dial = d.DialContext
	}
	opts.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
		defer cancel()
		conn, err := dial(dctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		return a.secure(dctx, conn)
	})
	client := mqtt.NewClient(opts)
	if err := a.wait(ctx, client.Connect(), a.cfg.ConnectTimeout); err != nil {
		client.Disconnect(0)
		return false, fmt.Errorf("connect to %s: %w%s", a.brokerURL.Host, err, refusedHint(err))
	}
	a.session.Store(session)
	a.connected.Store(true)
	a.connects.Add(1)
	defer a.connected.Store(false)
	log := a.log.With("session", session)
	log.Info("connected to broker", "broker", a.brokerURL.Host)

	err = a.serve(ctx, client, session, lost, inbox, log)
	if ctx.Err() != nil {
		// Leaving on purpose: say so, since a clean DISCONNECT suppresses
		// the will.
		off := proto.MustEncode(&proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.id, State: proto.Status_STATE_OFFLINE, Session: session, SentUnixMs: a.clock.Now().UnixMilli()})
		tok := client.Publish(statusTopic, 1, true, off)
		tok.WaitTimeout(min(a.cfg.PublishTimeout, 2*time.Second))
		client.Disconnect(250)
		log.Info("disconnected from broker")
		return true, nil
	}
	client.Disconnect(0)
	a.drainDesired(ctx, client, session, inbox)
	return true, err
}

// drainDesired hands over the desired states a connection received, and
// so acknowledged, but did not get to before it broke (serve was waiting
// for a PUBACK the server, shutting down, never sent). The broker will not
// send them again, and a restarted broker may have lost its retained copy:
// dropped here, the device would never apply them.
func (a *Agent) drainDesired(ctx context.Context, client mqtt.Client, session uint64, inbox chan mqtt.Message) {
	for {
		select {
		case m := <-inbox:
			if _, kind, err := proto.ParseTopic(m.Topic()); err == nil && kind == proto.KindDesired {
				a.handle(ctx, client, session, m)
			}
		default:
			return
		}
	}
}

// serve does what a device does on every connect, then delivers telemetry
// until the connection breaks or ctx is done.
func (a *Agent) serve(ctx context.Context, client mqtt.Client, session uint64, lost <-chan error, inbox chan mqtt.Message, log *slog.Logger) error {
	handler := func(_ mqtt.Client, m mqtt.Message) {
		// paho's router must never block: a full inbox drops the message
		// (desired state is retained and comes back on reconnect;
		// commands are retried by their sender).
		select {
		case inbox <- m:
		default:
			log.Warn("inbox full; dropped message", "topic", m.Topic())
		}
	}
	subs := map[string]byte{proto.Topic(a.id, proto.KindDesired): 1, proto.Topic(a.id, proto.KindCommand): 1}
	if err := a.wait(ctx, client.SubscribeMultiple(subs, handler), a.cfg.PublishTimeout); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	online := &proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.id, State: proto.Status_STATE_ONLINE, Session: session, SentUnixMs: a.clock.Now().UnixMilli()}
	if err := a.publish(ctx, client, proto.KindStatus, true, online); err != nil {
		return err
	}
	if err := a.sendHello(ctx, client, session); err != nil {
		return err
	}
	if a.upd != nil {
		a.upd.Resend(ctx)
	}
	timeouts := 0
	for {
		select {
		case m := <-inbox:
			a.handle(ctx, client, session, m)
			continue
		case p := <-a.jobs:
			a.publishJob(ctx, client, session, p, log)
			continue
		case err := <-lost:
			return fmt.Errorf("%w: %v", errConnLost, err)
		default:
		}
		seq, payload, ok, err := a.queue.Peek(ctx)
		if err != nil {
			return err
		}
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case err := <-lost:
				return fmt.Errorf("%w: %v", errConnLost, err)
			case m := <-inbox:
				a.handle(ctx, client, session, m)
			case p := <-a.jobs:
				a.publishJob(ctx, client, session, p, log)
			case <-a.queue.Ready():
			}
			continue
		}
		tok := client.Publish(proto.Topic(a.id, proto.KindTelemetry), 1, false, payload)
		if err := a.wait(ctx, tok, a.cfg.PublishTimeout); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			timeouts++
			if !errors.Is(err, errTimeout) || timeouts >= maxPubackTimeouts || !client.IsConnectionOpen() {
				// A failed write, or a broker that stopped answering:
				// start over on a new connection, which resends the
				// window. A duplicate is harmless (the server ingests a
				// seq once); losing it is not.
				return fmt.Errorf("%w: publishing window %d: %v", errConnLost, seq, err)
			}
			log.Warn("no PUBACK for telemetry window in time; resending", "seq", seq)
			continue
		}
		timeouts = 0
		if err := a.queue.Remove(ctx, seq); err != nil {
			return err
		}
		a.sent.Add(1)
	}
}

func (a *Agent) publish(ctx context.Context, client mqtt.Client, k proto.Kind, retained bool, m proto.Message) error {
	b, err := proto.Encode(m)
	if err != nil {
		return err
	}
	if err := a.wait(ctx, client.Publish(proto.Topic(a.id, k), 1, retained, b), a.cfg.PublishTimeout); err != nil {
		return fmt.Errorf("publish %s: %w", k, err)
	}
	return nil
}

// Hello builds the hello message for a session.
func (a *Agent) Hello(ctx context.Context, session uint64) (*proto.Hello, error) {
	installed, err := a.store.Models(ctx)
	if err != nil {
		return nil, err
	}
	qs, err := a.queue.Stats(ctx)
	if err != nil {
		return nil, err
	}
	h := &proto.Hello{
		ProtocolVersion:         proto.ProtocolVersion,
		DeviceId:                a.id,
		AgentVersion:            a.cfg.AgentVersion,
		Hardware:                a.facts.Proto(),
		FirmwareProfile:         a.profile.Name,
		Backends:                a.hello,
		Labels:                  a.cfg.Labels,
		Session:                 session,
		SentUnixMs:              a.clock.Now().UnixMilli(),
		TelemetryWindowsDropped: qs.Dropped,
	}
	for _, m := range installed {
		h.Models = append(h.Models, installedProto(m))
	}
	return h, nil
}

func installedProto(m state.Model) *proto.InstalledModel {
	return &proto.InstalledModel{
		Name: m.Name, Version: m.Version, Format: m.Format, Backend: m.Backend,
		Sha256: m.SHA256, SizeBytes: m.SizeBytes, Active: m.Active, Slot: m.Slot,
	}
}

func (a *Agent) sendHello(ctx context.Context, client mqtt.Client, session uint64) error {
	h, err := a.Hello(ctx, session)
	if err != nil {
		return err
	}
	return a.publish(ctx, client, proto.KindHello, false, h)
}

// handle acts on a message from the fleet. Desired state is checked and
// handed to Config.OnDesired, where the update engine takes it over.
func (a *Agent) handle(ctx context.Context, client mqtt.Client, session uint64, m mqtt.Message) {
	_, kind, err := proto.ParseTopic(m.Topic())
	if err != nil {
		a.log.Warn("message on an unexpected topic", "topic", m.Topic(), "err", err)
		return
	}
	switch kind {
	case proto.KindDesired:
		d, err := proto.DecodeDesired(a.id, m.Payload())
		if err != nil {
			a.log.Warn("bad desired deployment; ignored", "err", err)
			return
		}
		a.log.Info("desired deployment received", "generation", d.GetGeneration(), "models", len(d.GetModels()))
		if a.upd != nil {
			a.upd.Desired(d)
		}
		if a.cfg.OnDesired != nil {
			a.cfg.OnDesired(ctx, d)
		}
	case proto.KindCommand:
		c, err := proto.DecodeCommand(a.id, m.Payload())
		if err != nil {
			a.log.Warn("bad command; ignored", "err", err)
			return
		}
		if exp := c.GetExpiresUnixMs(); exp != 0 && a.clock.Now().UnixMilli() > exp {
			a.log.Info("expired command ignored", "command", c.GetName(), "request_id", c.GetRequestId())
			return
		}
		ack := &proto.Ack{ProtocolVersion: proto.ProtocolVersion, DeviceId: a.id, RequestId: c.GetRequestId(), Ok: true}
		switch c.GetName() {
		case "ping":
		case "resend-hello":
			if err := a.sendHello(ctx, client, session); err != nil {
				ack.Ok, ack.Error = false, err.Error()
			}
		default:
			ack.Ok, ack.Error = false, fmt.Sprintf("unknown command %q", truncate(c.GetName(), 64))
		}
		if err := a.publish(ctx, client, proto.KindAck, false, ack); err != nil {
			a.log.Warn("ack not delivered", "request_id", c.GetRequestId(), "err", err)
		}
	}
}

// wait waits for a paho token within timeout and ctx; paho's Wait can hang
// forever (paho.mqtt.golang#613).
func (a *Agent) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("%w (%v)", errTimeout, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishJob sends one job progress message. A lost one is not resent:
// the terminal state of every job goes out again on each connect. After a
// terminal state the hello goes out again too, so the fleet's inventory
// shows what the device now runs without waiting for a reconnect.
func (a *Agent) publishJob(ctx context.Context, client mqtt.Client, session uint64, p *proto.JobProgress, log *slog.Logger) {
	if err := a.publish(ctx, client, proto.KindJobs, false, p); err != nil {
		log.Warn("job progress not delivered", "job", p.GetJobId(), "step", p.GetStep(), "err", err)
		return
	}
	if a.helloDue.CompareAndSwap(true, false) {
		if err := a.sendHello(ctx, client, session); err != nil {
			log.Warn("hello after an update not delivered", "err", err)
		}
	}
}
