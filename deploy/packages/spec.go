package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// pkgSpec is one Debian package: what goes where on the gateway or server.
type pkgSpec struct {
	key         string // -package name
	Name        string // Debian package name, binary and unit basename
	Cmd         string // Go package of the binary, relative to the root
	Description string
	Arches      []string // Debian architectures
	User        string
	StateDir    string
	Config      string // installed path of the conffile
	ConfigSrc   string // its source, relative to the root
	Unit        string
	UnitSrc     string
	Docs        map[string]string // installed path → source, relative to the root
	// PurgeFiles are admin-created files of this package removed on purge.
	PurgeFiles []string
}

var specs = []pkgSpec{
	{
		key:  "agent",
		Name: "edgefleet-agent",
		Cmd:  "./cmd/edgefleet-agent",
		Description: "edgefleet agent for edge ML gateways\n" +
			"Runs quantized TFLite/ONNX models, serves a local inference API,\n" +
			"reports telemetry to an edgefleet fleet server over MQTT and applies\n" +
			"model updates safely.",
		Arches:    []string{"amd64", "arm64", "armhf"},
		User:      "edgefleet",
		StateDir:  "/var/lib/edgefleet-agent",
		Config:    "/etc/edgefleet/agent.env",
		ConfigSrc: "deploy/config/agent.env",
		Unit:      "edgefleet-agent.service",
		UnitSrc:   "deploy/systemd/edgefleet-agent.service",
		Docs: map[string]string{
			"/usr/share/doc/edgefleet-agent/examples/accelerators.conf": "deploy/systemd/edgefleet-agent.service.d/accelerators.conf",
		},
	},
	{
		key:  "server",
		Name: "edgefleet-server",
		Cmd:  "./cmd/edgefleet-server",
		Description: "edgefleet fleet server\n" +
			"Device inventory, model registry and staged rollouts over MQTT for\n" +
			"edgefleet agents, with an embedded broker, a web console and a JSON API.",
		Arches:     []string{"amd64", "arm64"},
		User:       "edgefleet",
		StateDir:   "/var/lib/edgefleet",
		Config:     "/etc/edgefleet/server.yaml",
		ConfigSrc:  "deploy/config/server.yaml",
		Unit:       "edgefleet-server.service",
		UnitSrc:    "deploy/systemd/edgefleet-server.service",
		PurgeFiles: []string{"/etc/edgefleet/server.env"},
	},
}

// target is a Debian architecture and how Go and nFPM spell it.
type target struct {
	DebArch  string
	GOARCH   string
	GOARM    string
	NFPMArch string
}

var targets = map[string]target{
	"amd64": {DebArch: "amd64", GOARCH: "amd64", NFPMArch: "amd64"},
	"arm64": {DebArch: "arm64", GOARCH: "arm64", NFPMArch: "arm64"},
	// armhf is ARMv7 with hardware float: Raspberry Pi OS 32-bit and older
	// industrial gateways.
	"armhf": {DebArch: "armhf", GOARCH: "arm", GOARM: "7", NFPMArch: "arm7"},
}

// build is one package for one architecture.
type build struct {
	Spec    pkgSpec
	Target  target
	Version string // Debian version
}

// planBuilds resolves the -package and -arch selections; an empty arch list
// means every architecture each package supports.
func planBuilds(version string, pkgs, arches []string) ([]build, error) {
	deb, err := debianVersion(version)
	if err != nil {
		return nil, err
	}
	for _, a := range arches {
		if _, ok := targets[a]; !ok {
			return nil, fmt.Errorf("%w %q: choose from amd64, arm64, armhf", ErrUnknownArch, a)
		}
	}
	var plan []build
	for _, key := range pkgs {
		i := slices.IndexFunc(specs, func(s pkgSpec) bool { return s.key == key || s.Name == key })
		if i < 0 {
			return nil, fmt.Errorf("%w %q: choose from agent, server", ErrUnknownPackage, key)
		}
		s := specs[i]
		for _, a := range s.Arches {
			if len(arches) == 0 || slices.Contains(arches, a) {
				plan = append(plan, build{Spec: s, Target: targets[a], Version: deb})
			}
		}
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("%w: none of %q is built for %q", ErrUnknownArch, arches, pkgs)
	}
	return plan, nil
}

var versionRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~-]*$`)

// debianVersion turns a release version (v1.2.3, 1.2.3-rc1, or what
// gitVersion derives) into a Debian upstream version that sorts right:
// a pre-release sorts before its release (1.2.3~rc1 < 1.2.3), and there is
// no Debian revision, so a '-' may not remain.
func debianVersion(v string) (string, error) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if len(v) > 64 || !versionRE.MatchString(v) {
		return "", fmt.Errorf("%w %q: want digits first and only letters, digits and . + ~ - (e.g. 1.2.0 or 1.2.0-rc1)", ErrBadVersion, v)
	}
	main, meta, hasMeta := strings.Cut(v, "+")
	if pre, rest, ok := strings.Cut(main, "-"); ok {
		main = pre + "~" + strings.ReplaceAll(rest, "-", ".")
	}
	if hasMeta {
		main += "+" + strings.ReplaceAll(meta, "-", ".")
	}
	return main, nil
}

// gitVersion derives a version from the nearest v* tag: v1.2.3 on the tag,
// 1.2.3+4.gabcdef four commits after it (sorting after 1.2.3), with .dirty
// for uncommitted changes; 0.0.0-dev without a tag.
func gitVersion(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--match", "v[0-9]*", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "0.0.0-dev"
	}
	return fromDescribe(string(out))
}

// fromDescribe turns `git describe --dirty` output into a version.
func fromDescribe(out string) string {
	d := strings.TrimPrefix(strings.TrimSpace(out), "v")
	dirty := strings.HasSuffix(d, "-dirty")
	d = strings.TrimSuffix(d, "-dirty")
	var extra []string
	// describe's suffix is -<commits>-g<hash>; the tag itself may hold '-'.
	if parts := strings.Split(d, "-"); len(parts) >= 3 && strings.HasPrefix(parts[len(parts)-1], "g") {
		extra = parts[len(parts)-2:]
		d = strings.Join(parts[:len(parts)-2], "-")
	}
	if dirty {
		extra = append(extra, "dirty")
	}
	if len(extra) > 0 {
		d += "+" + strings.Join(extra, ".")
	}
	if _, err := debianVersion(d); err != nil {
		return "0.0.0-dev"
	}
	return d
}

// findRoot walks up from the working directory to the go.mod of the module.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoRoot, err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w: no go.mod above the working directory; pass -root", ErrNoRoot)
		}
		dir = parent
	}
}
