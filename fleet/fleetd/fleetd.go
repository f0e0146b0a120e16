// Package fleetd assembles the fleet server from its parts: the store, the
// inventory, the MQTT broker (embedded or external), the HTTP API and the
// console. The edgefleet-server command and the fleettest helpers start the
// very same thing through New and Run.
package fleetd

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/console"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store"
)

// Defaults of Config.
const (
	DefaultDataDir  = "data"
	DefaultHTTPAddr = "127.0.0.1:8080"
	DefaultMQTTAddr = broker.DefaultAddr
)

// Config is everything the server needs to start.
type Config struct {
	// DataDir holds the database (fleet.db); created if missing.
	DataDir string
	// HTTPAddr is where the API and console listen.
	HTTPAddr string
	// MQTTAddr is where the embedded broker listens; unused with MQTTURL.
	MQTTAddr string
	// MQTTURL selects an external broker (e.g. tcp://127.0.0.1:1883)
	// instead of the embedded one.
	MQTTURL string
	// MQTTShareGroup, with an external broker, subscribes through shared
	// subscriptions in this group so several servers split the device
	// stream; empty means plain subscriptions (see broker.ExternalOptions.Group
	// for why that is the default for one server).
	MQTTShareGroup string
	// MQTTClientID is the server's client id on an external broker; by
	// default one derived from the host name and data dir.
	MQTTClientID string
	// TelemetryHistory is how many telemetry windows are kept per device.
	TelemetryHistory int
	// MaxDevices bounds the inventory.
	MaxDevices int
	// BcryptCost is the cost of password hashes; 0 means bcrypt's
	// default. Tests lower it.
	BcryptCost int
	// Security is device enrolment, broker auth and TLS.
	Security SecurityConfig
	// ShutdownTimeout bounds the graceful part of shutdown. Default 10 s.
	ShutdownTimeout time.Duration
	// Logger receives every log; nil discards them.
	Logger *slog.Logger
	// PublicURL is the base URL devices download artifacts from (desired
	// states carry PublicURL + /artifacts/{sha256}); default the HTTP
	// listener's URL.
	PublicURL string
	// RolloutTick is how often the rollout engine evaluates gates and
	// dispatches; default rollout.DefaultTick.
	RolloutTick time.Duration
}

// mqttBroker is the part of a broker the server uses; broker.Embedded and
// broker.External both provide it.
type mqttBroker interface {
	Start(ctx context.Context) error
	Ready() error
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
	Close() error
	URL() string
}

// Server is a fleet server with its listeners bound.
type Server struct {
	cfg      Config
	log      *slog.Logger
	st       *store.Store
	inv      *inventory.Inventory
	sec      security
	auth     *auth.Auth
	broker   mqttBroker
	httpLn   net.Listener
	httpSrv  *http.Server
	reg      *registry.Registry
	rollouts *rollout.Engine
	ingest   ingest
	baseCtx  context.Context
	stopBase context.CancelFunc

	mu      sync.Mutex
	ran     bool
	closed  bool
	serving bool
}

// New opens the store and binds the HTTP and (embedded) MQTT listeners, so
// their addresses are known before Run. Call Run, or Close if Run will not
// be called.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.MQTTAddr == "" {
		cfg.MQTTAddr = DefaultMQTTAddr
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.closeParts()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	s.st, err = store.Open(filepath.Join(cfg.DataDir, "fleet.db"), store.Options{
		History: cfg.TelemetryHistory, MaxDevices: cfg.MaxDevices, Logger: log.With("component", "store"),
	})
	if err != nil {
		return nil, err
	}
	s.inv, err = inventory.New(ctx, s.st, inventory.Options{Logger: log.With("component", "inventory")})
	if err != nil {
		return nil, err
	}
	if err := s.openSecurity(); err != nil {
		return nil, err
	}
	extTLS, err := s.externalTLS()
	if err != nil {
		return nil, err
	}
	if cfg.MQTTURL != "" {
		// The external broker's retained status messages bring presence up
		// to date once subscribed.
		s.broker, err = broker.NewExternal(broker.ExternalOptions{URL: cfg.MQTTURL, ClientID: mqttClientID(cfg), Group: cfg.MQTTShareGroup, Handler: &s.ingest,
			Username: cfg.Security.MQTTUsername, Password: cfg.Security.MQTTPassword, TLS: extTLS, Logger: log.With("component", "mqtt")})
	} else {
		// A new embedded broker has no connections: whatever the file says
		// about presence is from the previous run.
		if err := s.inv.MarkAllOffline(ctx); err != nil {
			return nil, err
		}
		s.broker, err = broker.NewEmbedded(broker.EmbeddedOptions{Addr: cfg.MQTTAddr, Handler: &s.ingest, Logger: log.With("component", "mqtt"),
			Auth: s.brokerAuth(), TLS: s.sec.tls, Limits: broker.Limits{MaxConnsPerIP: cfg.Security.MQTTMaxConnsPerIP}})
	}
	if err != nil {
		return nil, err
	}

	s.auth, err = auth.Open(auth.Options{DB: s.st.DB(), BcryptCost: cfg.BcryptCost, Logger: log.With("component", "auth")})
	if err != nil {
		return nil, err
	}
	if name, pw, created, err := s.auth.EnsureAdmin(ctx); err != nil {
		return nil, err
	} else if created {
		// Printed once, so a first start is usable without
		// `edgefleet-server init`; the console asks to change it.
		log.Warn("no users yet: created the first admin with a one-time password; log in to the console and change it",
			"user", name, "password", pw.Reveal())
	}

	a := api.New(api.Options{Inventory: s.inv, Ready: s.Ready, Stats: s.Stats, Logger: log.With("component", "api")})
	mux := http.NewServeMux()
	a.Register(mux)

	s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http: listen on %s: %w", cfg.HTTPAddr, err)
	}
	s.httpLn = s.secureListener(s.httpLn)
	if err := s.openRollouts(ctx, mux); err != nil {
		return nil, err
	}
	s.wireEnrollment(mux)
	c, err := console.New(console.Options{Inventory: s.inv, Auth: s.auth, Models: s.reg, Rollouts: s.rollouts, Logger: log.With("component", "console")})
	if err != nil {
		return nil, err
	}
	c.Register(mux)
	s.baseCtx, s.stopBase = context.WithCancel(context.Background())
	s.httpSrv = &http.Server{
		Handler:           limitBody(s.auth.Wrap(mux, publicEnrollment), 1<<20),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
		// Cancelled at shutdown so long-lived requests (the console's event
		// streams) end instead of holding Shutdown until its timeout.
		BaseContext: func(net.Listener) context.Context { return s.baseCtx },
	}
	return s, nil
}

