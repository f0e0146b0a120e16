package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/fleet/tlsca"
	"github.com/edgefleet/edgefleet/proto"
)

// newAuthEmbedded starts a broker with auth on, backed by a real
// enrolment store in the same bbolt file as the inventory.
func newAuthEmbedded(t testing.TB, limits broker.Limits) (*broker.Embedded, *enroll.Enroll, *inventory.Inventory) {
	t.Helper()
	st := storetest.Open(t, store.Options{})
	inv, err := inventory.New(context.Background(), st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	en, err := enroll.Open(enroll.Options{DB: st.DB()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: inv, Limits: limits, Auth: en})
	if err != nil {
		t.Fatal(err)
	}
	en.OnCutOff(func(id string) { b.Disconnect(id) })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return b, en, inv
}

func creds(user, pass string) func(*paho.ClientOptions) {
	return func(o *paho.ClientOptions) { o.SetUsername(user).SetPassword(pass) }
}

func tryConnect(url, id string, opts ...func(*paho.ClientOptions)) error {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return errors.New("connect timed out")
	}
	if tok.Error() == nil {
		c.Disconnect(0)
	}
	return tok.Error()
}

func TestAuthRefusesWhoIsNotEnrolled(t *testing.T) {
	b, en, _ := newAuthEmbedded(t, broker.Limits{})
	a, err := en.Preauthorize(context.Background(), "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		id   string
		opts []func(*paho.ClientOptions)
	}{
		{"anonymous", "gw-a", nil},
		{"wrong secret", "gw-a", []func(*paho.ClientOptions){creds("gw-a", "wrong")}},
		{"someone else's credentials", "gw-b", []func(*paho.ClientOptions){creds("gw-a", string(a.Secret))}},
		{"not enrolled", "gw-b", []func(*paho.ClientOptions){creds("gw-b", string(a.Secret))}},
		{"will under another device", "gw-a", []func(*paho.ClientOptions){creds("gw-a", string(a.Secret)), func(o *paho.ClientOptions) {
			o.SetBinaryWill(proto.Topic("gw-b", proto.KindStatus), []byte("x"), 1, true)
		}}},
	} {
		if err := tryConnect(b.URL(), tt.id, tt.opts...); err == nil {
			t.Errorf("%s: connected, want refused", tt.name)
		}
	}
	if err := tryConnect(b.URL(), "gw-a", creds("gw-a", string(a.Secret))); err != nil {
		t.Fatalf("own credentials refused: %v", err)
	}
	if got := b.Stats()["connects_refused"]; got != 5 {
		t.Errorf("connects_refused = %d, want 5", got)
	}
}

