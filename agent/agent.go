// Package agent is the edgefleet agent as a library: it connects a gateway
// to the fleet over MQTT, announces what the device is and runs, serves
// inference through Infer with the backends of agent/runtime, measures it,
// and delivers numbered telemetry windows through a persistent queue that
// rides out broker outages.
//
// The command edgefleet-agent, the simulator and the tests all drive this
// same code; what differs is injected through Config: the clock, the
// hardware facts, the inference backends, the state store and the network
// dialer.
package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"

	"github.com/edgefleet/edgefleet/agent/hw"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/agent/update"
	"github.com/edgefleet/edgefleet/proto"
)

// Store is the agent's local state; state.Bolt and state.Memory implement it.
type Store interface {
	telemetry.QueueStore
	DeviceID(ctx context.Context, want string) (string, error)
	NextSession(ctx context.Context) (uint64, error)
	NextTelemetrySeq(ctx context.Context) (uint64, error)
	Models(ctx context.Context) ([]state.Model, error)
	SetModels(ctx context.Context, models []state.Model) error
	Close() error
}

// Config is everything an agent is built from. Zero values take the
// defaults documented on each field.
type Config struct {
	// BrokerURL is the fleet's MQTT broker, tcp://host:port.
	BrokerURL string
	// DeviceID names the device; empty means the one in the state, or a
	// new one generated once and kept there.
	DeviceID string
	// StateDir holds the bbolt state file. Ignored when Store is set.
	StateDir string
	// Store replaces the state directory (the simulator passes a
	// state.Memory). The caller keeps ownership: Close does not close it.
	Store Store
	// Labels are reported in hello; the fleet selects devices by them.
	Labels map[string]string
	// TelemetryInterval is the length of a telemetry window; default 10 s.
	TelemetryInterval time.Duration
	// QueueLimits bound the offline telemetry queue; default
	// telemetry.DefaultLimits.
	QueueLimits telemetry.Limits
	// AgentVersion is reported in hello.
	AgentVersion string
	// Profiles are the firmware profiles to match; nil means the built-in
	// ones.
	Profiles []*profiles.Profile
	// Facts are the hardware facts; nil means probe this machine.
	Facts *hw.Facts
	// Backends are the inference backends to use; nil means every
	// registered backend, configured with the matched profile's settings.
	Backends []runtime.Backend
	// Models are served from start.
	Models []ModelSpec
	// MaxSessions bounds the concurrent inferences per model; default
	// cores-1, at least 1, at most 8: the gateway's cores belong to its
	// applications first.
	MaxSessions int
	// Clock is the time source; nil means the system clock.
	Clock Clock
	// Sampler reads process and system figures; nil means /proc.
	Sampler telemetry.Sampler
	// Dial opens the network connection to the broker; nil means a
	// net.Dialer. Tests inject one to cut connections abruptly.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ReconnectMin and ReconnectMax bound the exponential reconnect
	// backoff; defaults 500 ms and 30 s. Each wait is jittered.
	ReconnectMin, ReconnectMax time.Duration
	// ConnectTimeout bounds one connection attempt; default 10 s.
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for one PUBACK; default 10 s.
	PublishTimeout time.Duration
	// KeepAlive is the MQTT keepalive; default 30 s.
	KeepAlive time.Duration
	// OnDesired, when set, receives every valid desired deployment for
	// this device, in the order they arrive (the update engine hooks in
	// here). The retained one arrives again after every reconnect, so
	// compare generations. It is called from the connection's goroutine and must return
	// quickly: hand the work to a goroutine of your own.
	OnDesired func(ctx context.Context, d *proto.DesiredDeployment)
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger

	// FleetKey is the fleet server's pinned ed25519 public key. When set,
	// the agent applies desired deployments itself (agent/update): only
	// manifests signed with this key are installed.
	FleetKey ed25519.PublicKey
	// UpdateDir holds the A/B model slots and partial downloads; default
	// StateDir/models. The simulator gives each device its own.
	UpdateDir string
	// Health is the update health window policy; zero values take the
	// defaults of update.HealthPolicy.
	Health update.HealthPolicy
	// UpdateHTTPClient downloads artifacts; nil means one with connect and
	// header timeouts.
	UpdateHTTPClient *http.Client
	// API, when set, makes Run serve the local inference API (agent/serve)
	// with these options, over the same models as Infer. Its Observer is
	// the agent's own.
	API *serve.Options

	// Username and Password are the MQTT credentials from enrolment
	// (agent/enroll: the device id and its secret); empty connects
	// anonymously, which a server with --mqtt-auth=required refuses.
	Username string
	Password string
	// TLS configures a tls:// broker connection (the CA pinned at
	// enrolment); nil means the system roots.
	TLS *tls.Config
}

