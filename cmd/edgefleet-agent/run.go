package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	"github.com/edgefleet/edgefleet/agent/serve"
	"github.com/edgefleet/edgefleet/agent/telemetry"
)

func init() {
	register("run", "connect to the fleet and serve (default)", runAgent)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// env returns $EDGEFLEET_<name>, or def. Flags given on the command line
// override it: flag defaults come from here.
func env(name, def string) string {
	if v, ok := os.LookupEnv("EDGEFLEET_" + name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := env(name, ""); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// envBool is true when $EDGEFLEET_<name> is 1, true, yes or on.
func envBool(name string) bool {
	switch strings.ToLower(env(name, "")) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// envListFlag collects a repeated flag; its initial values come from a
// comma-separated environment variable and are replaced, not extended, by
// the first use of the flag.
type envListFlag struct {
	vals []string
	set  bool
}

func (l *envListFlag) String() string { return strings.Join(l.vals, ",") }
func (l *envListFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	l.vals = append(l.vals, v)
	return nil
}

func envList(name string) *envListFlag {
	l := &envListFlag{}
	if v := env(name, ""); v != "" {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				l.vals = append(l.vals, s)
			}
		}
	}
	return l
}

// commonFlags are shared by run and backends: what decides the profile
// and the backends.
type commonFlags struct {
	root, arch, profilesDir, logLevel string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.profilesDir, "profiles-dir", env("PROFILES_DIR", ""), "read firmware profiles (*.yaml) from this directory instead of the built-in ones [EDGEFLEET_PROFILES_DIR]")
	fs.StringVar(&c.root, "hw-root", env("HW_ROOT", "/"), "probe hardware facts under this root (testing) [EDGEFLEET_HW_ROOT]")
	fs.StringVar(&c.arch, "hw-arch", env("HW_ARCH", ""), "architecture to assume when probing --hw-root (default: this binary's) [EDGEFLEET_HW_ARCH]")
	fs.StringVar(&c.logLevel, "log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error [EDGEFLEET_LOG_LEVEL]")
}

func (c *commonFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func (c *commonFlags) device() (hw.Facts, []*profiles.Profile, error) {
	facts := hw.Probe()
	if c.root != "/" || c.arch != "" {
		arch := c.arch
		if arch == "" {
			arch = facts.Arch
		}
		facts = hw.ProbeFS(os.DirFS(c.root), arch)
	}
	var (
		ps  []*profiles.Profile
		err error
	)
	if c.profilesDir != "" {
		ps, err = profiles.Load(os.DirFS(c.profilesDir))
	} else {
		ps, err = profiles.Builtin()
	}
	return facts, ps, err
}

func runAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("edgefleet-agent run", flag.ContinueOnError)
	var (
		c        commonFlags
		server   = fs.String("server", env("SERVER", "tcp://127.0.0.1:1883"), "fleet MQTT broker URL [EDGEFLEET_SERVER]")
		stateDir = fs.String("state-dir", env("STATE_DIR", "/var/lib/edgefleet-agent"), "directory of the agent's state (device id, queue) [EDGEFLEET_STATE_DIR]")
		deviceID = fs.String("device-id", env("DEVICE_ID", ""), "device id (default: generated once and kept in the state) [EDGEFLEET_DEVICE_ID]")
		interval = fs.Duration("telemetry-interval", envDuration("TELEMETRY_INTERVAL", 10*time.Second), "length of a telemetry window [EDGEFLEET_TELEMETRY_INTERVAL]")
		qWindows = fs.Int("queue-windows", telemetry.DefaultLimits.MaxWindows, "telemetry windows kept while offline")
		qBytes   = fs.Int64("queue-bytes", telemetry.DefaultLimits.MaxBytes, "bytes of telemetry kept while offline")
		fleetKey = fs.String("fleet-key", env("FLEET_KEY", ""), "the fleet server's ed25519 public key, base64 (GET /api/v1/signing-key); when set, the agent applies model updates signed with it [EDGEFLEET_FLEET_KEY]")
		window   = fs.Duration("health-window", envDuration("HEALTH_WINDOW", 0), "how long a new model version is watched before it is kept (default 1m) [EDGEFLEET_HEALTH_WINDOW]")
		apiAddr  = fs.String("api-addr", env("API_ADDR", "127.0.0.1:8470"), "local inference API address, loopback only; \"-\" turns TCP off [EDGEFLEET_API_ADDR]")
		apiSock  = fs.String("api-socket", env("API_SOCKET", ""), "also serve the local inference API on this unix socket (mode 0660), e.g. /run/edgefleet-agent/infer.sock [EDGEFLEET_API_SOCKET]")
		apiOff   = fs.Bool("no-api", envBool("NO_API"), "do not serve the local inference API [EDGEFLEET_NO_API]")
		labels   = envList("LABELS")
		models   = envList("MODELS")
	)
	c.register(fs)
	fs.Var(labels, "label", "label `key=value` reported to the fleet; repeatable [EDGEFLEET_LABELS=k=v,k2=v2]")
	fs.Var(models, "model", "model to serve, `name=version=path`; repeatable [EDGEFLEET_MODELS]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := c.logger()
	if err != nil {
		return err
	}
	facts, ps, err := c.device()
	if err != nil {
		return err
	}
	cfg := agent.Config{
		BrokerURL:         *server,
		DeviceID:          *deviceID,
		StateDir:          *stateDir,
		Labels:            map[string]string{},
		TelemetryInterval: *interval,
		QueueLimits:       telemetry.Limits{MaxWindows: *qWindows, MaxBytes: *qBytes},
		AgentVersion:      version,
		Profiles:          ps,
		Facts:             &facts,
		Logger:            log,
	}
	if *fleetKey != "" {
		k, err := base64.StdEncoding.DecodeString(*fleetKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("--fleet-key: want the %d-byte ed25519 public key in base64, as GET /api/v1/signing-key gives it", ed25519.PublicKeySize)
		}
		cfg.FleetKey = k
	}
	if !*apiOff {
		cfg.API = &serve.Options{Addr: *apiAddr, Socket: *apiSock}
	}
	// Also for a key that comes from enrolment below.
	cfg.Health.Window = *window
	for _, l := range labels.vals {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: want key=value", l)
		}
		cfg.Labels[k] = v
	}
	for _, m := range models.vals {
		parts := strings.SplitN(m, "=", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return fmt.Errorf("--model %q: want name=version=path", m)
		}
		cfg.Models = append(cfg.Models, agent.ModelSpec{Name: parts[0], Version: parts[1], Path: parts[2]})
	}
	// An enrolled agent connects where enrolment said; EDGEFLEET_SERVER
	// (set in the package's agent.env) does not override that, only an
	// explicit --server does.
	serverSet := false
	fs.Visit(func(f *flag.Flag) { serverSet = serverSet || f.Name == "server" })
	if enrolled, err := applyCredentials(&cfg, serverSet); err != nil {
		return err
	} else if enrolled {
		*server = cfg.BrokerURL
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	log.Info("edgefleet-agent starting", "device", a.ID(), "profile", a.Profile().Name, "server", *server, "version", version)
	sd := newNotifier(log)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		sd.watch(wctx, watchdogInterval(), func(ctx context.Context) error {
			_, err := a.Stats(ctx) // the state store and the agent answer
			return err
		})
	}()
	sd.send("READY=1")
	err = a.Run(ctx)
	sd.send("STOPPING=1")
	stopWatch()
	<-watched
	return err
}
