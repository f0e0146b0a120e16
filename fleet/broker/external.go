package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/proto"
)

// DefaultGroup is the shared-subscription group name to use when several
// fleet servers should split the device stream (ExternalOptions.Group).
const DefaultGroup = "edgefleet"

// ExternalOptions configure the connection to an external broker.
type ExternalOptions struct {
	// URL of the broker, e.g. "tcp://127.0.0.1:1883". Required.
	URL string
	// ClientID of the server. It names the server's persistent session,
	// so it must be stable across restarts of this server and unique among
	// the servers sharing the broker. A random one (a session that cannot
	// be resumed) is made when empty. Use one containing ':', which device
	// ids cannot, so it never takes over a device's session.
	ClientID string
	// Group, when set, subscribes to the device→fleet kinds through the
	// shared subscription $share/{Group}/..., so that several servers split
	// the stream. When empty the subscriptions are plain ones.
	//
	// Plain is the safer choice for a single server: Mosquitto 2.0.11 keeps
	// plain subscriptions of a persistent session in its persistence file
	// but not shared ones (seen in fleettest: after a broker restart the
	// session came back with its plain subscriptions only), so messages
	// devices publish between a broker restart and the server's
	// resubscription are queued for a plain subscriber and lost for a
	// shared one. Status is always subscribed plainly: retained messages
	// are not delivered to shared subscriptions.
	Group string
	// Username and Password authenticate the server to a broker that
	// requires it (deploy/mosquitto: the password file's server line).
	Username, Password string
	// TLS verifies an ssl:// or tls:// broker; nil means the system roots.
	TLS *tls.Config
	// Handler receives device messages. Required.
	Handler Handler
	// Workers is how many goroutines apply device messages; each device's
	// messages always go to the same one, so they are applied in order.
	// Default 4.
	Workers int
	// QueueLen bounds the messages waiting for each worker. A full queue
	// drops (and counts) the message rather than block paho's router,
	// which would stall keepalives and drop the connection. Default 1024.
	QueueLen int
	// HandleTimeout bounds the handling of one message. Default 10 s.
	HandleTimeout time.Duration
	// MaxReconnectInterval caps paho's exponential reconnect backoff.
	// Default 10 s.
	MaxReconnectInterval time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// External reads device messages from an external MQTT broker and
// publishes through it.
type External struct {
	opts   ExternalOptions
	client paho.Client
	log    *slog.Logger
	seed   maphash.Seed
	queues []chan paho.Message
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	stop   chan struct{} // closed by Close: workers finish what is queued and return

	connected atomic.Bool
	dropped   atomic.Uint64

	mu      sync.Mutex
	started bool
	closed  bool
}

// NewExternal checks the options and prepares the client; Start connects.
func NewExternal(opts ExternalOptions) (*External, error) {
	if opts.Handler == nil {
		return nil, errors.New("external broker: no handler for device messages")
	}
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w; want one like tcp://127.0.0.1:1883", ErrBadURL, opts.URL, err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss":
	default:
		return nil, fmt.Errorf("%w %q: scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss, like tcp://127.0.0.1:1883", ErrBadURL, opts.URL)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%w %q: want host and port, like tcp://127.0.0.1:1883", ErrBadURL, opts.URL)
	}
	// Only a stable id can resume its session; a made-up one gets a clean
	// session, so it leaves no orphan queue behind in the broker.
	persistent := opts.ClientID != ""
	if opts.ClientID == "" {
		b := make([]byte, 6)
		rand.Read(b)
		opts.ClientID = "edgefleet-server:" + hex.EncodeToString(b)
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 1024
	}
	if opts.HandleTimeout <= 0 {
		opts.HandleTimeout = 10 * time.Second
	}
	if opts.MaxReconnectInterval <= 0 {
		opts.MaxReconnectInterval = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &External{opts: opts, log: log, seed: maphash.MakeSeed()}
	x.ctx, x.cancel = context.WithCancel(context.Background())
	x.stop = make(chan struct{})

	co := paho.NewClientOptions().
		AddBroker(opts.URL).
		SetClientID(opts.ClientID).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetTLSConfig(opts.TLS).
		SetProtocolVersion(4). // MQTT 3.1.1; paho.mqtt.golang speaks nothing newer
		// A persistent session: while the server is away (restarting, or
		// reconnecting after the broker restarted from its persistence file)
		// the broker queues device messages for its subscriptions instead of
		// dropping them, bounded by the broker's max_queued_messages.
		SetCleanSession(!persistent).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		// Retry quickly: devices reconnecting to a restarted broker
		// publish whether or not the server is back.
		SetConnectRetryInterval(250 * time.Millisecond).
		SetMaxReconnectInterval(opts.MaxReconnectInterval).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetOrderMatters(true).
		// Acknowledge after the worker applied the message, not when paho
		// hands it over, so a PUBACK means the message reached the store.
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(x.route).
		SetOnConnectHandler(x.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			x.connected.Store(false)
			x.log.Warn("lost connection to mqtt broker; reconnecting", "url", opts.URL, "error", err)
		})
	x.client = paho.NewClient(co)
	return x, nil
}

// URL is the broker URL.
func (x *External) URL() string { return x.opts.URL }

