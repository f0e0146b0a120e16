package k8s

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type meta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port string `yaml:"port"`
	} `yaml:"tcpSocket"`
}

type deployment struct {
	meta `yaml:",inline"`
	Spec struct {
		Replicas int `yaml:"replicas"`
		Strategy struct {
			Type string `yaml:"type"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					PersistentVolumeClaim *struct {
						ClaimName string `yaml:"claimName"`
					} `yaml:"persistentVolumeClaim"`
					Secret   any `yaml:"secret"`
					EmptyDir any `yaml:"emptyDir"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	meta `yaml:",inline"`
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type configMap struct {
	meta `yaml:",inline"`
	Data map[string]string `yaml:"data"`
}

type manifests struct {
	deployments map[string]deployment
	services    map[string]service
	configMaps  map[string]configMap
	pvcs        map[string]bool
	files       []string
}

// load decodes every document of every manifest the kustomization lists.
func load(t *testing.T) *manifests {
	t.Helper()
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(read(t, "kustomization.yaml"), &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	all, _ := filepath.Glob("*.yaml")
	for _, f := range all {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not listed in kustomization.yaml: kubectl apply -k would skip it", f)
		}
	}
	m := &manifests{deployments: map[string]deployment{}, services: map[string]service{},
		configMaps: map[string]configMap{}, pvcs: map[string]bool{}, files: k.Resources}
	for _, f := range k.Resources {
		dec := yaml.NewDecoder(bytes.NewReader(read(t, f)))
		for i := 0; ; i++ {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var h meta
			mustDecode(t, f, &n, &h)
			if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
				t.Errorf("%s document %d lacks apiVersion, kind or metadata.name", f, i)
				continue
			}
			switch h.Kind {
			case "Deployment":
				var d deployment
				mustDecode(t, f, &n, &d)
				m.deployments[h.Metadata.Name] = d
			case "Service":
				var s service
				mustDecode(t, f, &n, &s)
				m.services[h.Metadata.Name] = s
			case "ConfigMap":
				var c configMap
				mustDecode(t, f, &n, &c)
				m.configMaps[h.Metadata.Name] = c
			case "PersistentVolumeClaim":
				m.pvcs[h.Metadata.Name] = true
			case "Secret":
				t.Errorf("%s: Secret %s is committed: create it with kubectl instead (docs/install.md)", f, h.Metadata.Name)
			default:
				t.Errorf("%s: unexpected kind %s", f, h.Kind)
			}
		}
	}
	return m
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDecode(t *testing.T, file string, n *yaml.Node, v any) {
	t.Helper()
	if err := n.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestManifests(t *testing.T) {
	m := load(t)
	for _, want := range []string{"edgefleet-server", "mosquitto"} {
		if _, ok := m.deployments[want]; !ok {
			t.Fatalf("no Deployment %s", want)
		}
		if _, ok := m.services[want]; !ok {
			t.Fatalf("no Service %s", want)
		}
	}

	for name, d := range m.deployments {
		spec := d.Spec.Template.Spec
		for k, v := range d.Spec.Selector.MatchLabels {
			if d.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Deployment %s: selector %s=%s does not match its pod labels", name, k, v)
			}
		}
		// Both keep state on a ReadWriteOnce volume with a single writer.
		if d.Spec.Replicas != 1 || d.Spec.Strategy.Type != "Recreate" {
			t.Errorf("Deployment %s: replicas %d strategy %q, want 1 and Recreate (single-writer data volume)", name, d.Spec.Replicas, d.Spec.Strategy.Type)
		}
		if !spec.SecurityContext.RunAsNonRoot {
			t.Errorf("Deployment %s runs as root", name)
		}
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			if v.ConfigMap != nil {
				if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("Deployment %s mounts missing ConfigMap %s", name, v.ConfigMap.Name)
				}
			}
			if v.PersistentVolumeClaim != nil && !m.pvcs[v.PersistentVolumeClaim.ClaimName] {
				t.Errorf("Deployment %s mounts missing PVC %s", name, v.PersistentVolumeClaim.ClaimName)
			}
			if v.Secret != nil {
				t.Errorf("Deployment %s mounts a Secret volume: document it in docs/install.md and this test", name)
			}
		}
		for _, c := range spec.Containers {
			checkPinned(t, name+"/"+c.Name, c.Image)
			if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("%s/%s allows privilege escalation", name, c.Name)
			}
			for _, vm := range c.VolumeMounts {
				if !volumes[vm.Name] {
					t.Errorf("%s/%s mounts undeclared volume %s", name, c.Name, vm.Name)
				}
			}
			for _, e := range c.Env {
				if secretRE.MatchString(e.Name) && e.ValueFrom == nil {
					t.Errorf("%s/%s: env %s has a literal value: use valueFrom.secretKeyRef", name, c.Name, e.Name)
				}
			}
		}
	}
	for name, s := range m.services {
		d, ok := m.deployments[name]
		if !ok {
			t.Errorf("Service %s selects no Deployment of the same name", name)
			continue
		}
		for k, v := range s.Spec.Selector {
			if d.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("Service %s selector %s=%s matches no pod of Deployment %s", name, k, v, name)
			}
		}
		for _, p := range s.Spec.Ports {
			if containerPort(d, p.TargetPort) == 0 {
				t.Errorf("Service %s targets port %q that Deployment %s does not declare", name, p.TargetPort, name)
			}
		}
	}

	checkServer(t, m)
	checkMosquitto(t, m)
	for _, f := range m.files {
		checkNoSecrets(t, f, read(t, f))
	}
}

