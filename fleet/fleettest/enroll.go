package fleettest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

// WithDeviceAuth starts the server with --mqtt-auth=required, the
// product's default: devices must be enrolled (see Provision). Without
// it fleettest servers run with auth off, so tests about other things can
// connect devices anonymously.
func WithDeviceAuth() Option { return func(o *options) { o.deviceAuth = true } }

// WithTLS starts the server with its self-signed CA (--tls=self-signed):
// HTTPS and MQTT over TLS, on loopback.
func WithTLS() Option { return func(o *options) { o.tls = true } }

func (o *options) security() fleetd.SecurityConfig {
	sc := fleetd.SecurityConfig{MQTTAuth: fleetd.MQTTAuthOff, TLS: fleetd.TLSOff}
	if o.deviceAuth {
		sc.MQTTAuth = fleetd.MQTTAuthRequired
	}
	if o.tls {
		sc.TLS = fleetd.TLSSelfSigned
	}
	if o.securityFn != nil {
		o.securityFn(&sc)
	}
	return sc
}

// WithSecurity changes the server's security settings after the others,
// e.g. its credentials on an external broker or a Mosquitto files dir.
func WithSecurity(fn func(*fleetd.SecurityConfig)) Option {
	return func(o *options) { o.securityFn = fn }
}

// Reload makes mosquitto reread its configuration, password and ACL
// files (SIGHUP), as `systemctl reload mosquitto` does.
func (m *Mosquitto) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return fmt.Errorf("fleettest: mosquitto is not running")
	}
	return m.cmd.Process.Signal(syscall.SIGHUP)
}

// HTTPClient is a client of the server's HTTP side, trusting its CA when
// it serves HTTPS.
func (f *Fleet) HTTPClient() *http.Client {
	ca := f.Server.CACert()
	if ca == nil {
		return http.DefaultClient
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// TLSConfig trusts the server's CA, for MQTT clients of a WithTLS fleet;
// nil without TLS.
func (f *Fleet) TLSConfig() *tls.Config {
	ca := f.Server.CACert()
	if ca == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Provision pre-authorises a device through the server's enrolment
// authority and returns its credentials: MQTT username DeviceID, password
// Secret.
func (f *Fleet) Provision(t testing.TB, deviceID string, labels map[string]string) enroll.Credentials {
	t.Helper()
	c, err := f.Server.Enrollment().Preauthorize(context.Background(), deviceID, labels)
	if err != nil {
		t.Fatalf("fleettest: provision %s: %v", deviceID, err)
	}
	return c
}
