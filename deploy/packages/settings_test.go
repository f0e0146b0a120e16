package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

// TestServerUnitSettings loads the server's settings exactly as the unit
// starts it (its ExecStart flags, the packaged server.yaml, no environment)
// with the server's own loader: every key and flag is one the server
// knows, and the result is where the unit lets it write.
func TestServerUnitSettings(t *testing.T) {
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit := parseUnit(string(repoFile(t, "deploy/systemd/edgefleet-server.service")))
	args := strings.Fields(unit["ExecStart"][0])[1:]
	for i, a := range args {
		if a == "/etc/edgefleet/server.yaml" {
			args[i] = filepath.Join(root, "deploy", "config", "server.yaml")
		}
	}
	s, err := fleetd.LoadSettings(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("edgefleet-server %q: %v", args, err)
	}
	if len(s.Warnings) > 0 {
		t.Errorf("server warns about the packaged config: %q", s.Warnings)
	}
	if s.DataDir != "/var/lib/edgefleet" {
		t.Errorf("data dir %q, but the unit may write only /var/lib/edgefleet", s.DataDir)
	}
	if s.MQTTURL != "" {
		t.Errorf("packaged config uses an external broker %q; the default is the embedded one", s.MQTTURL)
	}
}
