package fleetd_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
)

func TestSecuritySettings(t *testing.T) {
	env := func(string) string { return "" }
	s, err := fleetd.LoadSettings(nil, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(nil).Security; c.MQTTAuth != fleetd.MQTTAuthRequired || c.TLS != fleetd.TLSOff {
		t.Fatalf("defaults %+v: want device auth required", c)
	}
	s, err = fleetd.LoadSettings([]string{"--tls", "self-signed", "--tls-hosts", "fleet.lan, 10.0.0.5", "--mqtt-auth", "off"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(nil).Security; c.TLS != fleetd.TLSSelfSigned || len(c.TLSHosts) != 2 || c.TLSHosts[1] != "10.0.0.5" || c.MQTTAuth != fleetd.MQTTAuthOff {
		t.Fatalf("parsed %+v", c)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--mqtt-auth", "maybe"}, "--mqtt-auth"},
		{[]string{"--tls", "on"}, "--tls"},
		{[]string{"--tls", "files", "--tls-cert", "c.pem"}, "--tls-key"},
	} {
		_, err := fleetd.LoadSettings(tt.args, env, io.Discard)
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want ErrConfig naming %s", tt.args, err, tt.want)
		}
	}
}
