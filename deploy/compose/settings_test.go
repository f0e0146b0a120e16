package compose

import (
	"io"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

// pendingKeys are settings these deployments set for parts of the server
// not yet wired to its configuration; the server warns and ignores them.
var pendingKeys = []string{`"s3-endpoint"`, `"s3-bucket"`, `"s3-region"`}

// TestServerSettings loads server.yaml with the server's own loader, as the
// compose service starts it.
func TestServerSettings(t *testing.T) {
	var c composeFile
	load(t, "compose.yaml", &c)
	args := append([]string(nil), c.Services["server"].Command...)
	for i, a := range args {
		if a == "/etc/edgefleet/server.yaml" {
			args[i] = "server.yaml"
		}
	}
	s, err := fleetd.LoadSettings(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("edgefleet-server %q: %v", args, err)
	}
	for _, w := range s.Warnings {
		if !containsAny(w, pendingKeys) {
			t.Errorf("server warns: %s", w)
		}
	}
	if s.MQTTURL != "tcp://mosquitto:1883" || s.MQTTClientID == "" || s.DataDir != "/var/lib/edgefleet" {
		t.Errorf("settings %+v: want the mosquitto service, a fixed client id and the data volume", s)
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
