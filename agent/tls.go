package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
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
