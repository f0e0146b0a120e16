package fleettest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
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
	"github.com/edgefleet/edgefleet/fleet/tlsca"
)

// TestMosquittoOverTLS: Debian's mosquitto with the documented auth
// configuration and a TLS listener whose certificate comes from the
// fleet's CA. The server (verifying the broker with --mqtt-ca) and an
// enrolled agent (pinning the CA) both connect over TLS; a client
// trusting another CA cannot.
func TestMosquittoOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := tlsca.LoadOrCreate(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "tls", tlsca.CertFile)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
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
	base := mosquittoAuthConfig(t, dir)
	m := fleettest.StartMosquittoWith(t, func(port int, tmp string) string {
		c := base(port, tmp)
		// The documented TLS lines, on the test listener.
		return strings.Replace(c, "127.0.0.1\n", "127.0.0.1\ncertfile "+certFile+"\nkeyfile "+keyFile+"\n", 1)
	})
	url := "ssl://" + m.Addr

	f := fleettest.Start(t, fleettest.WithMQTTURL(url), fleettest.WithDeviceAuth(), fleettest.WithSecurity(func(c *fleetd.SecurityConfig) {
		c.MQTTUsername, c.MQTTPassword, c.MosquittoDir, c.MQTTCAFile = "edgefleet-server", "server-pw", dir, caFile
	}))
	c := f.Provision(t, "gw-t", nil)
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	startEnrolledAgent(t, &agentenroll.Credentials{DeviceID: c.DeviceID, Secret: string(c.Secret), BrokerURL: "tls://" + m.Addr, CACert: string(ca.CertPEM())})
	f.WaitDevice(t, "gw-t", agentWait, helloSeen)

	other, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(other.CertPEM())
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("gw-t").SetUsername("gw-t").SetPassword(string(c.Secret)).
		SetTLSConfig(&tls.Config{RootCAs: pool}).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() == nil {
		cl.Disconnect(0)
		t.Fatal("a client trusting another CA connected")
	}
}