func TestAuthConfinesDevicesToTheirTopics(t *testing.T) {
	ctx := context.Background()
	b, en, inv := newAuthEmbedded(t, broker.Limits{})
	ca, err := en.Preauthorize(ctx, "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := en.Preauthorize(ctx, "gw-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	a := connect(t, b.URL(), "gw-a", creds("gw-a", string(ca.Secret)))
	bc := connect(t, b.URL(), "gw-b", creds("gw-b", string(cb.Secret)))

	// Subscriptions: only one's own desired and cmd topics are granted.
	gotA := make(chan string, 16)
	tok := a.SubscribeMultiple(map[string]byte{
		"#": 1, "$SYS/#": 1, proto.Topic("gw-b", proto.KindDesired): 1, proto.Subscription(proto.KindDesired): 1,
		proto.Topic("gw-a", proto.KindTelemetry): 1, proto.Topic("gw-a", proto.KindDesired): 1, proto.Topic("gw-a", proto.KindCommand): 1,
	}, func(_ paho.Client, m paho.Message) { gotA <- m.Topic() })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	for filter, code := range tok.(*paho.SubscribeToken).Result() {
		own := filter == proto.Topic("gw-a", proto.KindDesired) || filter == proto.Topic("gw-a", proto.KindCommand)
		if own != (code != 0x80) {
			t.Errorf("subscription %q: SUBACK code %#x", filter, code)
		}
	}
	gotB := make(chan string, 1)
	if tok := bc.Subscribe(proto.Topic("gw-b", proto.KindDesired), 1, func(_ paho.Client, m paho.Message) { gotB <- m.Topic() }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe b: %v", tok.Error())
	}
	// The server publishes B's desired state then A's: B gets its own, A
	// gets only its own, which arrives after anything of B's would have.
	desired := func(id string) []byte {
		return proto.MustEncode(&proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Generation: 1})
	}
	if err := b.Publish(ctx, proto.Topic("gw-b", proto.KindDesired), desired("gw-b"), true); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, proto.Topic("gw-a", proto.KindDesired), desired("gw-a"), true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gotB:
	case <-time.After(wait):
		t.Fatal("B did not receive its desired state")
	}
	select {
	case topic := <-gotA:
		if topic != proto.Topic("gw-a", proto.KindDesired) {
			t.Fatalf("A received %s", topic)
		}
	case <-time.After(wait):
		t.Fatal("A did not receive its own desired state")
	}

	// A publishing as B: mochi cuts an MQTT 3.1.1 client off for it.
	lost := make(chan struct{})
	a2 := connect(t, b.URL(), "gw-a", creds("gw-a", string(ca.Secret)), func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	})
	status := proto.MustEncode(&proto.Status{ProtocolVersion: proto.ProtocolVersion, DeviceId: "gw-b", State: proto.Status_STATE_ONLINE, Session: 1})
	a2.Publish(proto.Topic("gw-b", proto.KindStatus), 1, true, status)
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("A was not disconnected after publishing as B")
	}
	if _, err := inv.Device(ctx, "gw-b"); err == nil {
		t.Fatal("the inventory took A's message as B's")
	}
	if b.Stats()["topics_denied"] < 6 {
		t.Errorf("topics_denied = %d, want at least 6", b.Stats()["topics_denied"])
	}
}

func TestRevokedDeviceIsCutOffWithinASecond(t *testing.T) {
	ctx := context.Background()
	b, en, _ := newAuthEmbedded(t, broker.Limits{})
	c, err := en.Preauthorize(ctx, "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan struct{})
	connect(t, b.URL(), "gw-a", creds("gw-a", string(c.Secret)), func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	})
	start := time.Now()
	if err := en.Revoke(ctx, "gw-a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
		t.Logf("cut off %s after the revocation", time.Since(start))
	case <-time.After(time.Second):
		t.Fatal("revoked device still connected after 1 s")
	}
	if err := tryConnect(b.URL(), "gw-a", creds("gw-a", string(c.Secret))); err == nil {
		t.Fatal("revoked device connected again")
	}
}

// TestSilentAndCrowdingConnectionsAreBounded: a client that never sends
// CONNECT is dropped after ConnectTimeout, and one IP cannot hold more
// than MaxConnsPerIP connections.
func TestSilentAndCrowdingConnectionsAreBounded(t *testing.T) {
	b, _, _ := newAuthEmbedded(t, broker.Limits{MaxConnsPerIP: 2, ConnectTimeout: 300 * time.Millisecond})
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Every one of them ends: the third at once (over the cap), the other
	// two at the connect timeout. The test's own deadline only bounds it.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1)
		_, err := c.Read(buf)
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("connection %d: read returned %v; the server kept a silent connection open", i, err)
		}
	}
	if got := b.Stats()["conns_over_ip_cap"]; got != 1 {
		t.Errorf("conns_over_ip_cap = %d, want 1", got)
	}
}

