package compose

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// serverConfig is the part of the server's YAML configuration these
// deployments depend on.
type serverConfig struct {
	DataDir    string `yaml:"data-dir"`
	HTTPAddr   string `yaml:"http-addr"`
	MQTTURL    string `yaml:"mqtt-url"`
	S3Endpoint string `yaml:"s3-endpoint"`
	S3Bucket   string `yaml:"s3-bucket"`
}

func load(t *testing.T, path string, v any) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func TestCompose(t *testing.T) {
	var c composeFile
	raw := load(t, "compose.yaml", &c)
	var cfg serverConfig
	load(t, "server.yaml", &cfg)

	for _, name := range []string{"server", "mosquitto", "s3", "s3-init"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("compose.yaml has no %q service", name)
		}
	}
	for name, s := range c.Services {
		checkPinned(t, name, s.Image)
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("service %s mounts volume %q that is not declared", name, src)
				}
			}
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	}

	server := c.Services["server"]
	// The mounted configuration is the one the server is told to read.
	cfgPath := argAfter(server.Command, "--config")
	if mountOf(server.Volumes, cfgPath) != "./server.yaml" {
		t.Errorf("server reads --config %q but ./server.yaml is mounted elsewhere: %q", cfgPath, server.Volumes)
	}
	// Data on a named volume, not the container's writable layer.
	if src := mountOf(server.Volumes, cfg.DataDir); src == "" || strings.HasPrefix(src, ".") {
		t.Errorf("server data-dir %q is not on a named volume (mounts %q)", cfg.DataDir, server.Volumes)
	}
	// HTTP: the port the server listens on is the one published.
	_, httpPort, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatalf("server.yaml http-addr %q: %v", cfg.HTTPAddr, err)
	}
	if !publishes(server.Ports, httpPort) {
		t.Errorf("server listens on %s but publishes %q", httpPort, server.Ports)
	}
	// MQTT: the server's broker URL names the mosquitto service on the
	// port its configuration listens on, which is the published one.
	u, err := url.Parse(cfg.MQTTURL)
	if err != nil || u.Scheme != "tcp" {
		t.Fatalf("server.yaml mqtt-url %q: want tcp://host:port", cfg.MQTTURL)
	}
	if u.Hostname() != "mosquitto" {
		t.Errorf("mqtt-url host %q, want the compose service mosquitto", u.Hostname())
	}
	listen := mosquittoListenPort(t, string(mustRead(t, "mosquitto.conf")))
	if u.Port() != listen || !publishes(c.Services["mosquitto"].Ports, listen) {
		t.Errorf("mqtt-url port %s, mosquitto listens on %s, publishes %q", u.Port(), listen, c.Services["mosquitto"].Ports)
	}
	if mountOf(c.Services["mosquitto"].Volumes, "/mosquitto/config/mosquitto.conf") != "./mosquitto.conf" {
		t.Errorf("mosquitto.conf is not mounted where the image reads it")
	}
	if mountOf(c.Services["mosquitto"].Volumes, "/mosquitto/data") == "" {
		t.Errorf("mosquitto persistence has no volume")
	}
	// S3: the endpoint is the s3 service on its S3 port, with the bucket
	// s3-init creates.
	s3, err := url.Parse(cfg.S3Endpoint)
	if err != nil || s3.Hostname() != "s3" {
		t.Errorf("s3-endpoint %q, want the compose service s3", cfg.S3Endpoint)
	}
	s3Script := strings.Join(c.Services["s3"].Entrypoint, " ")
	if !strings.Contains(s3Script, "-s3.port="+s3.Port()) {
		t.Errorf("s3-endpoint port %s is not the port SeaweedFS serves S3 on: %q", s3.Port(), s3Script)
	}
	if !strings.Contains(strings.Join(c.Services["s3-init"].Entrypoint, " "), "-name "+cfg.S3Bucket) {
		t.Errorf("s3-init does not create bucket %q", cfg.S3Bucket)
	}
	if mountOf(c.Services["s3"].Volumes, "/data") == "" {
		t.Errorf("s3 data has no volume")
	}
	if c.Services["server"].DependsOn["s3-init"].Condition != "service_completed_successfully" {
		t.Errorf("server does not wait for the bucket")
	}

	checkNoSecrets(t, "compose.yaml", raw)
	checkNoSecrets(t, "server.yaml", mustRead(t, "server.yaml"))
	// The example env file carries names, never values.
	for _, line := range strings.Split(string(mustRead(t, "env.example")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") && v != "" {
			t.Errorf("env.example sets %s: it must hold names only", k)
		}
	}
	if !slices.Contains(strings.Fields(string(mustRead(t, ".gitignore"))), ".env") {
		t.Errorf(".gitignore does not keep .env out of git")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// mountOf returns the source of the volume mounted at target, or "".
func mountOf(volumes []string, target string) string {
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0]
		}
	}
	return ""
}

