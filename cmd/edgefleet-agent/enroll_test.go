package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
)

// TestEnrollCommand runs `edgefleet-agent enroll` against a real server
// over HTTPS with its self-signed CA pinned by fingerprint, then checks
// that `run` would connect with the credentials.
func TestEnrollCommand(t *testing.T) {
	ctx := context.Background()
	f := fleettest.Start(t, fleettest.WithDeviceAuth(), fleettest.WithTLS())
	_, tok, err := f.Server.Enrollment().CreateToken(ctx, enroll.TokenSpec{Labels: map[string]string{"site": "lyon"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"--server", f.HTTPURL, "--token", string(tok), "--state-dir", dir, "--log-level", "warn"}
	if err := enrollAgent(ctx, args); err == nil || !strings.Contains(err.Error(), "--ca-sha256") {
		t.Fatalf("https without a pinned CA: %v", err)
	}
	if err := enrollAgent(ctx, append(args, "--ca-sha256", f.Server.CAFingerprint())); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "credentials.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file %v %v", fi, err)
	}
	if err := enrollAgent(ctx, append(args, "--ca-sha256", f.Server.CAFingerprint())); err == nil || !strings.Contains(err.Error(), "already enrolled") {
		t.Fatalf("second enrol: %v", err)
	}
	cfg := agent.Config{StateDir: dir, BrokerURL: "tcp://127.0.0.1:1883", Labels: map[string]string{"site": "local", "rack": "4"}}
	ok, err := applyCredentials(&cfg, false)
	if err != nil || !ok {
		t.Fatalf("applyCredentials: %v %v", ok, err)
	}
	if cfg.BrokerURL != f.MQTTURL || cfg.Username == "" || cfg.Username != cfg.DeviceID || cfg.Password == "" || cfg.TLS == nil || cfg.FleetKey == nil {
		t.Fatalf("config after credentials: %+v", cfg)
	}
	if cfg.Labels["site"] != "lyon" || cfg.Labels["rack"] != "4" {
		t.Fatalf("labels %v: the token's site wins, local rack stays", cfg.Labels)
	}
	if err := f.Server.Enrollment().Authenticate(ctx, cfg.DeviceID, []byte(cfg.Password)); err != nil {
		t.Fatalf("stored credentials not accepted: %v", err)
	}
	// Without credentials nothing changes.
	empty := agent.Config{StateDir: t.TempDir(), BrokerURL: "tcp://x:1"}
	if ok, err := applyCredentials(&empty, false); ok || err != nil || empty.BrokerURL != "tcp://x:1" {
		t.Fatalf("no credentials: %v %v %+v", ok, err, empty)
	}
}
