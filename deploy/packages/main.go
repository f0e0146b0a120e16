// Command packages builds edgefleet's Debian packages with nFPM as a library:
// edgefleet-agent for linux amd64, arm64 and armhf, edgefleet-server for amd64
// and arm64, each a static CGO_ENABLED=0 binary with its systemd unit,
// default configuration (a dpkg conffile), the edgefleet system account and
// maintainer scripts that keep configuration and state until purge.
//
//	go run ./deploy/packages -out bin/packages
//	go run ./deploy/packages -out bin/packages -version 1.2.0 -package agent -arch arm64
//
// It is a build tool: nothing in the agent or the server imports it, so nFPM
// and its dependencies never reach a gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "packages: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("packages", flag.ContinueOnError)
	out := fs.String("out", "bin/packages", "directory for the .deb files (created)")
	version := fs.String("version", "", "package version, e.g. 1.2.0 or v1.2.0-rc1 (default: from `git describe`, else 0.0.0-dev)")
	root := fs.String("root", "", "repository root (default: the directory holding go.mod, searched upwards)")
	pkgs := fs.String("package", "agent,server", "comma-separated packages to build: agent, server")
	arches := fs.String("arch", "", "comma-separated Debian architectures (default: all the package supports: amd64, arm64, armhf)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: packages takes flags only", fs.Args())
	}
	var err error
	if *root == "" {
		if *root, err = findRoot(); err != nil {
			return err
		}
	}
	if *version == "" {
		*version = gitVersion(ctx, *root)
	}
	plan, err := planBuilds(*version, splitList(*pkgs), splitList(*arches))
	if err != nil {
		return err
	}
	paths, err := buildAll(ctx, *root, *out, plan)
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
