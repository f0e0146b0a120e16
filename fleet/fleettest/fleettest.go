// Package fleettest starts real fleet servers, and a real Mosquitto, for
// tests: everything on loopback with free ports and temporary data dirs,
// ready when returned and stopped at the end of the test.
//
//	f := fleettest.Start(t)                          // embedded broker
//	// connect devices to f.MQTTURL, then:
//	f.WaitDevice(t, "gw-1", 10*time.Second, func(d store.Device) bool { return d.Online })
//
//	m := fleettest.StartMosquitto(t)                 // Debian's mosquitto
//	f := fleettest.Start(t, fleettest.WithMQTTURL(m.URL))
//	m.Stop(); m.Restart()                            // an outage, same port
//
// Waits re-check on every inventory change (Inventory().Changed) instead of
// polling.
package fleettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/fleetd"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
)

// StartTimeout bounds how long Start waits for the server to be ready.
const StartTimeout = 15 * time.Second

// Fleet is a running fleet server.
type Fleet struct {
	// Server is the server itself.
	Server *fleetd.Server
	// MQTTURL is where devices connect, e.g. tcp://127.0.0.1:41883.
	MQTTURL string
	// HTTPURL is the base of the API and console, e.g. http://127.0.0.1:41880.
	HTTPURL string
	// DataDir holds the server's database.
	DataDir string
	// Token is an admin API token; GetJSON and Do send it. Pass it as
	// EDGEFLEET_TOKEN to a CLI under test.
	Token string

	t      testing.TB
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type options struct {
	mqttURL  string
	group    string
	dataDir  string
	logger   *slog.Logger
	history  int
	logLevel slog.Level
	// deviceAuth and tls: see WithDeviceAuth and WithTLS (enroll.go).
	deviceAuth bool
	tls        bool
	securityFn func(*fleetd.SecurityConfig)
}

// Option changes how Start starts the server.
type Option func(*options)

// WithMQTTURL makes the server use the external broker at url (see
// StartMosquitto) instead of an embedded one.
func WithMQTTURL(url string) Option { return func(o *options) { o.mqttURL = url } }

// WithShareGroup makes the server read device messages through shared
// subscriptions in the given group (external broker only).
func WithShareGroup(group string) Option { return func(o *options) { o.group = group } }

// WithDataDir uses dir as the data dir instead of a new temporary one, so a
// test can restart a server on the same state.
func WithDataDir(dir string) Option { return func(o *options) { o.dataDir = dir } }

// WithLogger sends the server's logs to l. Without it, warnings and errors
// go to the test log.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithLogLevel sets the level of the default test-log logger.
func WithLogLevel(level slog.Level) Option { return func(o *options) { o.logLevel = level } }

// WithTelemetryHistory sets how many telemetry windows the server keeps per
// device.
func WithTelemetryHistory(n int) Option { return func(o *options) { o.history = n } }

// Start brings up a fleet server: embedded broker on 127.0.0.1:0 (unless
// WithMQTTURL), bbolt in a temporary dir, HTTP on 127.0.0.1:0. It returns
// once the server reports ready and answers /readyz, and stops it at the
// end of the test, failing the test if the shutdown was not clean.
func Start(t testing.TB, opts ...Option) *Fleet {
	t.Helper()
	o := options{logLevel: slog.LevelWarn}
	for _, opt := range opts {
		opt(&o)
	}
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	if o.logger == nil {
		o.logger = TestLogger(t, o.logLevel)
	}
	srv, err := fleetd.New(context.Background(), fleetd.Config{
		DataDir: o.dataDir, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", MQTTURL: o.mqttURL, MQTTShareGroup: o.group,
		TelemetryHistory: o.history, Logger: o.logger, ShutdownTimeout: 5 * time.Second,
		BcryptCost: bcrypt.MinCost, // tests log in often; the cost guards real passwords only
		Security:   o.security(),
	})
	if err != nil {
		t.Fatalf("fleettest: start server: %v", err)
	}
	token, err := adminToken(srv)
	if err != nil {
		srv.Close()
		t.Fatalf("fleettest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{Server: srv, MQTTURL: srv.MQTTURL(), HTTPURL: srv.HTTPURL(), DataDir: o.dataDir, Token: token, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- srv.Run(ctx) }()
	t.Cleanup(f.Stop)

	deadline := time.Now().Add(StartTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for srv.Ready() != nil {
		select {
		case err := <-f.done:
			f.done <- err
			t.Fatalf("fleettest: server stopped while starting: %v", err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleettest: server not ready after %s: %v", StartTimeout, srv.Ready())
		}
	}
	resp, err := f.HTTPClient().Get(f.HTTPURL + "/readyz")
	if err != nil {
		t.Fatalf("fleettest: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fleettest: /readyz answered %s", resp.Status)
	}
	return f
}

// Stop shuts the server down and waits for it; it fails the test if the
// shutdown returned an error or took longer than 20 s. Calling it again
// does nothing. Cleanup calls it.
func (f *Fleet) Stop() {
	f.once.Do(func() {
		f.cancel()
		select {
		case err := <-f.done:
			if err != nil {
				f.t.Errorf("fleettest: server shutdown: %v", err)
			}
		case <-time.After(20 * time.Second):
			f.t.Errorf("fleettest: server did not shut down within 20 s")
		}
	})
}

// Device returns the device with the given id as the inventory has it.
func (f *Fleet) Device(id string) (store.Device, bool) {
	d, err := f.Server.Inventory().Device(context.Background(), id)
	return d, err == nil
}

// Devices returns every device matching q, following the cursor.
func (f *Fleet) Devices(q inventory.Query) ([]store.Device, error) {
	var out []store.Device
	for {
		p, err := f.Server.Inventory().List(context.Background(), q)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Devices...)
		if p.Next == "" {
			return out, nil
		}
		q.Cursor = p.Next
	}
}

// WaitDevice waits until the device exists and cond holds for it, up to
// timeout, and returns it. It re-checks on every inventory change rather
// than polling on a timer. It fails the test on timeout, with the
// device's last state.
func (f *Fleet) WaitDevice(t testing.TB, id string, timeout time.Duration, cond func(store.Device) bool) store.Device {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed := f.Server.Inventory().Changed()
		d, ok := f.Device(id)
		if ok && (cond == nil || cond(d)) {
			return d
		}
		select {
		case <-changed:
		case <-timer.C:
			if !ok {
				t.Fatalf("fleettest: device %s did not appear within %s", id, timeout)
			}
			t.Fatalf("fleettest: device %s did not reach the expected state within %s; last state: %+v", id, timeout, d)
		}
	}
}

// WaitDevices waits until the devices matching q number exactly n, up to
// timeout, and returns them; event-driven like WaitDevice.
func (f *Fleet) WaitDevices(t testing.TB, q inventory.Query, n int, timeout time.Duration) []store.Device {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed := f.Server.Inventory().Changed()
		ds, err := f.Devices(q)
		if err != nil {
			t.Fatalf("fleettest: list devices: %v", err)
		}
		if len(ds) == n {
			return ds
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("fleettest: %d devices match %+v after %s, want %d", len(ds), q, timeout, n)
		}
	}
}

// processToken is one admin API token for every server this test
// process starts. fleettest exports it as EDGEFLEET_TOKEN, which
// api.NewClient reads, so CLIs and clients under test authenticate
// without each test passing a token along.
var processToken = sync.OnceValue(func() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := auth.TokenPrefix + hex.EncodeToString(b)
	os.Setenv("EDGEFLEET_TOKEN", tok)
	return tok
})

// adminToken installs processToken for an admin of srv: the one the
// server made at its first start, or one the data dir already has.
func adminToken(srv *fleetd.Server) (string, error) {
	ctx := context.Background()
	tok := processToken()
	users, err := srv.Auth().Users(ctx)
	if err != nil {
		return "", err
	}
	for _, u := range users {
		if u.Role == auth.RoleAdmin {
			_, err := srv.Auth().AddToken(ctx, u.Name, "fleettest", auth.Secret(tok), auth.RoleAdmin)
			if errors.Is(err, auth.ErrExists) {
				err = nil // a restart on the same data dir
			}
			return tok, err
		}
	}
	return "", fmt.Errorf("no admin user to make a test token for")
}

// Do sends req with the fleet's admin token.
func (f *Fleet) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", "Bearer "+f.Token)
	return f.HTTPClient().Do(req)
}

// GetJSON fetches path from the server's HTTP API into v, with the admin
// token, and returns the status code.
func (f *Fleet) GetJSON(t testing.TB, path string, v any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.HTTPURL+path, nil)
	if err != nil {
		t.Fatalf("fleettest: GET %s: %v", path, err)
	}
	resp, err := f.Do(req)
	if err != nil {
		t.Fatalf("fleettest: GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("fleettest: GET %s: decode: %v", path, err)
		}
	}
	return resp.StatusCode
}

// TestLogger returns a logger writing to the test log at the given level.
// It stops writing once the test has finished, since goroutines that
// outlive a test must not log to it.
func TestLogger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) }) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// String describes the fleet, for test logs.
func (f *Fleet) String() string { return fmt.Sprintf("fleet(mqtt=%s http=%s)", f.MQTTURL, f.HTTPURL) }
