package k8s

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

// TestServerSettings loads the ConfigMap's server.yaml with the server's
// own loader and the Deployment's arguments.
func TestServerSettings(t *testing.T) {
	m := load(t)
	c := m.deployments["edgefleet-server"].Spec.Template.Spec.Containers[0]
	conf := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(conf, []byte(m.configMaps["edgefleet-server-config"].Data["server.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string(nil), c.Args...)
	for i, a := range args {
		if a == "/etc/edgefleet/server.yaml" {
			args[i] = conf
		}
	}
	s, err := fleetd.LoadSettings(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("edgefleet-server %q: %v", args, err)
	}
	// s3-* are for the artifact store, not yet wired to the settings.
	for _, w := range s.Warnings {
		if !strings.Contains(w, `"s3-`) {
			t.Errorf("server warns: %s", w)
		}
	}
	if s.MQTTURL != "tcp://mosquitto:1883" || s.MQTTClientID == "" || s.DataDir != "/var/lib/edgefleet" {
		t.Errorf("settings %+v: want the mosquitto Service, a fixed client id and the data volume", s)
	}
}
