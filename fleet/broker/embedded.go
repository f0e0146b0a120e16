// Package broker connects the fleet server to MQTT, in one of two ways: an
// embedded mochi-mqtt broker that hands every device publish to the server
// through a hook before it acknowledges it, or a client of an external
// broker (Mosquitto, EMQX) reading device messages through shared
// subscriptions. Either way device messages reach a Handler and the server
// publishes through Publish.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/proto"
)

// Handler receives the messages devices publish. clientID is the MQTT
// client id of the publisher, or "" when the transport does not know it.
// An error wrapping inventory.ErrRejected means the message was dropped for
// what it is; any other error is a failure of the server, and the message
// is not acknowledged so that the device sends it again.
type Handler interface {
	Handle(ctx context.Context, clientID, topic string, payload []byte) error
}

// DefaultAddr is where the embedded broker listens unless told otherwise:
// loopback, since exposing the broker is a decision for the operator.
const DefaultAddr = "127.0.0.1:1883"

// Limits of the embedded broker. mochi's defaults are unbounded or sized for
// a general-purpose broker (no packet size limit, sessions kept forever,
// 8,192 pending writes per client); these are sized for devices that send a
// hello, a status and a telemetry window every few seconds, one QoS 1
// message in flight at a time, and receive a retained desired state.
// ../shared/notes/mqtt-notes.md §2.1 has the measurements behind them.
type Limits struct {
	// MaxPacketBytes bounds every MQTT packet: the largest payload the
	// protocol decodes plus room for the topic and header. Larger packets
	// close the connection before they are buffered.
	MaxPacketBytes uint32
	// MaxClients bounds concurrent connections.
	MaxClients int64
	// MaxInflight bounds the QoS 1/2 messages the broker keeps for one
	// subscriber; devices receive a handful (desired state, commands).
	MaxInflight uint16
	// ReceiveMaximum bounds the QoS 1/2 publishes one client may have
	// unacknowledged towards the broker.
	ReceiveMaximum uint16
	// MaxWritesPending bounds each client's outbound queue; at 10k clients
	// 128 halved peak memory under overload against the default 8,192.
	MaxWritesPending int32
	// MaxSessionExpiry bounds how long a disconnected persistent session is
	// kept. Agents use clean sessions; this stops any other client from
	// making the broker keep state forever.
	MaxSessionExpiry time.Duration
	// MaxMessageExpiry bounds how long a retained or queued message lives.
	MaxMessageExpiry time.Duration
	// PublishRate and PublishBurst pace each connection's publishes
	// (messages per second, and how many may come at once): a publish
	// beyond them waits, so a flooding client is slowed down rather than
	// let through or dropped. A negative rate turns pacing off.
	PublishRate  float64
	PublishBurst int
	// ReadBufferBytes and WriteBufferBytes size each connection's buffers;
	// device messages are a few hundred bytes, and buffers are per client,
	// so they dominate memory at fleet scale.
	ReadBufferBytes  int
	WriteBufferBytes int
	// MaxConnsPerIP bounds concurrent connections from one IP address; 0
	// means no bound, the default, because gateways behind one NAT and
	// simulators on one host share an address. Set it on exposed brokers.
	MaxConnsPerIP int
	// ConnectTimeout bounds the time from accepting a connection (and TLS
	// handshake) to its CONNECT packet, so silent connections cannot pile
	// up. Default 10 s.
	ConnectTimeout time.Duration
}

// DefaultLimits returns the limits used when Options.Limits is zero.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketBytes:   proto.MaxPayloadBytes + 4<<10,
		MaxClients:       100_000,
		MaxInflight:      256,
		ReceiveMaximum:   64,
		MaxWritesPending: 128,
		MaxSessionExpiry: time.Hour,
		MaxMessageExpiry: 24 * time.Hour,
		PublishRate:      200,
		PublishBurst:     200,
		ReadBufferBytes:  2 << 10,
		WriteBufferBytes: 2 << 10,
		ConnectTimeout:   10 * time.Second,
	}
}

// withDefaults fills every zero field from DefaultLimits, so a caller can
// change one limit without unbounding the others.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxPacketBytes == 0 {
		l.MaxPacketBytes = d.MaxPacketBytes
	}
	if l.MaxClients == 0 {
		l.MaxClients = d.MaxClients
	}
	if l.MaxInflight == 0 {
		l.MaxInflight = d.MaxInflight
	}
	if l.ReceiveMaximum == 0 {
		l.ReceiveMaximum = d.ReceiveMaximum
	}
	if l.MaxWritesPending == 0 {
		l.MaxWritesPending = d.MaxWritesPending
	}
	if l.MaxSessionExpiry == 0 {
		l.MaxSessionExpiry = d.MaxSessionExpiry
	}
	if l.MaxMessageExpiry == 0 {
		l.MaxMessageExpiry = d.MaxMessageExpiry
	}
	if l.PublishRate == 0 {
		l.PublishRate = d.PublishRate
	}
	if l.PublishBurst == 0 {
		l.PublishBurst = d.PublishBurst
	}
	if l.ReadBufferBytes == 0 {
		l.ReadBufferBytes = d.ReadBufferBytes
	}
	if l.WriteBufferBytes == 0 {
		l.WriteBufferBytes = d.WriteBufferBytes
	}
	if l.ConnectTimeout == 0 {
		l.ConnectTimeout = d.ConnectTimeout
	}
	return l
}

