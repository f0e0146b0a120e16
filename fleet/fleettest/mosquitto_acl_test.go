package fleettest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	bolt "go.etcd.io/bbolt"

	agentenroll "github.com/edgefleet/edgefleet/agent/enroll"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/fleetd"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/proto"
)

// mosquittoAuthConfig is deploy/mosquitto/edgefleet-auth.conf, the
// documented configuration, with a test port, the generated files in dir,
// a temporary persistence dir and logs to stderr.
func mosquittoAuthConfig(t *testing.T, dir string) func(port int, tmp string) string {
	text, err := os.ReadFile("../../deploy/mosquitto/edgefleet-auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	return func(port int, tmp string) string {
		c := string(text)
		for _, r := range [][2]string{
			{"\nlistener 1883\n", fmt.Sprintf("\nlistener %d 127.0.0.1\n", port)},
			{"/var/lib/edgefleet/mosquitto/", dir + "/"},
			{"persistence_location /var/lib/mosquitto/", "persistence_location " + tmp + "/"},
			{"log_dest syslog", "log_dest stderr"},
		} {
			if !strings.Contains(c, r[0]) {
				t.Fatalf("edgefleet-auth.conf no longer has %q", r[0])
			}
			c = strings.ReplaceAll(c, r[0], r[1])
		}
		return c + "user root\n"
	}
}

func mqttConnect(url, id, user, pass string) (paho.Client, error) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetCleanSession(true)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: no answer", id)
	}
	return c, tok.Error()
}

func publish(t *testing.T, c paho.Client, topic string, payload []byte, retain bool) {
	t.Helper()
	tok := c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func first(t *testing.T, ch <-chan paho.Message, what string) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no message: %s", what)
		return nil
	}
}

