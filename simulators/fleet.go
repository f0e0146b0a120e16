package simulators

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/agent/update"
)

// Model is a model every simulated device serves.
type Model struct {
	Name, Version string
	// Behavior; nil means DefaultBehavior (or the backend's override).
	Behavior *Behavior
}

// Config configures a simulated fleet.
type Config struct {
	// Devices is how many devices to run.
	Devices int
	// BrokerURL is the fleet's broker, tcp://host:port.
	BrokerURL string
	// Seed makes the fleet reproducible: ids, hardware, labels, start
	// order and inference latencies.
	Seed uint64
	// IDPrefix starts every device id; default "sim-".
	IDPrefix string
	// TelemetryInterval of every agent; default 5 s.
	TelemetryInterval time.Duration
	// Ramp spreads the starts: device i starts at about i·Ramp/Devices,
	// jittered. Zero starts all at once.
	Ramp time.Duration
	// Rate is inferences per second per device; 0 means none.
	Rate float64
	// Models every device serves; default one "demo-kws" 1.0.0.
	Models []Model
	// Behaviors by "name@version" override the models' behaviors.
	Behaviors map[string]Behavior
	// QueueLimits of each agent; default 30 windows or 32 KiB, since
	// simulated devices keep their queue in memory: a long broker outage
	// then costs at most 320 MiB across 10,000 devices.
	QueueLimits telemetry.Limits
	// ReconnectMin and ReconnectMax of each agent; defaults 500 ms, 10 s.
	ReconnectMin, ReconnectMax time.Duration
	// Dial, when set, opens every device's broker connection.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives the fleet's logs and, at Debug, the agents'; nil
	// discards.
	Logger *slog.Logger

	// FleetKey, when set, makes every device apply the desired deployments
	// the fleet publishes, through the real update engine (agent/update)
	// with the simulated backends: manifests must be signed with this key
	// (the server's registry public key).
	FleetKey ed25519.PublicKey
	// UpdateRoot holds each device's model slots, one directory per
	// device; default a temporary directory removed when Run returns. The
	// update engine syncs every artifact to disk as a real device must;
	// a tmpfs (/dev/shm) makes that free. BenchmarkFleetUpdate compares
	// both side by side.
	UpdateRoot string
	// Health is every device's update health window policy; zero values
	// take update.HealthPolicy's defaults.
	Health update.HealthPolicy
	// UpdateHTTPClient downloads artifacts for every device; nil means one
	// shared client, so a thousand devices share a connection pool.
	UpdateHTTPClient *http.Client

	// Credentials, when set, gives each device its MQTT username and
	// password before it starts (a server with --mqtt-auth=required
	// refuses anonymous devices): enrolment with a multi-use token
	// (edgefleet-sim --enroll-token), or fleettest's Provision.
	// A non-nil TLS config it returns (the CA pinned at enrolment)
	// replaces Config.TLS for that device.
	Credentials func(ctx context.Context, deviceID string) (username, password string, tls *tls.Config, err error)
	// TLS is every device's TLS configuration for a tls:// broker.
	TLS *tls.Config
}

// MaxDevices bounds a fleet; past it one process is the wrong tool.
const MaxDevices = 100_000

// Fleet is a set of simulated devices.
type Fleet struct {
	cfg Config
	// backends impersonate the real ones by name, so a simulated device
	// reports the backends its profile offers and the fleet's
	// compatibility rules treat it like a real one; their version says
	// they are simulated.
	backends map[string]*Backend
	profiles []*profiles.Profile
	models   []agent.ModelSpec // shared by every device; bytes immutable
	input    []runtime.Tensor  // shared, read-only

	mu     sync.Mutex
	agents []*agent.Agent
}