// mqttClientID names the server's session on an external broker: stable
// for this host and data dir, so a restarted server resumes its session,
// and different for another server (another data dir or host).
func mqttClientID(cfg Config) string {
	if cfg.MQTTClientID != "" {
		return cfg.MQTTClientID
	}
	host, _ := os.Hostname()
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		dir = cfg.DataDir
	}
	sum := sha256.Sum256([]byte(dir))
	return fmt.Sprintf("edgefleet-server:%s:%x", host, sum[:4])
}

// limitBody bounds request bodies; the API reads none yet, but later
// endpoints (uploads excepted, which will set their own) inherit the bound.
func limitBody(h http.Handler, n int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if registryUpload(r) {
			h.ServeHTTP(w, r) // the registry bounds uploads itself
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		h.ServeHTTP(w, r)
	})
}

// HTTPAddr is the address the API and console listen on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// HTTPURL is the base URL of the API and console, e.g. http://127.0.0.1:8080.
func (s *Server) HTTPURL() string {
	if s.sec.tls != nil {
		return "https://" + s.HTTPAddr()
	}
	return "http://" + s.HTTPAddr()
}

// MQTTURL is the URL devices connect to: the embedded broker's, or the
// external one's.
func (s *Server) MQTTURL() string { return s.broker.URL() }

// Auth is the server's users, sessions, API tokens and audit log.
func (s *Server) Auth() *auth.Auth { return s.auth }

// Inventory is the server's inventory.
func (s *Server) Inventory() *inventory.Inventory { return s.inv }

// Publish publishes a message to devices at QoS 1 through the broker.
func (s *Server) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	return s.broker.Publish(ctx, topic, payload, retain)
}

// Stats returns the counters of lost or refused device messages.
func (s *Server) Stats() api.Stats {
	st := api.Stats{Rejected: s.inv.Rejected(), DuplicateTelemetry: s.inv.Duplicates()}
	if b, ok := s.broker.(interface{ Stats() map[string]int64 }); ok {
		st.Broker = b.Stats()
	}
	return st
}

// Ready returns nil when the server serves HTTP and its broker is up.
func (s *Server) Ready() error {
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if !serving {
		return ErrNotRunning
	}
	return s.broker.Ready()
}

// Run serves until ctx is done, then shuts down: it stops accepting HTTP
// requests and lets running ones finish, disconnects the broker's clients
// (applying their last wills), persists counters and closes the store.
// It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ran || s.closed {
		s.mu.Unlock()
		return ErrRunOnce
	}
	s.ran = true
	s.mu.Unlock()

	if err := s.broker.Start(ctx); err != nil {
		s.closeParts()
		return err
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- s.httpSrv.Serve(s.httpLn) }()
	rolloutCtx, stopRollouts := context.WithCancel(ctx)
	rolloutDone := make(chan struct{})
	go func() { defer close(rolloutDone); s.rollouts.Run(rolloutCtx) }()
	s.mu.Lock()
	s.serving = true
	s.mu.Unlock()
	s.log.Info("fleet server running", "http", s.HTTPURL(), "mqtt", s.MQTTURL(), "data_dir", s.cfg.DataDir)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpErr:
		runErr = fmt.Errorf("http server: %w", err)
		httpErr = nil
	}
	s.mu.Lock()
	s.serving = false
	s.mu.Unlock()
	s.log.Info("fleet server shutting down")
	stopRollouts()
	<-rolloutDone

	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.stopBase()
	if err := s.httpSrv.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown incomplete; closing connections", "error", err)
		s.httpSrv.Close()
	}
	if httpErr != nil {
		if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			runErr = errors.Join(runErr, fmt.Errorf("http server: %w", err))
		}
	}
	if err := s.closeParts(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr == nil {
		s.log.Info("fleet server stopped")
	}
	return runErr
}

// Close releases everything New acquired; for a Server whose Run was never
// called. After Run it does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	ran := s.ran
	s.mu.Unlock()
	if ran {
		return nil
	}
	return s.closeParts()
}

// closeParts closes in dependency order: the broker first, because closing
// it applies the last wills of its clients through the inventory; then the
// counters and the store.
func (s *Server) closeParts() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	var errs []error
	if s.httpLn != nil {
		s.httpLn.Close() // already closed after Shutdown; harmless then
	}
	if s.stopBase != nil {
		s.stopBase()
	}
	if s.broker != nil {
		if err := s.broker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close broker: %w", err))
		}
	}
	if s.rollouts != nil {
		if err := s.rollouts.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.reg != nil {
		if err := s.reg.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.inv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.inv.Flush(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if s.st != nil {
		if err := s.st.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
