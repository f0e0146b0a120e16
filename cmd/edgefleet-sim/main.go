// Command edgefleet-sim runs a fleet of simulated gateways in one process:
// each is the real edgefleet agent with simulated hardware (a mix of the
// firmware profiles), an in-memory state and a simulated inference backend.
//
//	edgefleet-sim --devices 20 --server tcp://127.0.0.1:1883 [--seed S]
//	    [--telemetry-interval 5s] [--ramp 2s] [--rate 2]
//	    [--model name=version ...] [--behavior name@version=p50,p95,errors ...]
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgefleet/edgefleet/simulators"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "edgefleet-sim: %v\n", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv("EDGEFLEET_" + name); ok {
		return v
	}
	return def
}

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("edgefleet-sim", flag.ContinueOnError)
	devices := fs.Int("devices", 20, "number of simulated devices")
	server := fs.String("server", env("SERVER", "tcp://127.0.0.1:1883"), "fleet MQTT broker URL [EDGEFLEET_SERVER]")
	seed := fs.Uint64("seed", 1, "seed for ids, hardware mix, labels and latencies")
	prefix := fs.String("id-prefix", "sim-", "prefix of the device ids")
	interval := fs.Duration("telemetry-interval", 5*time.Second, "telemetry window of every device")
	ramp := fs.Duration("ramp", 2*time.Second, "spread the device starts over this long, jittered")
	rate := fs.Float64("rate", 2, "inferences per second per device")
	logLevel := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error [EDGEFLEET_LOG_LEVEL]")
	fleetKey := fs.String("fleet-key", env("FLEET_KEY", ""), "the fleet server's ed25519 public key, base64 (GET /api/v1/signing-key); when set, devices apply the model updates the fleet rolls out [EDGEFLEET_FLEET_KEY]")
	window := fs.Duration("health-window", 0, "how long a device watches a new model version before keeping it (default: the agent's)")
	var models, behaviors repeated
	var enr enrollFlags
	enr.register(fs)
	fs.Var(&models, "model", "model every device serves, `name=version`; repeatable (default demo-kws=1.0.0)")
	fs.Var(&behaviors, "behavior", "behavior of a model version, `name@version=p50,p95,error_rate` (e.g. kws@3.0.0=4ms,8ms,0.3); repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg := simulators.Config{
		Devices: *devices, BrokerURL: *server, Seed: *seed, IDPrefix: *prefix,
		TelemetryInterval: *interval, Ramp: *ramp, Rate: *rate, Logger: log,
		Behaviors: map[string]simulators.Behavior{},
	}
	enr.apply(&cfg)
	if *fleetKey != "" {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(*fleetKey))
		if err != nil || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("--fleet-key: want the %d-byte ed25519 public key in base64, as GET /api/v1/signing-key gives it", ed25519.PublicKeySize)
		}
		cfg.FleetKey = k
	}
	cfg.Health.Window = *window
	for _, m := range models {
		name, version, ok := strings.Cut(m, "=")
		if !ok || name == "" || version == "" {
			return fmt.Errorf("--model %q: want name=version", m)
		}
		cfg.Models = append(cfg.Models, simulators.Model{Name: name, Version: version})
	}
	for _, b := range behaviors {
		key, beh, err := parseBehavior(b)
		if err != nil {
			return err
		}
		cfg.Behaviors[key] = beh
	}
	f, err := simulators.New(cfg)
	if err != nil {
		return err
	}
	log.Info("edgefleet-sim starting", "devices", *devices, "server", *server, "seed", *seed)
	err = f.Run(ctx)
	log.Info("edgefleet-sim stopped")
	return err
}

func parseBehavior(s string) (string, simulators.Behavior, error) {
	key, spec, ok := strings.Cut(s, "=")
	parts := strings.Split(spec, ",")
	if !ok || !strings.Contains(key, "@") || len(parts) != 3 {
		return "", simulators.Behavior{}, fmt.Errorf("--behavior %q: want name@version=p50,p95,error_rate", s)
	}
	p50, err1 := time.ParseDuration(parts[0])
	p95, err2 := time.ParseDuration(parts[1])
	rate, err3 := strconv.ParseFloat(parts[2], 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", simulators.Behavior{}, fmt.Errorf("--behavior %q: %v", s, err)
	}
	return key, simulators.Behavior{P50: p50, P95: p95, ErrorRate: rate}, nil
}