// New checks the configuration and prepares what devices share.
func New(cfg Config) (*Fleet, error) {
	if cfg.Devices < 1 || cfg.Devices > MaxDevices {
		return nil, fmt.Errorf("%w: %d devices; want 1 to %d", ErrConfig, cfg.Devices, MaxDevices)
	}
	if cfg.BrokerURL == "" {
		return nil, fmt.Errorf("%w: no broker URL", ErrConfig)
	}
	if cfg.Rate < 0 || cfg.Rate > 1000 {
		return nil, fmt.Errorf("%w: rate %v per device per second; want 0 to 1000", ErrConfig, cfg.Rate)
	}
	if cfg.Ramp < 0 {
		return nil, fmt.Errorf("%w: negative ramp %v", ErrConfig, cfg.Ramp)
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = "sim-"
	}
	if cfg.TelemetryInterval == 0 {
		cfg.TelemetryInterval = 5 * time.Second
	}
	if cfg.QueueLimits == (telemetry.Limits{}) {
		cfg.QueueLimits = telemetry.Limits{MaxWindows: 30, MaxBytes: 32 << 10}
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 500 * time.Millisecond
	}
	if cfg.ReconnectMax == 0 {
		cfg.ReconnectMax = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Models) == 0 {
		cfg.Models = []Model{{Name: "demo-kws", Version: "1.0.0"}}
	}
	backends := map[string]*Backend{}
	for name, format := range map[string]string{"tflite": "tflite", "onnxruntime": "onnx"} {
		b, err := NewBackend(BackendConfig{Name: name, Formats: []string{format}, Behaviors: cfg.Behaviors, Seed: cfg.Seed})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		backends[name] = b
	}
	ps, err := profiles.Builtin()
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, backends: backends, profiles: ps, input: Input()}
	for _, m := range cfg.Models {
		f.models = append(f.models, agent.ModelSpec{
			Name: m.Name, Version: m.Version, Format: "tflite",
			Bytes: ModelFile{Name: m.Name, Version: m.Version, Behavior: m.Behavior}.Encode(),
		})
	}
	return f, nil
}

// backendsFor returns the simulated backends the device's profile offers,
// in its order of preference.
func (f *Fleet) backendsFor(facts *hw.Facts) []runtime.Backend {
	var out []runtime.Backend
	if p, err := hw.Match(*facts, f.profiles); err == nil {
		for _, name := range p.BackendNames() {
			if b, ok := f.backends[name]; ok {
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		out = append(out, f.backends["tflite"])
	}
	return out
}

// DeviceID returns the id of device i.
func (f *Fleet) DeviceID(i int) string { return fmt.Sprintf("%s%05d", f.cfg.IDPrefix, i) }

// Labels returns the labels of device i: a site (ten of them), a ring
// (5 % canary) and the simulator mark, all deterministic.
func (f *Fleet) Labels(i int) map[string]string {
	ring := "main"
	if i%20 == 0 {
		ring = "canary"
	}
	return map[string]string{"site": fmt.Sprintf("plant-%d", i%10), "ring": ring, "simulated": "true"}
}

// Agents returns the devices started so far.
func (f *Fleet) Agents() []*agent.Agent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*agent.Agent(nil), f.agents...)
}