// TestMosquittoEnforcesTheSameACL runs Debian's mosquitto with the
// password and ACL files the enrolment authority generates and checks the
// rules the embedded broker's hook enforces: no anonymous or wrong
// credentials, no publishing as another device, no reading another
// device's desired state, nothing through "#" or "$SYS"; a revoked device
// is refused after the files are regenerated and mosquitto reloads them.
func TestMosquittoEnforcesTheSameACL(t *testing.T) {
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "fleet.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	en, err := enroll.Open(enroll.Options{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	a, err := en.Preauthorize(ctx, "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := en.Preauthorize(ctx, "gw-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := en.WriteMosquittoFiles(ctx, dir, "edgefleet-server", enroll.MosquittoPasswordHash("server-pw")); err != nil {
		t.Fatal(err)
	}
	m := fleettest.StartMosquittoWith(t, mosquittoAuthConfig(t, dir))

	if c, err := mqttConnect(m.URL, "gw-a", "", ""); err == nil {
		c.Disconnect(0)
		t.Fatal("anonymous client connected")
	}
	if c, err := mqttConnect(m.URL, "gw-a", "gw-a", "wrong"); err == nil {
		c.Disconnect(0)
		t.Fatal("wrong password accepted")
	}

	srv, err := mqttConnect(m.URL, "edgefleet-server", "edgefleet-server", "server-pw")
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	defer srv.Disconnect(0)
	fromDevices := make(chan paho.Message, 16)
	if tok := srv.Subscribe(proto.Subscription(proto.KindHello), 1, func(_ paho.Client, m paho.Message) { fromDevices <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("server subscribe: %v", tok.Error())
	}

	ca, err := mqttConnect(m.URL, "gw-a", "gw-a", string(a.Secret))
	if err != nil {
		t.Fatalf("A: %v", err)
	}
	defer ca.Disconnect(0)
	toA := make(chan paho.Message, 16)
	for _, f := range []string{"#", "$SYS/#", proto.Topic("gw-b", proto.KindDesired), proto.Subscription(proto.KindDesired), proto.Topic("gw-a", proto.KindDesired)} {
		if tok := ca.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { toA <- m }); !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("A subscribe %s: no SUBACK", f)
		}
	}

	// A publishes as B, then as itself: the server sees only A's (both on
	// A's connection, so B's would have come first).
	publish(t, ca, proto.Topic("gw-b", proto.KindHello), []byte("forged"), false)
	publish(t, ca, proto.Topic("gw-a", proto.KindHello), []byte("own"), false)
	if got := first(t, fromDevices, "A's own hello"); got.Topic() != proto.Topic("gw-a", proto.KindHello) {
		t.Fatalf("server received %s %q first: A published as B", got.Topic(), got.Payload())
	}

	// A writes B's desired state (a fleet→device topic): refused, so B
	// later reads the server's.
	publish(t, ca, proto.Topic("gw-b", proto.KindDesired), []byte("forged"), true)
	publish(t, srv, proto.Topic("gw-b", proto.KindDesired), []byte("for-b"), true)
	publish(t, srv, proto.Topic("gw-a", proto.KindDesired), []byte("for-a"), true)
	if got := first(t, toA, "A's own desired state"); got.Topic() != proto.Topic("gw-a", proto.KindDesired) || string(got.Payload()) != "for-a" {
		t.Fatalf("A received %s %q first: it read beyond its own desired state", got.Topic(), got.Payload())
	}
	cb, err := mqttConnect(m.URL, "gw-b", "gw-b", string(b.Secret))
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	toB := make(chan paho.Message, 4)
	if tok := cb.Subscribe(proto.Topic("gw-b", proto.KindDesired), 1, func(_ paho.Client, m paho.Message) { toB <- m }); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("B subscribe: no SUBACK")
	}
	if got := first(t, toB, "B's retained desired state"); string(got.Payload()) != "for-b" {
		t.Fatalf("B's desired state is %q: A overwrote it", got.Payload())
	}
	cb.Disconnect(0)

	// Revoke B, regenerate, reload: B is refused.
	if err := en.Revoke(ctx, "gw-b"); err != nil {
		t.Fatal(err)
	}
	if err := en.WriteMosquittoFiles(ctx, dir, "edgefleet-server", enroll.MosquittoPasswordHash("server-pw")); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := mqttConnect(m.URL, "gw-b", "gw-b", string(b.Secret))
		if err != nil {
			break
		}
		c.Disconnect(0)
		if time.Now().After(deadline) {
			t.Fatal("revoked device still accepted 10 s after the reload")
		}
	}
}

// TestServerOverMosquittoWithAuth runs the fleet server against a
// mosquitto that requires credentials, with the server keeping the
// password file up to date: an enrolled agent shows up.
func TestServerOverMosquittoWithAuth(t *testing.T) {
	dir := t.TempDir()
	// The first files hold only the server's user: mosquitto needs them
	// to start, and the server rewrites them as devices enrol.
	seed, err := bolt.Open(filepath.Join(t.TempDir(), "seed.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	en, err := enroll.Open(enroll.Options{DB: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := en.WriteMosquittoFiles(context.Background(), dir, "edgefleet-server", enroll.MosquittoPasswordHash("server-pw")); err != nil {
		t.Fatal(err)
	}
	seed.Close()
	m := fleettest.StartMosquittoWith(t, mosquittoAuthConfig(t, dir))
	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL), fleettest.WithDeviceAuth(), fleettest.WithSecurity(func(c *fleetd.SecurityConfig) {
		c.MQTTUsername, c.MQTTPassword, c.MosquittoDir = "edgefleet-server", "server-pw", dir
	}))
	c := f.Provision(t, "gw-m", map[string]string{"site": "lyon"})
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	// The agent retries until mosquitto has reread the password file.
	startEnrolledAgent(t, &agentenroll.Credentials{DeviceID: c.DeviceID, Secret: string(c.Secret), Labels: c.Labels, BrokerURL: m.URL})
	d := f.WaitDevice(t, "gw-m", agentWait, helloSeen)
	if d.Labels["site"] != "lyon" {
		t.Errorf("labels %v", d.Labels)
	}
}