// ModelSpec is a model to serve.
type ModelSpec struct {
	Name    string
	Version string
	// Format is "tflite" or "onnx"; empty means from Path's extension.
	Format string
	// Backend forces a backend by name; empty means the profile's first
	// available backend that runs the format.
	Backend string
	// Bytes is the model; when nil it is read from Path.
	Bytes []byte
	Path  string
}

// maxModelFileBytes bounds a model file read from disk before the
// profile's memory budget is even considered.
const maxModelFileBytes = 1 << 30

// Agent is one device's agent. Build it with New, run it with Run, and
// Close it when Run has returned.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	clock     Clock
	id        string
	store     Store
	ownStore  bool
	facts     hw.Facts
	profile   *profiles.Profile
	backends  []runtime.Backend
	hello     []*proto.Backend // every backend with its availability, for hello
	queue     *telemetry.Queue
	rec       *telemetry.Recorder
	sampler   telemetry.Sampler
	brokerURL *url.URL

	mu     sync.RWMutex
	models map[string]*loadedModel
	closed bool

	// installed are the configured models as recorded in the state; upd,
	// when the fleet key is set, applies desired deployments, and jobs
	// queues its progress for the broker.
	installed []state.Model
	upd       *update.Updater
	updClient *http.Client // the artifact client the agent made, if any
	jobs      chan *proto.JobProgress
	helloDue  atomic.Bool // a job finished: say hello again with the models
	api       *serve.Server

	running   atomic.Bool
	connected atomic.Bool
	session   atomic.Uint64
	connects  atomic.Uint64
	sent      atomic.Uint64
}

