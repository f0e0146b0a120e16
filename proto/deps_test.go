package proto

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProtoIsLeaf fails if the protocol package imports either side: it is
// what the agent and the server share, and nothing else.
func TestProtoIsLeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 5 {
		t.Fatalf("dependency list looks wrong: %v", deps)
	}
	for _, d := range deps {
		for _, side := range []string{"github.com/edgefleet/edgefleet/agent", "github.com/edgefleet/edgefleet/fleet"} {
			if d == side || strings.HasPrefix(d, side+"/") {
				t.Errorf("proto imports %s", d)
			}
		}
	}
}
