package enroll_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/agent/enroll"
	fleetenroll "github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/tlsca"
)

// server is the real enrolment API on loopback (test-only import of the
// fleet side; the agent binary does not link it).
func server(t *testing.T, ca *tlsca.CA) (*fleetenroll.Enroll, *httptest.Server) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "fleet.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e, err := fleetenroll.Open(fleetenroll.Options{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	opts := fleetenroll.HTTPOptions{BrokerURL: "tcp://127.0.0.1:1883", FleetKey: make([]byte, 32)}
	if ca != nil {
		opts.CACert, opts.BrokerURL = ca.CertPEM(), "tls://127.0.0.1:8883"
	}
	mux := http.NewServeMux()
	fleetenroll.NewHandler(e, opts).Register(mux)
	srv := httptest.NewUnstartedServer(mux)
	if ca != nil {
		cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return e, srv
}

func TestEnrolWithToken(t *testing.T) {
	ctx := context.Background()
	e, srv := server(t, nil)
	_, tok, err := e.CreateToken(ctx, fleetenroll.TokenSpec{Labels: map[string]string{"site": "lyon"}, MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := enroll.Enroll(ctx, enroll.Options{Server: srv.URL, Token: string(tok), DeviceID: "gw-1", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, enroll.FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v, want mode 0600", fi, err)
	}
	got, err := enroll.Load(dir)
	if err != nil || got.Secret != c.Secret || got.Labels["site"] != "lyon" || got.BrokerURL != "tcp://127.0.0.1:1883" {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	if err := e.Authenticate(ctx, "gw-1", []byte(got.Secret)); err != nil {
		t.Fatalf("the saved secret is not the device's: %v", err)
	}
	if k, err := got.PublicKey(); err != nil || len(k) != 32 {
		t.Fatalf("fleet key %v %v", k, err)
	}
	// Replay, on another device: refused with the server's reason.
	_, err = enroll.Enroll(ctx, enroll.Options{Server: srv.URL, Token: string(tok), DeviceID: "gw-2", StateDir: t.TempDir()})
	if !errors.Is(err, enroll.ErrRefused) || !strings.Contains(err.Error(), "allowed 1 enrolment") {
		t.Fatalf("replayed token: %v", err)
	}
	if _, err := enroll.Load(t.TempDir()); !errors.Is(err, enroll.ErrNotEnrolled) {
		t.Fatalf("Load of an empty dir: %v", err)
	}
}

func TestEnrolWaitsForAcceptance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, srv := server(t, nil)
	// The operator accepts the device once it shows up as pending.
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if ds, _ := e.Devices(ctx, fleetenroll.StatePending); len(ds) == 1 {
				e.Accept(ctx, ds[0].ID)
				return
			}
		}
	}()
	dir := t.TempDir()
	c, err := enroll.Enroll(ctx, enroll.Options{Server: srv.URL, DeviceID: "gw-p", StateDir: dir, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Authenticate(ctx, "gw-p", []byte(c.Secret)); err != nil {
		t.Fatal(err)
	}
	// A device rejected while waiting stops with the reason.
	if _, err := e.Preauthorize(ctx, "gw-r", nil); err != nil {
		t.Fatal(err)
	}
	_, err = enroll.Enroll(ctx, enroll.Options{Server: srv.URL, DeviceID: "gw-r", StateDir: t.TempDir(), PollInterval: 10 * time.Millisecond})
	if !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("device enrolled by other means: %v", err)
	}
}

func TestEnrolOverHTTPSPinsTheCA(t *testing.T) {
	ctx := context.Background()
	ca, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, srv := server(t, ca)
	_, tok, err := e.CreateToken(ctx, fleetenroll.TokenSpec{MaxUses: 5})
	if err != nil {
		t.Fatal(err)
	}
	opts := enroll.Options{Server: srv.URL, Token: string(tok), DeviceID: "gw-1", StateDir: t.TempDir()}
	if _, err := enroll.Enroll(ctx, opts); err == nil || !strings.Contains(err.Error(), "--ca-sha256") {
		t.Fatalf("https without a pin: %v, want an error naming --ca-sha256", err)
	}
	other, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts.CAFingerprint = other.Fingerprint()
	if _, err := enroll.Enroll(ctx, opts); err == nil || !strings.Contains(err.Error(), "pinned CA") {
		t.Fatalf("wrong pin: %v", err)
	}
	opts.CAFingerprint = ca.Fingerprint()
	c, err := enroll.Enroll(ctx, opts)
	if err != nil {
		t.Fatalf("right pin: %v", err)
	}
	if cfg, err := c.TLSConfig(); err != nil || cfg == nil {
		t.Fatalf("TLS config from the pinned CA: %v", err)
	}
	opts.CAFingerprint, opts.CACertPEM, opts.DeviceID = "", ca.CertPEM(), "gw-2"
	if _, err := enroll.Enroll(ctx, opts); err != nil {
		t.Fatalf("CA file: %v", err)
	}
}