// BenchmarkConnect compares a device's CONNECT round trip with auth off
// and on (two credential checks against bbolt), side by side.
func BenchmarkConnect(b *testing.B) {
	for _, auth := range []bool{false, true} {
		b.Run(map[bool]string{false: "auth=off", true: "auth=required"}[auth], func(b *testing.B) {
			var url, pass string
			if auth {
				br, en, _ := newAuthEmbedded(b, broker.Limits{})
				c, err := en.Preauthorize(context.Background(), "gw-b", nil)
				if err != nil {
					b.Fatal(err)
				}
				url, pass = br.URL(), string(c.Secret)
			} else {
				br, _ := newEmbedded(b, broker.Limits{})
				url = br.URL()
			}
			b.ResetTimer()
			for b.Loop() {
				o := paho.NewClientOptions().AddBroker(url).SetClientID("gw-b").SetAutoReconnect(false).SetProtocolVersion(4)
				if auth {
					o.SetUsername("gw-b").SetPassword(pass)
				}
				c := paho.NewClient(o)
				if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
					b.Fatalf("connect: %v", tok.Error())
				}
				c.Disconnect(0)
			}
		})
	}
}

// TestCloseLeavesNoGoroutines: after Close, nothing the broker started
// for its clients (authenticated, refused, silent) is left running.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	st := storetest.Open(t, store.Options{})
	inv, err := inventory.New(context.Background(), st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	en, err := enroll.Open(enroll.Options{DB: st.DB()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: inv, Auth: en})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := en.Preauthorize(context.Background(), "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(b.URL(), "gw-a", creds("gw-a", string(c.Secret))); err != nil {
		t.Fatal(err)
	}
	if err := tryConnect(b.URL(), "gw-a", creds("gw-a", "wrong")); err == nil {
		t.Fatal("wrong secret accepted")
	}
	silent, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	live := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("gw-a").SetUsername("gw-a").SetPassword(string(c.Secret)).SetAutoReconnect(false))
	if tok := live.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	live.Disconnect(0)
	silent.Close()
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}

// clientCert makes a key and has ca certify it for id.
func clientCert(t *testing.T, ca *tlsca.CA, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignClient(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), id)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}
}

// TestClientCertificateInsteadOfSecret: over TLS, a device may prove
// itself with a client certificate from the fleet CA instead of its
// secret; the certificate must name the client id, come from that CA, and
// the device must still be accepted.
func TestClientCertificateInsteadOfSecret(t *testing.T) {
	ctx := context.Background()
	ca, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.Open(t, store.Options{})
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	en, err := enroll.Open(enroll.Options{DB: st.DB()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.NewEmbedded(broker.EmbeddedOptions{Addr: "127.0.0.1:0", Handler: inv, Auth: en,
		TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}})
	if err != nil {
		t.Fatal(err)
	}
	en.OnCutOff(func(id string) { b.Disconnect(id) })
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if !strings.HasPrefix(b.URL(), "tls://") {
		t.Fatalf("URL %s", b.URL())
	}
	for _, id := range []string{"gw-a", "gw-b"} {
		if _, err := en.Preauthorize(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	certA := clientCert(t, ca, "gw-a")
	other, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	withTLS := func(certs ...tls.Certificate) func(*paho.ClientOptions) {
		return func(o *paho.ClientOptions) { o.SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), Certificates: certs}) }
	}
	if err := tryConnect(b.URL(), "gw-a", withTLS()); err == nil {
		t.Fatal("no certificate and no secret: connected")
	}
	if err := tryConnect(b.URL(), "gw-b", withTLS(certA)); err == nil {
		t.Fatal("gw-a's certificate connected as gw-b")
	}
	if err := tryConnect(b.URL(), "gw-a", withTLS(clientCert(t, other, "gw-a"))); err == nil {
		t.Fatal("a certificate from another CA connected")
	}
	lost := make(chan struct{})
	connect(t, b.URL(), "gw-a", withTLS(certA), func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	})
	if err := en.Revoke(ctx, "gw-a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(time.Second):
		t.Fatal("revoked device with a certificate still connected after 1 s")
	}
	if err := tryConnect(b.URL(), "gw-a", withTLS(certA)); err == nil {
		t.Fatal("revoked device connected with its certificate")
	}
}
