package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// secure wraps a broker connection in TLS when the broker URL is tls://,
// verifying the broker against Config.TLS (the CA pinned at enrolment).
// The handshake runs here, bounded by ctx, so a broker that stalls it
// counts as a failed connect rather than hanging the first read.
func (a *Agent) secure(ctx context.Context, conn net.Conn) (net.Conn, error) {
	if a.brokerURL.Scheme != "tls" {
		return conn, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.cfg.TLS != nil {
		cfg = a.cfg.TLS.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = a.brokerURL.Hostname()
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", a.brokerURL.Host, err)
	}
	return tc, nil
}

// refusedHint tells the operator what a refused CONNECT usually means, since
// the agent keeps retrying and the log is all they see.
func refusedHint(err error) string {
	if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
		return " (the broker refused this device's credentials: it may be revoked, rejected or not enrolled; see `edgefleet-agent enroll`)"
	}
	return ""
}
