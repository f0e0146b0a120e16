package fleetd

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSettingsPrecedence(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(conf, []byte("data-dir: /from/file\nhttp-addr: 127.0.0.1:1\nmqtt-addr: 127.0.0.1:2\nlog-level: debug\ntelemetry-history: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSettings(
		[]string{"--config", conf, "--http-addr", "127.0.0.1:3"},
		env(map[string]string{"EDGEFLEET_HTTP_ADDR": "127.0.0.1:4", "EDGEFLEET_MQTT_ADDR": "127.0.0.1:5", "EDGEFLEET_TELEMETRY_HISTORY": "60"}),
		io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		DataDir:  "/from/file",  // file only
		HTTPAddr: "127.0.0.1:3", // flag beats env and file
		MQTTAddr: "127.0.0.1:5", // env beats file
		LogLevel: "debug", TelemetryHistory: 60,
	}
	if s.DataDir != want.DataDir || s.HTTPAddr != want.HTTPAddr || s.MQTTAddr != want.MQTTAddr || s.LogLevel != want.LogLevel ||
		s.TelemetryHistory != want.TelemetryHistory || len(s.Warnings) != 0 {
		t.Fatalf("settings = %+v, want %+v", s, want)
	}
}

func TestSettingsDefaultsAndEnvConfig(t *testing.T) {
	s, err := LoadSettings(nil, env(nil), io.Discard)
	if d := DefaultSettings(); err != nil || s.DataDir != d.DataDir || s.HTTPAddr != d.HTTPAddr || s.MQTTAddr != d.MQTTAddr || s.MQTTURL != "" {
		t.Fatalf("no input: %+v %v", s, err)
	}
	conf := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(conf, []byte("mqtt-url: tcp://127.0.0.1:1883\n"), 0o600)
	s, err = LoadSettings(nil, env(map[string]string{"EDGEFLEET_CONFIG": conf}), io.Discard)
	if err != nil || s.MQTTURL != "tcp://127.0.0.1:1883" {
		t.Fatalf("EDGEFLEET_CONFIG: %+v %v", s, err)
	}
}

func TestSettingsErrorsNameTheCulprit(t *testing.T) {
	dir := t.TempDir()
	badType := filepath.Join(dir, "type.yaml")
	os.WriteFile(badType, []byte("telemetry-history: lots\n"), 0o600)
	notMap := filepath.Join(dir, "list.yaml")
	os.WriteFile(notMap, []byte("- data-dir\n"), 0o600)
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--log-level", "loud"}, nil, "log level"},
		{[]string{"--telemetry-history", "0"}, nil, "telemetry-history"},
		{nil, map[string]string{"EDGEFLEET_TELEMETRY_HISTORY": "many"}, "EDGEFLEET_TELEMETRY_HISTORY"},
		{[]string{"--config", badType}, nil, "type.yaml"},
		{[]string{"--config", notMap}, nil, "mapping"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, nil, "missing.yaml"},
		{[]string{"--no-such-flag"}, nil, "no-such-flag"},
		{[]string{"serve"}, nil, `"serve"`},
	}
	for _, tc := range cases {
		_, err := LoadSettings(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: error %v, want one naming %q", tc.args, tc.env, err, tc.want)
		}
	}
	if _, err := LoadSettings([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestUnknownConfigKeysWarn(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(conf, []byte("data-dir: /d\ns3-endpoint: http://s3:8333\ndata_dri: x\n"), 0o600)
	s, err := LoadSettings([]string{"--config", conf}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.DataDir != "/d" || len(s.Warnings) != 2 || !strings.Contains(s.Warnings[0], `"s3-endpoint"`) || !strings.Contains(s.Warnings[1], "line 3") {
		t.Fatalf("settings %+v", s)
	}
}

// The config files shipped in deploy/ must load.
func TestShippedConfigsLoad(t *testing.T) {
	for _, path := range []string{"../../deploy/config/server.yaml", "../../deploy/compose/server.yaml"} {
		if _, err := os.Stat(path); err != nil {
			t.Logf("%s not present: %v", path, err)
			continue
		}
		s, err := LoadSettings([]string{"--config", path}, env(nil), io.Discard)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		t.Logf("%s: %+v", path, s)
	}
}
