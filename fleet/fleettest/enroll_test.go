package fleettest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent"
	agentenroll "github.com/edgefleet/edgefleet/agent/enroll"
	agentrt "github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/simulators"
)

// startEnrolledAgent runs a real agent with the credentials enrolment gave
// it, until the test ends.
func startEnrolledAgent(t *testing.T, c *agentenroll.Credentials) {
	t.Helper()
	backend, err := simulators.NewBackend(simulators.BackendConfig{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		BrokerURL: c.BrokerURL, DeviceID: c.DeviceID, Username: c.DeviceID, Password: c.Secret, TLS: tlsCfg,
		Store: statetest.OpenBolt(t, ""), Labels: c.Labels, TelemetryInterval: 200 * time.Millisecond,
		AgentVersion: "0.1.0-test", Facts: hardware(t, "pi4"), Backends: []agentrt.Backend{backend},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
		ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second,
		Logger: fleettest.TestLogger(t, agentLogLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent did not stop within 10 s")
		}
		if err := a.Close(); err != nil {
			t.Errorf("agent Close: %v", err)
		}
	})
}

// TestEnrolOverTLSThenRevoke is the gateway's path end to end, all on
// loopback over TLS with the server's self-signed CA: an operator makes a
// token through the API, the agent enrols pinning the CA by fingerprint,
// connects with its credentials and shows up; an anonymous client is
// refused; revoking the device takes it offline within a second.
func TestEnrolOverTLSThenRevoke(t *testing.T) {
	ctx := context.Background()
	f := fleettest.Start(t, fleettest.WithDeviceAuth(), fleettest.WithTLS())
	if !strings.HasPrefix(f.HTTPURL, "https://") || !strings.HasPrefix(f.MQTTURL, "tls://") {
		t.Fatalf("fleet not on TLS: %s", f)
	}
	op, err := enroll.NewClient(f.HTTPURL, f.HTTPClient())
	if err != nil {
		t.Fatal(err)
	}
	op.SetToken(f.Token)
	tc, err := op.CreateToken(ctx, enroll.TokenRequest{Labels: map[string]string{"site": "lyon"}, TTL: "1h", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	opts := agentenroll.Options{Server: f.HTTPURL, Token: "bad.token", DeviceID: "gw-e2e", StateDir: dir, CAFingerprint: f.Server.CAFingerprint()}
	if _, err := agentenroll.Enroll(ctx, opts); !errors.Is(err, agentenroll.ErrRefused) || !strings.Contains(err.Error(), "unknown token") {
		t.Fatalf("wrong token: %v", err)
	}
	opts.Token = tc.Secret
	c, err := agentenroll.Enroll(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.BrokerURL != f.MQTTURL || c.CACert == "" || c.FleetKey == "" {
		t.Fatalf("credentials %+v: want the broker %s, the CA and the fleet key", c, f.MQTTURL)
	}
	opts.DeviceID = "gw-other"
	if _, err := agentenroll.Enroll(ctx, opts); !errors.Is(err, agentenroll.ErrRefused) || !strings.Contains(err.Error(), "used") {
		t.Fatalf("replayed token: %v", err)
	}

	startEnrolledAgent(t, c)
	d := f.WaitDevice(t, "gw-e2e", agentWait, helloSeen)
	if d.Labels["site"] != "lyon" {
		t.Errorf("labels %v: want the token's site=lyon", d.Labels)
	}

	// Anonymous, and the right secret under another client id: refused.
	tlsCfg, _ := c.TLSConfig()
	for _, o := range []*paho.ClientOptions{
		paho.NewClientOptions().SetClientID("gw-anon"),
		paho.NewClientOptions().SetClientID("gw-x").SetUsername("gw-e2e").SetPassword(c.Secret),
	} {
		cl := paho.NewClient(o.AddBroker(f.MQTTURL).SetTLSConfig(tlsCfg).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := cl.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
			cl.Disconnect(0)
			t.Fatalf("client %s connected", o.ClientID)
		}
	}

	start := time.Now()
	if _, err := op.Act(ctx, "gw-e2e", "revoke"); err != nil {
		t.Fatal(err)
	}
	f.WaitDevice(t, "gw-e2e", time.Second, func(d store.Device) bool { return !d.Online })
	t.Logf("revoked device offline after %s", time.Since(start).Round(time.Millisecond))
}

// TestSimulatorWithDeviceAuth: simulated devices given credentials (here
// pre-authorised through the enrolment authority) connect to a server that
// requires auth; without credentials they are refused.
func TestSimulatorWithDeviceAuth(t *testing.T) {
	f := fleettest.Start(t, fleettest.WithDeviceAuth())
	run := func(prefix string, creds bool) context.CancelFunc {
		cfg := simulators.Config{Devices: 3, BrokerURL: f.MQTTURL, Seed: 1, IDPrefix: prefix, TelemetryInterval: time.Second,
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}
		if creds {
			cfg.Credentials = func(_ context.Context, id string) (string, string, *tls.Config, error) {
				c := f.Provision(t, id, nil)
				return c.DeviceID, string(c.Secret), nil, nil
			}
		}
		sim, err := simulators.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sim.Run(ctx) }()
		stop := func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("simulator %s did not stop", prefix)
			}
		}
		t.Cleanup(stop)
		return stop
	}
	run("anon-", false)
	run("sim-", true)
	f.WaitDevices(t, inventory.Query{Status: inventory.StatusOnline}, 3, agentWait)
	for _, d := range f.WaitDevices(t, inventory.Query{}, 3, agentWait) {
		if !strings.HasPrefix(d.ID, "sim-") {
			t.Errorf("device %s got in without credentials", d.ID)
		}
	}
	// The anonymous devices keep retrying; their refusals are counted.
	deadline := time.Now().Add(agentWait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for f.Server.Stats().Broker["connects_refused"] < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("anonymous devices not refused: %v", f.Server.Stats().Broker)
		}
		<-tick.C
	}
}

// TestEnrolWithClientCertificate: a gateway asks for a client certificate
// at enrolment and then connects with it alone, no secret.
func TestEnrolWithClientCertificate(t *testing.T) {
	ctx := context.Background()
	f := fleettest.Start(t, fleettest.WithDeviceAuth(), fleettest.WithTLS())
	_, tok, err := f.Server.Enrollment().CreateToken(ctx, enroll.TokenSpec{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentenroll.Enroll(ctx, agentenroll.Options{Server: f.HTTPURL, Token: string(tok), DeviceID: "gw-cert",
		StateDir: t.TempDir(), CAFingerprint: f.Server.CAFingerprint(), ClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientCert == "" || c.ClientKey == "" {
		t.Fatal("no client certificate in the credentials")
	}
	tlsCfg, err := c.TLSConfig()
	if err != nil || len(tlsCfg.Certificates) != 1 {
		t.Fatalf("TLS config %v %v", tlsCfg, err)
	}
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(f.MQTTURL).SetClientID("gw-cert").SetTLSConfig(tlsCfg).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("certificate-only connect: %v", tok.Error())
	}
	cl.Disconnect(0)
}