// checkServer follows the server's own configuration through the
// manifests: the config it reads, the ports it listens on, the broker it
// dials and the volume it writes.
func checkServer(t *testing.T, m *manifests) {
	d := m.deployments["edgefleet-server"]
	c := d.Spec.Template.Spec.Containers[0]
	cfgPath := argAfter(c.Args, "--config")
	cmName := ""
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && mountPath(c, v.Name) == path.Dir(cfgPath) {
			cmName = v.ConfigMap.Name
		}
	}
	cm, ok := m.configMaps[cmName]
	if !ok || cm.Data[path.Base(cfgPath)] == "" {
		t.Fatalf("server reads --config %q, which no ConfigMap mount provides", cfgPath)
	}
	var cfg struct {
		DataDir  string `yaml:"data-dir"`
		HTTPAddr string `yaml:"http-addr"`
		MQTTURL  string `yaml:"mqtt-url"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data[path.Base(cfgPath)]), &cfg); err != nil {
		t.Fatalf("ConfigMap %s server.yaml: %v", cmName, err)
	}

	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatalf("http-addr %q: %v", cfg.HTTPAddr, err)
	}
	if host != "0.0.0.0" && host != "" {
		t.Errorf("http-addr %q: in a pod the server must listen on all interfaces for the Service and probes", cfg.HTTPAddr)
	}
	if strconv.Itoa(containerPort(d, "http")) != port {
		t.Errorf("server listens on %s but its container port http is %d", port, containerPort(d, "http"))
	}
	for name, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port != "http" {
			t.Errorf("server %s probe: want GET %s on port http", name, want)
		}
	}

	claim := ""
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && mountPath(c, v.Name) == cfg.DataDir {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim == "" {
		t.Errorf("server data-dir %q is not on a PersistentVolumeClaim", cfg.DataDir)
	}

	u, err := url.Parse(cfg.MQTTURL)
	if err != nil || u.Scheme != "tcp" {
		t.Fatalf("mqtt-url %q: want tcp://service:port", cfg.MQTTURL)
	}
	svc, ok := m.services[u.Hostname()]
	if !ok {
		t.Fatalf("mqtt-url host %q is no Service here", u.Hostname())
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(p.Port) == u.Port() {
			return
		}
	}
	t.Errorf("mqtt-url port %s is not a port of Service %s", u.Port(), svc.Metadata.Name)
}

// checkMosquitto: the broker listens where its Service sends traffic,
// persists to its volume, and runs the same directives as the compose
// deployment (which a test starts with Debian's mosquitto).
func checkMosquitto(t *testing.T, m *manifests) {
	d := m.deployments["mosquitto"]
	c := d.Spec.Template.Spec.Containers[0]
	conf := m.configMaps["mosquitto-config"].Data["mosquitto.conf"]
	if conf == "" || mountPath(c, "config") != "/mosquitto/config" {
		t.Fatalf("mosquitto.conf is not mounted at /mosquitto/config, where the image reads it")
	}
	listen := ""
	for _, line := range strings.Split(conf, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "listener" {
			listen = f[1]
		}
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "persistence_location" && strings.TrimSuffix(f[1], "/") != mountPath(c, "data") {
			t.Errorf("mosquitto persists to %s, not its data volume at %s", f[1], mountPath(c, "data"))
		}
	}
	if strconv.Itoa(containerPort(d, "mqtt")) != listen {
		t.Errorf("mosquitto listens on %q but its container port mqtt is %d", listen, containerPort(d, "mqtt"))
	}
	compose := directives(string(read(t, "../compose/mosquitto.conf")))
	if got := directives(conf); !slices.Equal(got, compose) {
		t.Errorf("mosquitto ConfigMap and deploy/compose/mosquitto.conf differ:\n k8s:     %q\n compose: %q", got, compose)
	}
}

func directives(conf string) []string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return out
}

func containerPort(d deployment, name string) int {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name || strconv.Itoa(p.ContainerPort) == name {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func mountPath(c container, volume string) string {
	for _, vm := range c.VolumeMounts {
		if vm.Name == volume {
			return vm.MountPath
		}
	}
	return ""
}

func argAfter(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

var tagRE = regexp.MustCompile(`^[^@\s]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// checkPinned fails unless image names an explicit tag other than latest.
func checkPinned(t *testing.T, where, image string) {
	t.Helper()
	last := image[strings.LastIndex(image, "/")+1:]
	if !tagRE.MatchString(image) || !strings.Contains(last, ":") || strings.HasSuffix(image, ":latest") {
		t.Errorf("%s: image %q is not pinned by tag", where, image)
	}
}

var (
	secretRE = regexp.MustCompile(`(?i)(password|passwd|secret|token|access_?key|private_?key|credential)`)
	// A secret-looking setting inside an embedded config file (key: value,
	// key=value or "key value"); *_file directives name a path, not a secret.
	secretLineRE = regexp.MustCompile(`(?i)^\s*[\w.-]*(password|passwd|secret|token|access[_-]?key|private[_-]?key)[\w.-]*\s*[:= ]\s*\S`)
)

// checkNoSecrets fails on a secret-looking key with a literal value,
// including inside embedded configuration files (ConfigMap data).
func checkNoSecrets(t *testing.T, file string, raw []byte) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			return
		}
		walkSecrets(t, file, &doc)
	}
}

func walkSecrets(t *testing.T, file string, n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				continue
			}
			if secretRE.MatchString(k.Value) && v.Value != "" {
				t.Errorf("%s:%d: %s has a literal value: reference a Secret", file, v.Line, k.Value)
			}
			for j, line := range strings.Split(v.Value, "\n") {
				f := strings.Fields(line)
				if secretLineRE.MatchString(line) && !strings.HasSuffix(f[0], "_file") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
					t.Errorf("%s:%d: embedded setting %q looks like a secret in plain text", file, v.Line+j+1, f[0])
				}
			}
		}
	}
	for _, c := range n.Content {
		walkSecrets(t, file, c)
	}
}