// New builds an agent: it opens the state, matches the hardware to a
// firmware profile, sets up the backends and loads the configured models.
// Nothing touches the network until Run.
func New(cfg Config) (_ *Agent, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, rec: telemetry.NewRecorder(), sampler: cfg.Sampler, models: map[string]*loadedModel{}}
	a.brokerURL, err = parseBroker(cfg.BrokerURL)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	a.store = cfg.Store
	if a.store == nil {
		b, err := state.OpenBolt(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		a.store, a.ownStore = b, true
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.id, err = a.store.DeviceID(ctx, cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("device id: %w", err)
	}
	if err := proto.ValidateDeviceID(a.id); err != nil {
		return nil, fmt.Errorf("%w: device id: %v", ErrConfig, err)
	}
	a.log = a.log.With("device", a.id)
	if cfg.Facts != nil {
		a.facts = *cfg.Facts
	} else {
		a.facts = hw.Probe()
	}
	ps := cfg.Profiles
	if ps == nil {
		if ps, err = profiles.Builtin(); err != nil {
			return nil, err
		}
	}
	if a.profile, err = hw.Match(a.facts, ps); err != nil {
		return nil, err
	}
	a.setupBackends()
	if a.queue, err = telemetry.NewQueue(a.store, cfg.QueueLimits, a.log); err != nil {
		return nil, err
	}
	if err := a.loadModels(ctx); err != nil {
		return nil, err
	}
	if err := a.setupUpdater(ctx); err != nil {
		return nil, err
	}
	if err := a.setupAPI(); err != nil {
		return nil, err
	}
	a.log.Debug("agent ready", "profile", a.profile.Name, "models", len(a.models))
	return a, nil
}

func (c *Config) defaults() error {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.Sampler == nil {
		c.Sampler = &telemetry.ProcSampler{Now: c.Clock.Now}
	}
	if c.TelemetryInterval == 0 {
		c.TelemetryInterval = 10 * time.Second
	}
	if c.TelemetryInterval < 10*time.Millisecond {
		return fmt.Errorf("%w: telemetry interval %v is below 10ms", ErrConfig, c.TelemetryInterval)
	}
	if c.QueueLimits == (telemetry.Limits{}) {
		c.QueueLimits = telemetry.DefaultLimits
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 500 * time.Millisecond
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 30 * time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		return fmt.Errorf("%w: reconnect max %v is below min %v", ErrConfig, c.ReconnectMax, c.ReconnectMin)
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.Store == nil && c.StateDir == "" {
		return fmt.Errorf("%w: no state directory (and no Store)", ErrConfig)
	}
	if len(c.Labels) > proto.MaxLabels {
		return fmt.Errorf("%w: %d labels, limit %d", ErrConfig, len(c.Labels), proto.MaxLabels)
	}
	for k, v := range c.Labels {
		if k == "" || len(k) > proto.MaxLabelKeyLen {
			return fmt.Errorf("%w: label key %q must be 1 to %d bytes", ErrConfig, k, proto.MaxLabelKeyLen)
		}
		if len(v) > proto.MaxLabelValueLen {
			return fmt.Errorf("%w: label %q value is %d bytes, limit %d", ErrConfig, k, len(v), proto.MaxLabelValueLen)
		}
	}
	if len(c.Models) > proto.MaxModels {
		return fmt.Errorf("%w: %d models, limit %d", ErrConfig, len(c.Models), proto.MaxModels)
	}
	return nil
}

func parseBroker(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: no broker URL", ErrConfig)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: broker URL %q: %v", ErrConfig, s, err)
	}
	scheme, port := "tcp", "1883"
	switch u.Scheme {
	case "tcp", "mqtt":
	case "tls", "ssl", "mqtts":
		scheme, port = "tls", "8883"
	default:
		return nil, fmt.Errorf("%w: broker URL %q: scheme %q is not tcp:// or tls://", ErrConfig, s, u.Scheme)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	u.Scheme = scheme
	return u, nil
}

// setupBackends builds the backend list and records for hello why any is
// unavailable.
func (a *Agent) setupBackends() {
	if a.cfg.Backends != nil {
		a.backends = append(a.backends, a.cfg.Backends...)
	} else {
		a.backends = ProfileBackends(a.profile, a.log)
	}
	for _, b := range a.backends {
		st := StatusOf(b)
		a.hello = append(a.hello, &proto.Backend{Name: st.Name, Version: st.Version, Available: st.Available, Reason: st.Reason, Formats: st.Formats})
	}
}

// ProfileBackends returns every backend registered in this binary,
// configured with the profile's settings, the profile's preferred ones
// first. Backends the profile offers but the binary lacks are left out.
func ProfileBackends(p *profiles.Profile, log *slog.Logger) []runtime.Backend {
	var out []runtime.Backend
	seen := map[string]bool{}
	for _, name := range append(p.BackendNames(), runtime.Names()...) {
		if seen[name] {
			continue
		}
		seen[name] = true
		b, err := runtime.New(name, runtime.Config{Settings: p.Settings(name), Logger: log})
		if err != nil {
			continue
		}
		out = append(out, b)
	}
	return out
}

// StatusOf asks a backend whether it can run here.
func StatusOf(b runtime.Backend) BackendStatus {
	st := BackendStatus{Name: b.Name(), Version: b.Version(), Formats: b.Formats(), Available: true}
	if err := b.Available(); err != nil {
		st.Available, st.Reason = false, truncate(err.Error(), proto.MaxStringLen)
	}
	return st
}

// BackendStatus is one backend as the agent sees it.
type BackendStatus struct {
	Name, Version string
	Formats       []string
	Available     bool
	Reason        string
}

// Backends lists the agent's backends, preferred first, with availability.
func (a *Agent) Backends() []BackendStatus {
	out := make([]BackendStatus, len(a.hello))
	for i, b := range a.hello {
		out[i] = BackendStatus{Name: b.Name, Version: b.Version, Formats: b.Formats, Available: b.Available, Reason: b.Reason}
	}
	return out
}

func (a *Agent) loadModels(ctx context.Context) error {
	budget := int64(a.profile.ModelMemoryMB) << 20
	var used int64
	var installed []state.Model
	for i, spec := range a.cfg.Models {
		if spec.Name == "" || spec.Version == "" {
			return fmt.Errorf("%w: model %d needs a name and a version", ErrConfig, i)
		}
		if _, dup := a.models[spec.Name]; dup {
			return fmt.Errorf("%w: model %q configured twice", ErrConfig, spec.Name)
		}
		data := spec.Bytes
		if data == nil {
			if spec.Path == "" {
				return fmt.Errorf("%w: model %s has neither bytes nor a path", ErrConfig, spec.Name)
			}
			var err error
			if data, err = readModel(spec.Path); err != nil {
				return fmt.Errorf("model %s: %w", spec.Name, err)
			}
		}
		if spec.Format == "" {
			spec.Format = strings.TrimPrefix(filepath.Ext(spec.Path), ".")
		}
		if spec.Format == "" {
			return fmt.Errorf("%w: model %s has no format and its path has no extension", ErrConfig, spec.Name)
		}
		used += int64(len(data))
		if used > budget {
			return fmt.Errorf("%w: models take %d MiB, over the %s profile's budget of %d MiB", ErrConfig, used>>20, a.profile.Name, a.profile.ModelMemoryMB)
		}
		b, err := a.pickBackend(spec)
		if err != nil {
			return err
		}
		m, err := b.Open(ctx, data, runtime.Options{Threads: a.profile.Threads, Logger: a.log})
		if err != nil {
			return fmt.Errorf("load model %s %s with %s: %w", spec.Name, spec.Version, b.Name(), err)
		}
		sum := sha256.Sum256(data)
		a.models[spec.Name] = newLoadedModel(spec.Name, spec.Version, b.Name(), m, a.maxSessions())
		installed = append(installed, state.Model{
			Name: spec.Name, Version: spec.Version, Format: spec.Format, Backend: b.Name(),
			SHA256: hex.EncodeToString(sum[:]), SizeBytes: uint64(len(data)), Active: true, Slot: "a",
		})
	}
	a.installed = installed
	if len(installed) > 0 {
		if err := a.store.SetModels(ctx, installed); err != nil {
			return fmt.Errorf("record installed models: %w", err)
		}
	}
	return nil
}

func readModel(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxModelFileBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrConfig, path, fi.Size(), maxModelFileBytes)
	}
	return os.ReadFile(path)
}

