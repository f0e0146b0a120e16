// Command edgefleet-server runs the fleet server: device inventory, MQTT
// (an embedded broker, or --mqtt-url for an external one), the HTTP API and
// the web console. Options come from flags, EDGEFLEET_* environment
// variables and an optional YAML file (--config), in that precedence; see
// -h. SIGINT or SIGTERM shuts it down cleanly. `edgefleet-server init`
// creates the first admin (see init.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "edgefleet-server: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		return initCmd(os.Args[2:], os.Stdin, os.Stderr)
	}
	s, err := fleetd.LoadSettings(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	level, _ := fleetd.ParseLogLevel(s.LogLevel) // validated by LoadSettings
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, w := range s.Warnings {
		log.Warn(w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := fleetd.New(ctx, s.Config(log))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "edgefleet-server: console at %s/ · API at %s/api/v1/devices · MQTT at %s\n", srv.HTTPURL(), srv.HTTPURL(), srv.MQTTURL())
	return srv.Run(ctx)
}
