package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/enroll"
	"github.com/edgefleet/edgefleet/agent/state"
)

func init() {
	register("enroll", "obtain this gateway's fleet credentials (with a token, or wait for an operator)", enrollAgent)
}

func enrollAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("edgefleet-agent enroll", flag.ContinueOnError)
	var (
		server   = fs.String("server", env("ENROLL_SERVER", ""), "the fleet server's HTTP URL, e.g. https://fleet.example.com:8080 [EDGEFLEET_ENROLL_SERVER]")
		token    = fs.String("token", env("ENROLL_TOKEN", ""), "enrolment token from `edgefleet enroll-token create`; without one, wait for an operator to accept this device [EDGEFLEET_ENROLL_TOKEN]")
		stateDir = fs.String("state-dir", env("STATE_DIR", "/var/lib/edgefleet-agent"), "directory of the agent's state; the credentials go here, mode 0600 [EDGEFLEET_STATE_DIR]")
		deviceID = fs.String("device-id", env("DEVICE_ID", ""), "device id (default: the one in the state, generated once) [EDGEFLEET_DEVICE_ID]")
		caFile   = fs.String("ca-cert", env("CA_CERT", ""), "with https: the server's CA certificate (PEM) to pin [EDGEFLEET_CA_CERT]")
		caSHA256 = fs.String("ca-sha256", env("CA_SHA256", ""), "with https: SHA-256 of the server's CA certificate, as the server prints it [EDGEFLEET_CA_SHA256]")
		wait     = fs.Duration("wait", 0, "without a token: give up after this long (default: wait until accepted or rejected)")
		poll     = fs.Duration("poll", 10*time.Second, "without a token: how often to ask whether this device was accepted")
		certFlag = fs.Bool("client-cert", env("CLIENT_CERT", "") == "true", "also get a client certificate from the fleet CA (key made here, never sent); needs a server with --tls=self-signed [EDGEFLEET_CLIENT_CERT=true]")
		force    = fs.Bool("force", false, "enrol again although credentials exist (the old ones stop working only when the operator revokes them)")
		logLevel = fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error [EDGEFLEET_LOG_LEVEL]")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *server == "" {
		return errors.New("--server is required: the fleet server's HTTP URL")
	}
	c := commonFlags{logLevel: *logLevel}
	log, err := c.logger()
	if err != nil {
		return err
	}
	if old, err := enroll.Load(*stateDir); err == nil && !*force {
		return fmt.Errorf("already enrolled as %s with %s; use --force to enrol again", old.DeviceID, old.Server)
	}
	id, err := stateDeviceID(ctx, *stateDir, *deviceID)
	if err != nil {
		return err
	}
	opts := enroll.Options{Server: *server, Token: *token, DeviceID: id, StateDir: *stateDir, CAFingerprint: *caSHA256, PollInterval: *poll, ClientCert: *certFlag, Logger: log}
	if *caFile != "" {
		if opts.CACertPEM, err = os.ReadFile(*caFile); err != nil {
			return fmt.Errorf("--ca-cert: %w", err)
		}
	}
	if *wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *wait)
		defer cancel()
	}
	cr, err := enroll.Enroll(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("enrolled as %s; credentials in %s\nstart the agent: edgefleet-agent run --state-dir %s (or systemctl restart edgefleet-agent)\n",
		cr.DeviceID, filepath.Join(*stateDir, enroll.FileName), *stateDir)
	return nil
}

// stateDeviceID is the device id kept in the agent's state (made once),
// so the agent enrols and later runs under the same id.
func stateDeviceID(ctx context.Context, dir, want string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state dir: %w", err)
	}
	b, err := state.OpenBolt(dir)
	if err != nil {
		return "", err
	}
	defer b.Close()
	return b.DeviceID(ctx, want)
}

// applyCredentials makes an enrolled agent connect with its credentials:
// its id, secret and pinned CA, the broker it was given (unless --server
// was set) and the fleet key (unless --fleet-key was set). The token's
// labels override local ones of the same key, since the fleet selects by
// them. Without credentials it changes nothing.
func applyCredentials(cfg *agent.Config, serverSet bool) (bool, error) {
	c, err := enroll.Load(cfg.StateDir)
	if errors.Is(err, enroll.ErrNotEnrolled) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if cfg.DeviceID != "" && cfg.DeviceID != c.DeviceID {
		return false, fmt.Errorf("--device-id %s differs from the enrolled id %s", cfg.DeviceID, c.DeviceID)
	}
	cfg.DeviceID, cfg.Username, cfg.Password = c.DeviceID, c.DeviceID, c.Secret
	if cfg.TLS, err = c.TLSConfig(); err != nil {
		return false, err
	}
	if !serverSet {
		cfg.BrokerURL = c.BrokerURL
	}
	if cfg.FleetKey == nil {
		if cfg.FleetKey, err = c.PublicKey(); err != nil {
			return false, err
		}
	}
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	for k, v := range c.Labels {
		cfg.Labels[k] = v
	}
	return true, nil
}