func (a *Agent) pickBackend(spec ModelSpec) (runtime.Backend, error) {
	var reasons []string
	for _, b := range a.backends {
		if spec.Backend != "" && b.Name() != spec.Backend {
			continue
		}
		if !runsFormat(b, spec.Format) {
			continue
		}
		if err := b.Available(); err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", b.Name(), err))
			continue
		}
		return b, nil
	}
	why := "none runs it"
	if len(reasons) > 0 {
		why = strings.Join(reasons, "; ")
	}
	if spec.Backend != "" {
		return nil, fmt.Errorf("%w: %s (%s) needs backend %q: %s", ErrNoBackend, spec.Name, spec.Format, spec.Backend, why)
	}
	return nil, fmt.Errorf("%w: %s is %s and %s", ErrNoBackend, spec.Name, spec.Format, why)
}

func runsFormat(b runtime.Backend, format string) bool {
	for _, f := range b.Formats() {
		if f == format {
			return true
		}
	}
	return false
}

func (a *Agent) maxSessions() int {
	if a.cfg.MaxSessions > 0 {
		return a.cfg.MaxSessions
	}
	return min(max(a.facts.Cores-1, 1), 8)
}

// Recorder is where inference figures for the telemetry windows go. Infer
// records into it; the local inference API (agent/serve) records its own
// requests, rejects and errors into it too, so the fleet sees one set of
// figures per model version.
func (a *Agent) Recorder() *telemetry.Recorder { return a.rec }

// ID is the device id.
func (a *Agent) ID() string { return a.id }

// Profile is the matched firmware profile.
func (a *Agent) Profile() *profiles.Profile { return a.profile }

// Facts are the device's hardware facts.
func (a *Agent) Facts() hw.Facts { return a.facts }

// Stats is a snapshot of the agent's connection and queue.
type Stats struct {
	Connected bool
	// Session is the session number of the current (or last) connection.
	Session uint64
	// Connects counts successful connections since New.
	Connects uint64
	// WindowsSent counts telemetry windows acknowledged by the broker.
	WindowsSent uint64
	Queue       telemetry.QueueStats
}

// Stats returns a snapshot.
func (a *Agent) Stats(ctx context.Context) (Stats, error) {
	q, err := a.queue.Stats(ctx)
	if err != nil {
		return Stats{}, err
	}
	return Stats{
		Connected: a.connected.Load(), Session: a.session.Load(), Connects: a.connects.Load(),
		WindowsSent: a.sent.Load(), Queue: q,
	}, nil
}

// Close releases the models and, when the agent opened it, the state. Call
// it after Run has returned.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	models := a.models
	a.models = nil
	a.mu.Unlock()
	a.running.Store(true) // a closed agent never runs
	var errs []error
	if a.api != nil {
		errs = append(errs, a.api.Close())
	}
	if a.upd != nil {
		errs = append(errs, a.upd.Close())
	}
	for _, m := range models {
		errs = append(errs, m.close())
	}
	if a.ownStore && a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
