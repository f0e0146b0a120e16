package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDeps builds the agent's import graph as shipped to a Raspberry Pi
// (linux/arm64, no cgo) and fails if it pulls in the fleet server, the
// console's templates or an MQTT broker: the agent binary stays small and
// static, and a change that couples the two sides shows up here.
func TestAgentDeps(t *testing.T) {
	for _, arch := range []string{"arm64", "amd64", "arm"} {
		t.Run(arch, func(t *testing.T) {
			deps := listDeps(t, arch, ".")
			forbidden := []string{
				"github.com/edgefleet/edgefleet/fleet",
				"html/template",
				"github.com/mochi-mqtt/server",
				"github.com/yalue/onnxruntime_go", // cgo only
				"github.com/goreleaser/nfpm",      // packaging tool only
			}
			for _, d := range deps {
				for _, f := range forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("agent (linux/%s, CGO_ENABLED=0) depends on %s", arch, d)
					}
				}
			}
			if !contains(deps, "github.com/edgefleet/edgefleet/agent/runtime") {
				t.Errorf("dependency list looks wrong: agent/runtime missing from %d deps", len(deps))
			}
		})
	}
}

func listDeps(t *testing.T, arch, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps for linux/%s: %v\n%s", arch, err, out)
	}
	return strings.Fields(string(out))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
