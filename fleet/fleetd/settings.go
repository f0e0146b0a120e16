package fleetd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Settings are the server's user-facing options, read from flags, then
// EDGEFLEET_* environment variables, then an optional YAML file, in that
// order of precedence (a flag beats the environment, which beats the file,
// which beats the defaults). The file's keys are the flag names.
type Settings struct {
	DataDir          string `yaml:"data-dir"`
	HTTPAddr         string `yaml:"http-addr"`
	MQTTAddr         string `yaml:"mqtt-addr"`
	MQTTURL          string `yaml:"mqtt-url"`
	MQTTShareGroup   string `yaml:"mqtt-share-group"`
	MQTTClientID     string `yaml:"mqtt-client-id"`
	LogLevel         string `yaml:"log-level"`
	TelemetryHistory int    `yaml:"telemetry-history"`
	MQTTAuth         string `yaml:"mqtt-auth"`
	MQTTPublicURL    string `yaml:"mqtt-public-url"`
	MQTTUsername     string `yaml:"mqtt-username"`
	MQTTPassword     string `yaml:"mqtt-password"`
	TLS              string `yaml:"tls"`
	TLSCert          string `yaml:"tls-cert"`
	TLSKey           string `yaml:"tls-key"`
	TLSCA            string `yaml:"tls-ca"`
	TLSHosts         string `yaml:"tls-hosts"`
	MosquittoDir     string `yaml:"mosquitto-dir"`
	MQTTCA           string `yaml:"mqtt-ca"`
	HTTPMaxConnsIP   int    `yaml:"http-max-conns-per-ip"`
	MQTTMaxConnsIP   int    `yaml:"mqtt-max-conns-per-ip"`

	// Warnings are problems that did not stop loading, such as keys of
	// the YAML file this build does not know; the caller logs them.
	Warnings []string `yaml:"-"`
}

// maxConfigBytes bounds the YAML file; a config is a handful of lines.
const maxConfigBytes = 1 << 20

type setting struct {
	flag, env, usage string
	str              *string
	num              *int
}

func (s *Settings) table() []setting {
	return []setting{
		{"data-dir", "EDGEFLEET_DATA_DIR", "directory for the server's database", &s.DataDir, nil},
		{"http-addr", "EDGEFLEET_HTTP_ADDR", "address of the HTTP API and console", &s.HTTPAddr, nil},
		{"mqtt-addr", "EDGEFLEET_MQTT_ADDR", "address of the embedded MQTT broker", &s.MQTTAddr, nil},
		{"mqtt-url", "EDGEFLEET_MQTT_URL", "use this external MQTT broker (tcp://host:port) instead of the embedded one", &s.MQTTURL, nil},
		{"mqtt-share-group", "EDGEFLEET_MQTT_SHARE_GROUP", "with --mqtt-url: read device messages through shared subscriptions in this group (for several servers); empty means plain subscriptions", &s.MQTTShareGroup, nil},
		{"mqtt-client-id", "EDGEFLEET_MQTT_CLIENT_ID", "with --mqtt-url: the server's MQTT client id (default: derived from host name and data dir)", &s.MQTTClientID, nil},
		{"log-level", "EDGEFLEET_LOG_LEVEL", "debug, info, warn or error", &s.LogLevel, nil},
		{"telemetry-history", "EDGEFLEET_TELEMETRY_HISTORY", "telemetry windows kept per device", nil, &s.TelemetryHistory},
		{"mqtt-auth", "EDGEFLEET_MQTT_AUTH", "required: only enrolled devices connect, each to its own topics; off: anyone, anything (demos)", &s.MQTTAuth, nil},
		{"mqtt-public-url", "EDGEFLEET_MQTT_PUBLIC_URL", "broker URL handed to devices at enrolment (default: the broker's own)", &s.MQTTPublicURL, nil},
		{"mqtt-username", "EDGEFLEET_MQTT_USERNAME", "with --mqtt-url: the server's username on the external broker", &s.MQTTUsername, nil},
		{"mqtt-password", "EDGEFLEET_MQTT_PASSWORD", "with --mqtt-url: the server's password on the external broker (prefer the environment variable)", &s.MQTTPassword, nil},
		{"tls", "EDGEFLEET_TLS", "off, self-signed (a CA made on first start in the data dir; agents pin it) or files (--tls-cert, --tls-key)", &s.TLS, nil},
		{"tls-cert", "EDGEFLEET_TLS_CERT", "with --tls=files: PEM certificate chain", &s.TLSCert, nil},
		{"tls-key", "EDGEFLEET_TLS_KEY", "with --tls=files: PEM private key", &s.TLSKey, nil},
		{"tls-ca", "EDGEFLEET_TLS_CA", "with --tls=files: PEM CA certificate handed to devices to pin", &s.TLSCA, nil},
		{"http-max-conns-per-ip", "EDGEFLEET_HTTP_MAX_CONNS_PER_IP", "bound on concurrent HTTP connections from one IP; 0 = none", nil, &s.HTTPMaxConnsIP},
		{"mqtt-max-conns-per-ip", "EDGEFLEET_MQTT_MAX_CONNS_PER_IP", "bound on concurrent connections to the embedded broker from one IP; 0 = none", nil, &s.MQTTMaxConnsIP},
		{"mqtt-ca", "EDGEFLEET_MQTT_CA", "with --mqtt-url ssl://...: PEM CA that verifies the external broker (default: system roots)", &s.MQTTCA, nil},
		{"mosquitto-dir", "EDGEFLEET_MOSQUITTO_DIR", "write a Mosquitto password file and ACL file here, kept up to date with enrolment (external Mosquitto)", &s.MosquittoDir, nil},
		{"tls-hosts", "EDGEFLEET_TLS_HOSTS", "with --tls=self-signed: extra comma-separated names and IPs for the server certificate", &s.TLSHosts, nil},
	}
}