// Run starts the devices along the ramp and runs them until ctx is done,
// then stops every device and its workload and waits for them. It returns
// an error only if a device could not be built.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := rand.New(rand.NewPCG(f.cfg.Seed, 0x5eed))
	var wg sync.WaitGroup
	// tmpRoot and ownClient are what Run made for updates; they go once
	// every device has stopped.
	var (
		tmpRoot   string
		ownClient *http.Client
	)
	defer func() {
		cancel()
		wg.Wait()
		for _, a := range f.Agents() {
			a.Close()
		}
		if tmpRoot != "" {
			os.RemoveAll(tmpRoot)
		}
		if ownClient != nil {
			ownClient.CloseIdleConnections()
		}
	}()
	updateRoot, httpClient := f.cfg.UpdateRoot, f.cfg.UpdateHTTPClient
	if len(f.cfg.FleetKey) > 0 {
		if updateRoot == "" {
			dir, err := os.MkdirTemp("", "edgefleet-sim-")
			if err != nil {
				return fmt.Errorf("simulated devices' update directory: %w", err)
			}
			tmpRoot, updateRoot = dir, dir
		}
		if httpClient == nil {
			httpClient = &http.Client{Transport: &http.Transport{
				Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64,
				ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 30 * time.Second,
			}}
			ownClient = httpClient
		}
	}
	start := time.Now()
	for i := 0; i < f.cfg.Devices; i++ {
		facts := PickHardware(r)
		jitter := 0.0
		if f.cfg.Ramp > 0 {
			jitter = r.Float64()
		}
		if f.cfg.Ramp > 0 {
			at := start.Add(time.Duration((float64(i) + jitter) / float64(f.cfg.Devices) * float64(f.cfg.Ramp)))
			t := time.NewTimer(time.Until(at))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		user, pass, tlsCfg := "", "", f.cfg.TLS
		if f.cfg.Credentials != nil {
			u, p, t, err := f.cfg.Credentials(ctx, f.DeviceID(i))
			if err != nil {
				return fmt.Errorf("simulated device %d: credentials: %w", i, err)
			}
			user, pass = u, p
			if t != nil {
				tlsCfg = t
			}
		}
		a, err := agent.New(agent.Config{
			Username:          user,
			Password:          pass,
			TLS:               tlsCfg,
			BrokerURL:         f.cfg.BrokerURL,
			DeviceID:          f.DeviceID(i),
			Store:             state.NewMemory(),
			Labels:            f.Labels(i),
			TelemetryInterval: f.cfg.TelemetryInterval,
			QueueLimits:       f.cfg.QueueLimits,
			AgentVersion:      "sim",
			Profiles:          f.profiles,
			Facts:             facts,
			Backends:          f.backendsFor(facts),
			Models:            f.models,
			MaxSessions:       1,
			Sampler:           simSampler{facts.MemoryBytes},
			Dial:              f.cfg.Dial,
			ReconnectMin:      f.cfg.ReconnectMin,
			ReconnectMax:      f.cfg.ReconnectMax,
			Logger:            f.cfg.Logger,
			FleetKey:          f.cfg.FleetKey,
			UpdateDir:         deviceUpdateDir(updateRoot, f.DeviceID(i)),
			Health:            f.cfg.Health,
			UpdateHTTPClient:  httpClient,
		})
		if err != nil {
			return fmt.Errorf("simulated device %d: %w", i, err)
		}
		f.mu.Lock()
		f.agents = append(f.agents, a)
		f.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				f.cfg.Logger.Error("simulated device stopped", "device", a.ID(), "err", err)
			}
		}()
		if f.cfg.Rate > 0 {
			wg.Add(1)
			seed := r.Uint64()
			go func() {
				defer wg.Done()
				f.workload(ctx, a, seed)
			}()
		}
	}
	f.cfg.Logger.Info("simulated fleet started", "devices", f.cfg.Devices, "took", time.Since(start).Round(time.Millisecond))
	<-ctx.Done()
	return nil
}

// workload calls Infer as a Poisson process of the configured rate,
// round-robin over the models.
func (f *Fleet) workload(ctx context.Context, a *agent.Agent, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	out := []runtime.Tensor{{}}
	t := time.NewTimer(time.Duration(r.ExpFloat64() / f.cfg.Rate * float64(time.Second)))
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m := f.models[n%len(f.models)]
		// Errors are the point of some simulations; the agent counts them.
		_ = a.Infer(ctx, m.Name, f.input, out)
		t.Reset(time.Duration(r.ExpFloat64() / f.cfg.Rate * float64(time.Second)))
	}
}

func deviceUpdateDir(root, id string) string {
	if root == "" {
		return ""
	}
	return filepath.Join(root, id)
}