// publishes reports whether ports ("host:container" or "container")
// publishes the container port.
func publishes(ports []string, container string) bool {
	for _, p := range ports {
		parts := strings.Split(p, ":")
		if parts[len(parts)-1] == container {
			return true
		}
	}
	return false
}

func mosquittoListenPort(t *testing.T, conf string) string {
	t.Helper()
	for _, line := range strings.Split(conf, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "listener" {
			return f[1]
		}
	}
	t.Fatal("mosquitto.conf has no listener")
	return ""
}

var tagRE = regexp.MustCompile(`^[^@\s]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// checkPinned fails unless image names an explicit tag other than latest:
// an unpinned image changes under a running deployment on the next pull.
func checkPinned(t *testing.T, where, image string) {
	t.Helper()
	// A registry host may carry a port: the tag is after the last '/'.
	last := image[strings.LastIndex(image, "/")+1:]
	if !tagRE.MatchString(image) || !strings.Contains(last, ":") || strings.HasSuffix(image, ":latest") {
		t.Errorf("%s: image %q is not pinned by tag", where, image)
	}
}

var (
	secretKeyRE = regexp.MustCompile(`(?i)(password|passwd|secret|token|access_?key|private_?key|credential)`)
	// Compose interpolation: the value comes from .env or the shell.
	interpolationRE = regexp.MustCompile(`^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$`)
)

// checkNoSecrets walks every YAML document in raw and fails on a
// secret-looking key with a literal value.
func checkNoSecrets(t *testing.T, file string, raw []byte) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			break
		}
		walkSecrets(t, file, &doc)
	}
}

func walkSecrets(t *testing.T, file string, n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode && secretKeyRE.MatchString(k.Value) &&
				v.Value != "" && !interpolationRE.MatchString(v.Value) {
				t.Errorf("%s:%d: %s has a literal value: take it from the environment or a secret", file, v.Line, k.Value)
			}
		}
	}
	for _, c := range n.Content {
		walkSecrets(t, file, c)
	}
}

// TestMosquittoConf starts Debian's mosquitto with the shipped
// configuration (listener moved to a free loopback port, persistence to a
// temporary directory) and waits until it reports running: every
// directive is one that Mosquitto 2.0 accepts.
func TestMosquittoConf(t *testing.T) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		t.Skip("mosquitto not installed (apt-get install mosquitto): configuration not started")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil { // mosquitto drops root for its own user
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var conf []string
	for _, line := range strings.Split(string(mustRead(t, "mosquitto.conf")), "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 0 && f[0] == "listener":
			line = "listener " + port + " 127.0.0.1"
		case len(f) > 0 && f[0] == "persistence_location":
			line = "persistence_location " + dir + "/"
		case len(f) > 0 && f[0] == "log_dest":
			line = "log_dest stderr" // unbuffered, unlike stdout into a pipe
		}
		conf = append(conf, line)
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	// "running" is logged at the information level, which the shipped
	// configuration leaves out to keep per-client lines out of the log.
	conf = append(conf, "log_type information")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-c", confPath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	var log []string
	sc := bufio.NewScanner(out)
	running := false
	for sc.Scan() {
		log = append(log, sc.Text())
		if strings.Contains(sc.Text(), "running") {
			running = true
			break
		}
	}
	if !running {
		t.Fatalf("mosquitto did not start with mosquitto.conf:\n%s", strings.Join(log, "\n"))
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 5*time.Second)
	if err != nil {
		t.Fatalf("mosquitto reports running but does not accept on %s: %v", port, err)
	}
	c.Close()
}
