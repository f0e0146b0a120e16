package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgefleet/edgefleet/agent/enroll"
	"github.com/edgefleet/edgefleet/simulators"
)

// enrollFlags let simulated devices enrol like real ones, for servers
// with --mqtt-auth=required: every device trades the (multi-use) token for
// its own credentials.
type enrollFlags struct {
	token, server, caSHA256, dir string
}

func (e *enrollFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.token, "enroll-token", env("ENROLL_TOKEN", ""), "enrol every device with this token (create it with max uses >= --devices) [EDGEFLEET_ENROLL_TOKEN]")
	fs.StringVar(&e.server, "enroll-server", env("ENROLL_SERVER", "http://127.0.0.1:8080"), "with --enroll-token: the fleet server's HTTP URL [EDGEFLEET_ENROLL_SERVER]")
	fs.StringVar(&e.caSHA256, "ca-sha256", env("CA_SHA256", ""), "with an https --enroll-server: the SHA-256 of the server's CA, as it prints it [EDGEFLEET_CA_SHA256]")
	fs.StringVar(&e.dir, "credentials-dir", env("CREDENTIALS_DIR", ""), "keep each device's credentials here (one dir per device) so a restarted simulator reconnects instead of enrolling again [EDGEFLEET_CREDENTIALS_DIR]")
}

// apply sets cfg.Credentials when a token was given.
func (e *enrollFlags) apply(cfg *simulators.Config) {
	if e.token == "" {
		return
	}
	cfg.Credentials = func(ctx context.Context, id string) (string, string, *tls.Config, error) {
		dir := ""
		if e.dir != "" {
			dir = filepath.Join(e.dir, id)
			if c, err := enroll.Load(dir); err == nil {
				return credentials(c)
			}
		}
		opts := enroll.Options{Server: e.server, Token: e.token, DeviceID: id, StateDir: dir, CAFingerprint: e.caSHA256}
		var (
			c   *enroll.Credentials
			err error
		)
		if dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return "", "", nil, err
			}
			c, err = enroll.Enroll(ctx, opts)
		} else {
			c, err = enroll.Obtain(ctx, opts)
		}
		if err != nil {
			return "", "", nil, fmt.Errorf("enrol %s: %w", id, err)
		}
		return credentials(c)
	}
}

func credentials(c *enroll.Credentials) (string, string, *tls.Config, error) {
	t, err := c.TLSConfig()
	return c.DeviceID, c.Secret, t, err
}