// DefaultSettings are the settings before any flag, variable or file.
func DefaultSettings() Settings {
	return Settings{
		DataDir: "./" + DefaultDataDir, HTTPAddr: DefaultHTTPAddr, MQTTAddr: DefaultMQTTAddr,
		LogLevel: "info", TelemetryHistory: 1000, MQTTAuth: MQTTAuthRequired, TLS: TLSOff,
	}
}

// LoadSettings parses args (without the program name) and getenv into
// Settings. --config (or EDGEFLEET_CONFIG) names the YAML file. It returns
// flag.ErrHelp after printing usage to out for -h.
func LoadSettings(args []string, getenv func(string) string, out io.Writer) (Settings, error) {
	s := DefaultSettings()
	fs := flag.NewFlagSet("edgefleet-server", flag.ContinueOnError)
	fs.SetOutput(out)
	var configPath string
	fs.StringVar(&configPath, "config", "", "optional YAML config file (env EDGEFLEET_CONFIG)")
	// Flags are parsed into a scratch copy first; only the ones given are
	// applied, after the file and the environment.
	var fromFlags Settings
	tab, flagTab := s.table(), fromFlags.table()
	for i, st := range flagTab {
		usage := fmt.Sprintf("%s (env %s, default %s)", st.usage, st.env, defaultText(tab[i]))
		if st.str != nil {
			fs.StringVar(st.str, st.flag, "", usage)
		} else {
			fs.IntVar(st.num, st.flag, 0, usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q; every option is a flag (see -h)", fs.Arg(0))
	}
	if configPath == "" {
		configPath = getenv("EDGEFLEET_CONFIG")
	}
	if configPath != "" {
		if err := s.readFile(configPath); err != nil {
			return s, err
		}
	}
	for _, st := range tab {
		v, ok := lookup(getenv, st.env)
		if !ok {
			continue
		}
		if st.str != nil {
			*st.str = v
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return s, fmt.Errorf("environment variable %s=%q is not a whole number", st.env, v)
		}
		*st.num = n
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for i, st := range flagTab {
		if !set[st.flag] {
			continue
		}
		if st.str != nil {
			*tab[i].str = *st.str
		} else {
			*tab[i].num = *st.num
		}
	}
	return s, s.Validate()
}

func defaultText(st setting) string {
	if st.str != nil {
		if *st.str == "" {
			return "none"
		}
		return *st.str
	}
	return strconv.Itoa(*st.num)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func (s *Settings) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(b) > maxConfigBytes {
		return fmt.Errorf("config file %s is larger than %d bytes", path, maxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s: want a mapping of flag names to values, like \"data-dir: ./data\"", path)
	}
	known := map[string]bool{}
	for _, st := range s.table() {
		known[st.flag] = true
	}
	// An unknown key is reported, not fatal: a config written for a newer
	// server (or for a part not built in) should still start this one.
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i].Value; !known[k] {
			s.Warnings = append(s.Warnings, fmt.Sprintf("config file %s line %d: unknown key %q ignored (keys are the flag names, see -h)", path, root.Content[i].Line, k))
		}
	}
	if err := root.Decode(s); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// Validate checks the settings and names the one at fault.
func (s Settings) Validate() error {
	if _, err := ParseLogLevel(s.LogLevel); err != nil {
		return err
	}
	if s.DataDir == "" {
		return errors.New("data dir is empty (--data-dir)")
	}
	if s.TelemetryHistory < 1 || s.TelemetryHistory > 100_000 {
		return fmt.Errorf("telemetry history %d is outside 1..100000 (--telemetry-history)", s.TelemetryHistory)
	}
	return s.Config(nil).Security.validate()
}

// ParseLogLevel turns debug/info/warn/error into a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error (--log-level)", s)
}

// Config turns the settings into a server Config with the given logger.
func (s Settings) Config(log *slog.Logger) Config {
	return Config{
		DataDir: s.DataDir, HTTPAddr: s.HTTPAddr, MQTTAddr: s.MQTTAddr, MQTTURL: s.MQTTURL,
		MQTTShareGroup: s.MQTTShareGroup, MQTTClientID: s.MQTTClientID,
		TelemetryHistory: s.TelemetryHistory, Logger: log,
		Security: SecurityConfig{
			MQTTAuth: s.MQTTAuth, TLS: s.TLS, TLSCertFile: s.TLSCert, TLSKeyFile: s.TLSKey, TLSCAFile: s.TLSCA,
			TLSHosts: splitList(s.TLSHosts), BrokerPublicURL: s.MQTTPublicURL, MQTTUsername: s.MQTTUsername, MQTTPassword: s.MQTTPassword,
			MosquittoDir: s.MosquittoDir, MQTTCAFile: s.MQTTCA, HTTPMaxConnsPerIP: s.HTTPMaxConnsIP, MQTTMaxConnsPerIP: s.MQTTMaxConnsIP,
		},
	}
}