// Dropped is how many device messages were dropped because a worker's
// queue was full.
func (x *External) Dropped() uint64 { return x.dropped.Load() }

// Stats returns the client's counters.
func (x *External) Stats() map[string]int64 {
	connected := int64(0)
	if x.Ready() == nil {
		connected = 1
	}
	return map[string]int64{"connected": connected, "ingest_queue_dropped": int64(x.dropped.Load())}
}

// Start starts the workers and begins connecting; it does not wait for the
// broker, which may come up later (Ready says when it is connected).
func (x *External) Start(context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("external broker: %w: closed", ErrNotReady)
	}
	if x.started {
		return nil
	}
	x.started = true
	x.queues = make([]chan paho.Message, x.opts.Workers)
	for i := range x.queues {
		q := make(chan paho.Message, x.opts.QueueLen)
		x.queues[i] = q
		x.wg.Go(func() { x.work(q) })
	}
	x.client.Connect() // with ConnectRetry, paho keeps trying in the background
	x.log.Info("connecting to mqtt broker", "url", x.opts.URL, "client_id", x.opts.ClientID)
	return nil
}

func (x *External) subscriptions() map[string]byte {
	subs := map[string]byte{
		// Status is not shared: retained messages are not delivered to
		// shared subscriptions, and each server needs every device's
		// retained presence when it connects. Applying one twice is harmless.
		proto.Subscription(proto.KindStatus): 1,
	}
	for _, k := range []proto.Kind{proto.KindHello, proto.KindTelemetry, proto.KindJobs, proto.KindAck} {
		if x.opts.Group != "" {
			subs[proto.SharedSubscription(x.opts.Group, k)] = 1
		} else {
			subs[proto.Subscription(k)] = 1
		}
	}
	return subs
}

// onConnect subscribes on every connect: the session may be new (first
// start, or a broker that lost its state), and subscribing again to an
// existing subscription is harmless.
func (x *External) onConnect(c paho.Client) {
	tok := c.SubscribeMultiple(x.subscriptions(), nil)
	if !tok.WaitTimeout(10 * time.Second) {
		x.log.Error("subscribing to device topics timed out; reconnecting", "url", x.opts.URL)
		return
	}
	if err := tok.Error(); err != nil {
		x.log.Error("subscribing to device topics failed", "url", x.opts.URL, "error", err)
		return
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				x.log.Error("broker refused subscription", "topic", topic)
				return
			}
		}
	}
	x.connected.Store(true)
	x.log.Info("connected to mqtt broker", "url", x.opts.URL)
}

// route runs in paho's router goroutine and must not block: it hands the
// message to the worker that owns its device.
func (x *External) route(_ paho.Client, m paho.Message) {
	key := m.Topic()
	if id, _, err := proto.ParseTopic(key); err == nil {
		key = id
	}
	q := x.queues[maphash.String(x.seed, key)%uint64(len(x.queues))]
	select {
	case q <- m:
	default:
		x.dropped.Add(1)
		x.log.Warn("ingest queue full; dropped device message", "topic", m.Topic())
		m.Ack()
	}
}

// work applies the messages of its queue until Close, then what is left
// in it. The queue is never closed: paho may still be inside route while
// Close runs, and a send on a closed channel would panic.
func (x *External) work(q chan paho.Message) {
	for {
		select {
		case m := <-q:
			x.apply(m)
		case <-x.stop:
			for {
				select {
				case m := <-q:
					x.apply(m)
				default:
					return
				}
			}
		}
	}
}

func (x *External) apply(m paho.Message) {
	ctx, cancel := context.WithTimeout(x.ctx, x.opts.HandleTimeout)
	err := x.opts.Handler.Handle(ctx, "", m.Topic(), m.Payload())
	cancel()
	if err != nil && !errors.Is(err, inventory.ErrRejected) {
		x.log.Error("device message not applied", "topic", m.Topic(), "error", err)
	}
	// Acknowledge even on failure: with a clean session the broker would
	// not redeliver anyway, and an unacknowledged message holds one of the
	// broker's inflight slots for this connection forever.
	m.Ack()
}

// Ready returns nil while connected and subscribed.
func (x *External) Ready() error {
	if !x.connected.Load() || !x.client.IsConnectionOpen() {
		return fmt.Errorf("%w: not connected to %s", ErrNotReady, x.opts.URL)
	}
	return nil
}

// Publish sends a message at QoS 1 and waits for the broker's PUBACK, at
// most until ctx is done (or 10 s without a deadline).
func (x *External) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	if err := x.Ready(); err != nil {
		return err
	}
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	tok := x.client.Publish(topic, 1, retain, payload)
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return fmt.Errorf("%w: %s: %w", ErrPublish, topic, ctx.Err())
	case <-time.After(wait):
		return fmt.Errorf("%w: %s: no PUBACK within %s", ErrPublish, topic, wait)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrPublish, topic, err)
	}
	return nil
}

// Close disconnects from the broker and waits for the workers to apply
// what they already received.
func (x *External) Close() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	started := x.started
	x.mu.Unlock()
	if !started {
		x.cancel()
		return nil
	}
	x.connected.Store(false)
	x.client.Disconnect(250)
	close(x.stop)
	x.wg.Wait()
	x.cancel()
	return nil
}