// EmbeddedOptions configure an embedded broker.
type EmbeddedOptions struct {
	// Addr is the TCP address to listen on; DefaultAddr when empty.
	// "127.0.0.1:0" picks a free port (see Addr).
	Addr string
	// Handler receives device messages. Required.
	Handler Handler
	// Limits; each zero field takes its value from DefaultLimits().
	Limits Limits
	// HandleTimeout bounds the handling of one device message, so a stuck
	// store cannot hold a device's connection forever. Default 10 s.
	HandleTimeout time.Duration
	// Logger receives broker logs (mochi's too); nil discards them.
	Logger *slog.Logger
	// Auth, when set, admits only devices whose credentials it accepts
	// and confines each to its own topics; nil lets any client connect and
	// use any topic (--mqtt-auth=off).
	Auth Authenticator
	// TLS, when set, makes the listener accept only TLS connections.
	TLS *tls.Config
}

// Embedded is an in-process mochi-mqtt broker.
type Embedded struct {
	srv    *mqtt.Server
	hook   *ingestHook
	conn   *connectHook
	auth   *authHook
	tls    bool
	ln     *tcpListener
	log    *slog.Logger
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	closed  bool
}

// NewEmbedded creates the broker and binds its listener, so Addr is known
// before Start.
func NewEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.Handler == nil {
		return nil, errors.New("embedded broker: no handler for device messages")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	opts.Limits = opts.Limits.withDefaults()
	if opts.HandleTimeout <= 0 {
		opts.HandleTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := opts.Limits
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = l.MaxPacketBytes
	caps.MaximumClients = l.MaxClients
	caps.MaximumInflight = l.MaxInflight
	caps.ReceiveMaximum = l.ReceiveMaximum
	caps.MaximumClientWritesPending = l.MaxWritesPending
	caps.MaximumSessionExpiryInterval = uint32(l.MaxSessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(l.MaxMessageExpiry / time.Second)

	srv := mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  l.ReadBufferBytes,
		ClientNetWriteBufferSize: l.WriteBufferBytes,
		SysTopicResendInterval:   30,
		InlineClient:             true,
		Logger:                   log.With("broker", "mochi"),
	})
	ctx, cancel := context.WithCancel(context.Background())
	hook := &ingestHook{ctx: ctx, handler: opts.Handler, timeout: opts.HandleTimeout, log: log,
		rate: l.PublishRate, burst: l.PublishBurst, buckets: map[*mqtt.Client]*tokenBucket{}}
	// The ingest hook refuses publishes under another device's id; the
	// connect hook refuses wills that would do the same.
	conn := &connectHook{log: log}
	var admit mqtt.Hook = conn
	var auth *authHook
	if opts.Auth != nil {
		auth = &authHook{ctx: ctx, auth: opts.Auth, timeout: opts.HandleTimeout, log: log}
		admit = auth
	}
	if err := srv.AddHook(admit, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.AddHook(hook, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", opts.Addr, err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	tl := &tcpListener{ln: ln, maxPerIP: l.MaxConnsPerIP, connectTimeout: l.ConnectTimeout, perIP: map[string]int{}}
	if err := srv.AddListener(tl); err != nil {
		ln.Close()
		cancel()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Embedded{srv: srv, hook: hook, conn: conn, auth: auth, tls: opts.TLS != nil, ln: tl, log: log, cancel: cancel}, nil
}

// Addr is the address the broker listens on, e.g. "127.0.0.1:41883".
func (e *Embedded) Addr() string { return e.ln.Address() }

// URL is the broker's address as a client URL, e.g. "tcp://127.0.0.1:1883",
// or "tls://..." with TLS.
func (e *Embedded) URL() string {
	if e.tls {
		return "tls://" + e.Addr()
	}
	return "tcp://" + e.Addr()
}

// Start begins accepting connections. ctx is unused: the broker runs until
// Close.
func (e *Embedded) Start(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("embedded broker: %w: closed", ErrNotReady)
	}
	if e.started {
		return nil
	}
	if err := e.srv.Serve(); err != nil {
		return fmt.Errorf("embedded broker: serve: %w", err)
	}
	e.started = true
	e.log.Info("mqtt broker listening", "addr", e.Addr())
	return nil
}

// Ready returns nil while the broker is serving.
func (e *Embedded) Ready() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started || e.closed {
		return ErrNotReady
	}
	return nil
}

// Publish sends a message to subscribers through mochi's inline client,
// at QoS 1.
func (e *Embedded) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := e.Ready(); err != nil {
		return err
	}
	if err := e.srv.Publish(topic, payload, retain, 1); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrPublish, topic, err)
	}
	return nil
}

