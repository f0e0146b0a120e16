package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/proto"
)

// maxQueuedJobProgress bounds the job progress messages waiting for the
// broker; the oldest go first (the terminal state is kept in the state and
// sent again on every connect).
const maxQueuedJobProgress = 256

// setupUpdater builds the update engine when the fleet key is configured
// and serves what the state says was last switched to.
func (a *Agent) setupUpdater(ctx context.Context) error {
	if len(a.cfg.FleetKey) == 0 {
		return nil
	}
	st, ok := a.store.(update.Store)
	if !ok {
		return fmt.Errorf("%w: the state store cannot record updates", ErrConfig)
	}
	dir := a.cfg.UpdateDir
	if dir == "" {
		if a.cfg.StateDir == "" {
			return fmt.Errorf("%w: updates need an UpdateDir (or a StateDir)", ErrConfig)
		}
		dir = filepath.Join(a.cfg.StateDir, "models")
	}
	a.jobs = make(chan *proto.JobProgress, maxQueuedJobProgress)
	client := a.updateHTTPClient()
	if client != nil && client != a.cfg.UpdateHTTPClient {
		a.updClient = client
	}
	u, err := update.New(update.Config{
		FleetKey: a.cfg.FleetKey, Dir: dir, DeviceID: a.id, Store: st, Server: a,
		Backends: a.backends, Base: a.installed, Report: a.queueJob, Health: a.cfg.Health,
		Finished:   func() { a.helloDue.Store(true) },
		HTTPClient: client,
		Profile:    a.profile.Name, AgentVersion: a.cfg.AgentVersion,
		// An artifact must fit the profile's model memory on its own.
		MaxArtifactBytes: uint64(max(a.profile.ModelMemoryMB, 1)) << 20,
		Now:              a.clock.Now,
		After: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := a.clock.NewTimer(d)
			return t.C(), t.Stop
		},
		Threads: a.profile.Threads, Logger: a.log.With("component", "update"),
	})
	if err != nil {
		return err
	}
	a.upd = u
	return u.Restore(ctx)
}

// runUpdater runs the update engine until ctx is done.
func (a *Agent) runUpdater(ctx context.Context) {
	if err := a.upd.Run(ctx); err != nil {
		a.log.Error("update engine stopped", "err", err)
	}
	if a.updClient != nil {
		a.updClient.CloseIdleConnections()
	}
}

// queueJob queues job progress for the broker without blocking, dropping
// the oldest when full.
func (a *Agent) queueJob(p *proto.JobProgress) {
	for {
		select {
		case a.jobs <- p:
			return
		default:
		}
		select {
		case <-a.jobs:
		default:
		}
	}
}

// ServeModel makes m the served version of name; Infer calls in progress
// finish on the version they started on. It returns the replaced model
// once no call uses it, and the caller owns it. The update engine uses it.
func (a *Agent) ServeModel(name, version, backend string, m runtime.Model) (runtime.Model, error) {
	lm := newLoadedModel(name, version, backend, m, a.maxSessions())
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	old := a.models[name]
	a.models[name] = lm
	a.mu.Unlock()
	a.apiSwap(name, version, m)
	if old == nil {
		return nil, nil
	}
	return old.retire(), nil
}

// RemoveModel stops serving name and returns its model, as ServeModel.
func (a *Agent) RemoveModel(name string) (runtime.Model, error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	old := a.models[name]
	delete(a.models, name)
	a.mu.Unlock()
	if old != nil {
		a.apiRemove(name)
	}
	if old == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownModel, name)
	}
	return old.retire(), nil
}

// ServedVersion returns the served version of name.
func (a *Agent) ServedVersion(name string) (string, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if lm := a.models[name]; lm != nil {
		return lm.version, true
	}
	return "", false
}

// retire waits for the calls using a replaced model, closes its sessions
// and hands the model itself back.
func (lm *loadedModel) retire() runtime.Model {
	lm.inflight.Wait()
	lm.mu.Lock()
	defer lm.mu.Unlock()
	for _, s := range lm.all {
		_ = s.Close()
	}
	lm.all = nil
	return lm.model
}

// observeUpdate feeds the update engine's health window. Bad requests are
// the caller's fault, not the model's.
func (a *Agent) observeUpdate(name, version string, d time.Duration, err error) {
	if a.upd == nil {
		return
	}
	failed := err != nil && !errors.Is(err, runtime.ErrInput) && !errors.Is(err, context.Canceled)
	a.upd.Observe(name, version, d, failed)
}

// updateHTTPClient is the artifact client: Config.UpdateHTTPClient, or,
// when enrolment pinned a fleet CA (Config.TLS), one that trusts that CA
// besides the system roots: the fleet server serves artifacts over TLS
// with its own CA, and may redirect to object storage with a public
// certificate. Nil leaves the updater's default.
func (a *Agent) updateHTTPClient() *http.Client {
	if a.cfg.UpdateHTTPClient != nil || a.cfg.TLS == nil || a.cfg.TLS.RootCAs == nil {
		return a.cfg.UpdateHTTPClient
	}
	fleetRoots := a.cfg.TLS.RootCAs
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: dialer.DialContext,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := &tls.Config{
				MinVersion: tls.VersionTLS12,
				// Verified in VerifyConnection instead, against the fleet CA
				// and then the system roots, for this host.
				InsecureSkipVerify: true,
				VerifyConnection: func(cs tls.ConnectionState) error {
					return verifyPeer(cs.PeerCertificates, host, fleetRoots)
				},
			}
			if net.ParseIP(host) == nil {
				cfg.ServerName = host
			}
			tc := tls.Client(conn, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			return tc, nil
		},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
	}}
}

// verifyPeer checks a server's chain for host against the fleet CA, then
// against the system roots.
func verifyPeer(chain []*x509.Certificate, host string, fleetRoots *x509.CertPool) error {
	if len(chain) == 0 {
		return fmt.Errorf("tls: %s sent no certificate", host)
	}
	opts := x509.VerifyOptions{DNSName: host, Intermediates: x509.NewCertPool(), Roots: fleetRoots}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err == nil {
		return nil
	}
	opts.Roots = nil // the system's
	if _, err := chain[0].Verify(opts); err != nil {
		return fmt.Errorf("tls: %s: certificate not signed by the fleet CA nor a system root: %w", host, err)
	}
	return nil
}