// Stats returns the broker's counters: connections, messages, and the two
// ways mochi drops messages to a slow subscriber (a full write queue, a
// full inflight store), which operators should watch.
func (e *Embedded) Stats() map[string]int64 {
	info := e.srv.Info
	refused := e.conn.refused.Load()
	var denied int64
	if e.auth != nil {
		refused += e.auth.refused.Load()
		denied = e.auth.denied.Load()
	}
	return map[string]int64{
		"clients_connected": atomic.LoadInt64(&info.ClientsConnected),
		"messages_received": atomic.LoadInt64(&info.MessagesReceived),
		"messages_sent":     atomic.LoadInt64(&info.MessagesSent),
		"messages_dropped":  atomic.LoadInt64(&info.MessagesDropped),
		"inflight_dropped":  atomic.LoadInt64(&info.InflightDropped),
		"retained":          atomic.LoadInt64(&info.Retained),
		"subscriptions":     atomic.LoadInt64(&info.Subscriptions),
		"publishes_paced":   e.hook.throttled.Load(),
		"connects_refused":  refused,
		"topics_denied":     denied,
		"conns_over_ip_cap": e.ln.overCap.Load(),
	}
}

// Close disconnects every client (which sends their last wills through the
// hook, so call it before closing what the handler writes to) and stops
// the listener.
func (e *Embedded) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()
	var err error
	if started {
		err = e.srv.Close()
		e.ln.wait()
	} else {
		err = e.ln.ln.Close()
	}
	e.cancel()
	return err
}

// connectHook admits clients. Until issue 8 brings device credentials and
// per-device ACLs, every client may connect and use every topic, with one
// exception: a last will under another device's topics is refused at
// CONNECT, since mochi would publish (and retain) it on disconnect before
// any hook could drop it.
type connectHook struct {
	mqtt.HookBase
	log     *slog.Logger
	refused atomic.Int64
}

func (h *connectHook) ID() string { return "edgefleet-connect" }

func (h *connectHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *connectHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if !pk.Connect.WillFlag {
		return true
	}
	id, _, err := proto.ParseTopic(pk.Connect.WillTopic)
	if err != nil || id == cl.ID {
		return true // not a device topic, or the client's own
	}
	h.refused.Add(1)
	h.log.Warn("refused connection: its last will is on another device's topic", "client_id", cl.ID, "will_topic", pk.Connect.WillTopic)
	return false
}

func (h *connectHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// ingestHook hands device publishes to the handler before mochi writes the
// PUBACK (mochi's processPublish runs OnPublish first), so a device's QoS 1
// acknowledgement means the message was applied to the store. Reading
// through a hook rather than a subscription also avoids the silent
// drops a slow subscriber suffers (mqtt-notes §0.3).
type ingestHook struct {
	mqtt.HookBase
	ctx     context.Context
	handler Handler
	timeout time.Duration
	log     *slog.Logger

	rate      float64
	burst     int
	mu        sync.Mutex
	buckets   map[*mqtt.Client]*tokenBucket // one per live connection
	throttled atomic.Int64
}

func (h *ingestHook) ID() string { return "edgefleet-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnWillSent || b == mqtt.OnDisconnect
}

func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.buckets, cl)
	h.mu.Unlock()
}

// pace waits until the connection may publish again. It runs in the
// connection's own goroutine, so only that client waits.
func (h *ingestHook) pace(cl *mqtt.Client) error {
	if h.rate <= 0 {
		return nil
	}
	h.mu.Lock()
	b := h.buckets[cl]
	if b == nil {
		b = &tokenBucket{}
		h.buckets[cl] = b
	}
	h.mu.Unlock()
	wait := b.reserve(time.Now(), h.rate, max(h.burst, 1))
	if wait <= 0 {
		return nil
	}
	h.throttled.Add(1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-h.ctx.Done():
		return h.ctx.Err()
	}
}

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the server's own publishes
	}
	if err := h.pace(cl); err != nil {
		return pk, packets.ErrRejectPacket // shutting down
	}
	err := h.handle(cl.ID, pk.TopicName, pk.Payload)
	switch {
	case err == nil:
		return pk, nil
	case errors.Is(err, inventory.ErrRejected):
		// Acknowledge but neither deliver nor retain: resending cannot fix
		// the message, and the device must not be stuck resending it.
		return pk, packets.CodeSuccessIgnore
	default:
		h.log.Error("device message not applied; not acknowledging it so the device resends", "client_id", cl.ID, "topic", pk.TopicName, "error", err)
		return pk, packets.ErrRejectPacket
	}
}

// OnWillSent sees the last will after mochi published it; wills do not pass
// through OnPublish.
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if err := h.handle(cl.ID, pk.TopicName, pk.Payload); err != nil && !errors.Is(err, inventory.ErrRejected) {
		h.log.Error("last will not applied", "client_id", cl.ID, "topic", pk.TopicName, "error", err)
	}
}

func (h *ingestHook) handle(clientID, topic string, payload []byte) error {
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	return h.handler.Handle(ctx, clientID, topic, payload)
}

// Compile-time checks that the hooks are mochi hooks.
var (
	_ mqtt.Hook = (*connectHook)(nil)
	_ mqtt.Hook = (*ingestHook)(nil)
)
