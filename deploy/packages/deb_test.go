package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// hostArch is the Debian architecture of this machine, or "" when no
// package is built for it.
func hostArch() string {
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return runtime.GOARCH
	case "arm":
		return "armhf"
	}
	return ""
}

// buildAgentDeb builds the agent package for the host architecture with
// the real packaging code and returns its path.
func buildAgentDeb(t *testing.T, version string) string {
	t.Helper()
	arch := hostArch()
	if arch == "" {
		t.Skipf("no edgefleet-agent package for GOARCH=%s", runtime.GOARCH)
	}
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planBuilds(version, []string{"agent"}, []string{arch})
	if err != nil {
		t.Fatal(err)
	}
	paths, err := buildAll(context.Background(), root, t.TempDir(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 1 {
		t.Fatalf("built %d packages, want 1: %q", len(paths), paths)
	}
	return paths[0]
}

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgentDebContents reads the built .deb as dpkg would and checks what it
// would put on a gateway.
func TestAgentDebContents(t *testing.T) {
	path := buildAgentDeb(t, "1.4.0-rc2")
	if got, want := filepath.Base(path), "edgefleet-agent_1.4.0~rc2_"+hostArch()+".deb"; got != want {
		t.Errorf("file name %q, want %q", got, want)
	}
	d := readDeb(t, path)

	if want := []string{"debian-binary", "control.tar.gz", "data.tar.gz"}; !slices.Equal(d.Members, want) {
		t.Errorf("ar members %q, want %q (dpkg needs this order)", d.Members, want)
	}

	for field, want := range map[string]string{
		"Package":      "edgefleet-agent",
		"Version":      "1.4.0~rc2",
		"Architecture": hostArch(),
		"Pre-Depends":  "passwd",
		"Section":      "net",
		"Priority":     "optional",
		"Maintainer":   maintainer,
	} {
		if got := d.Control[field]; got != want {
			t.Errorf("control %s = %q, want %q", field, got, want)
		}
	}
	if !strings.HasPrefix(d.Control["Description"], "edgefleet agent for edge ML gateways\n") {
		t.Errorf("control Description = %q: want a synopsis line and a long description", d.Control["Description"])
	}

	if got := string(d.Meta["/conffiles"].Body); got != "/etc/edgefleet/agent.env\n" {
		t.Errorf("conffiles = %q, want only /etc/edgefleet/agent.env (so upgrades keep local edits)", got)
	}

	// Every file the package installs, and nothing else.
	want := map[string]struct {
		mode         int64
		owner, group string
		src          string // repository file it must equal, if any
	}{
		"/usr/bin/edgefleet-agent":                                  {0o755, "root", "root", ""},
		"/usr/lib/systemd/system/edgefleet-agent.service":           {0o644, "root", "root", "deploy/systemd/edgefleet-agent.service"},
		"/etc/edgefleet/agent.env":                                  {0o640, "root", "edgefleet", "deploy/config/agent.env"},
		"/usr/share/doc/edgefleet-agent/examples/accelerators.conf": {0o644, "root", "root", "deploy/systemd/edgefleet-agent.service.d/accelerators.conf"},
	}
	for p, f := range d.Data {
		if f.Type == '5' { // directories
			continue
		}
		w, ok := want[p]
		if !ok {
			t.Errorf("unexpected file %s in the package", p)
			continue
		}
		if f.Mode != w.mode || f.Uname != w.owner || f.Gname != w.group {
			t.Errorf("%s: mode %o %s:%s, want %o %s:%s", p, f.Mode, f.Uname, f.Gname, w.mode, w.owner, w.group)
		}
		if w.src != "" && !bytes.Equal(f.Body, repoFile(t, w.src)) {
			t.Errorf("%s differs from %s", p, w.src)
		}
	}
	for p := range want {
		if _, ok := d.Data[p]; !ok {
			t.Errorf("package lacks %s", p)
		}
	}
	if dir, ok := d.Data["/var/lib/edgefleet-agent"]; ok {
		t.Errorf("package ships the state directory (%o): dpkg would try to remove it on remove; postinst creates it", dir.Mode)
	}

	checkStaticELF(t, d.Data["/usr/bin/edgefleet-agent"].Body)
	checkAgentSettings(t, d.Data["/usr/bin/edgefleet-agent"].Body)

	// md5sums is what `dpkg --verify` checks installed files against.
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(d.Meta["/md5sums"].Body)), "\n") {
		sum, p, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("md5sums line %q", line)
		}
		sums["/"+p] = sum
	}
	for p := range want {
		h := md5.Sum(d.Data[p].Body)
		if sums[p] != hex.EncodeToString(h[:]) {
			t.Errorf("md5sums for %s = %q, want %x", p, sums[p], h)
		}
	}

	checkScripts(t, d.Meta)
}

// checkStaticELF fails unless b is a Linux executable for the host
// architecture without an ELF interpreter: CGO_ENABLED=0 took effect and
// the binary runs on any gateway libc.
func checkStaticELF(t *testing.T, b []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/usr/bin/edgefleet-agent is not ELF: %v", err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "armhf": elf.EM_ARM}[hostArch()]
	if f.Machine != machine {
		t.Errorf("binary machine %v, want %v", f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has an ELF interpreter: not static (CGO_ENABLED=0 lost?)")
		}
	}
}

var envFlagRE = regexp.MustCompile(`\[(EDGEFLEET_[A-Z0-9_]+)`)

// checkAgentSettings runs the packaged agent's `run -h` and fails if the
// unit passes a flag, or agent.env names a variable (set or commented
// out), that this agent does not know: a typo there is silently ignored
// by the agent, or stops it starting.
func checkAgentSettings(t *testing.T, bin []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgefleet-agent")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	help, _ := exec.Command(path, "run", "-h").CombinedOutput()
	if !bytes.Contains(help, []byte("Usage")) {
		t.Fatalf("edgefleet-agent run -h:\n%s", help)
	}
	known := map[string]bool{}
	for _, m := range envFlagRE.FindAllSubmatch(help, -1) {
		known[string(m[1])] = true
	}
	for _, line := range strings.Split(string(repoFile(t, "deploy/config/agent.env")), "\n") {
		k, _, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "#"), "=")
		if ok && strings.HasPrefix(k, "EDGEFLEET_") && !known[k] {
			t.Errorf("agent.env names %s, which edgefleet-agent run does not read (it reads %v)", k, known)
		}
	}
	unit := parseUnit(string(repoFile(t, "deploy/systemd/edgefleet-agent.service")))
	for _, f := range strings.Fields(unit["ExecStart"][0])[2:] {
		if strings.HasPrefix(f, "--") && !bytes.Contains(help, []byte("  -"+strings.TrimPrefix(f, "--")+" ")) {
			t.Errorf("the unit passes %s, which edgefleet-agent run does not take", f)
		}
	}
}

func checkScripts(t *testing.T, meta map[string]tarFile) {
	t.Helper()
	must := map[string][]string{
		"/preinst": {"useradd --system", "groupadd --system", "--shell /usr/sbin/nologin"},
		"/postinst": {
			"install -d -o edgefleet -g edgefleet -m 0750 /var/lib/edgefleet-agent",
			"try-restart edgefleet-agent.service",
		},
		"/prerm":  {"systemctl stop edgefleet-agent.service"},
		"/postrm": {"purge)", "rm -rf /var/lib/edgefleet-agent"},
	}
	for name, phrases := range must {
		f, ok := meta[name]
		if !ok {
			t.Errorf("no %s maintainer script", name)
			continue
		}
		if f.Mode != 0o755 {
			t.Errorf("%s mode %o, want 755", name, f.Mode)
		}
		body := string(f.Body)
		if !strings.HasPrefix(body, "#!/bin/sh\n") || !strings.Contains(body, "set -e\n") {
			t.Errorf("%s: want a #!/bin/sh script with set -e", name)
		}
		for _, p := range phrases {
			if !strings.Contains(body, p) {
				t.Errorf("%s lacks %q", name, p)
			}
		}
	}
	checkScriptsSyntax(t, meta)
	// State and configuration go only on purge: the remove branch of
	// postrm must not touch them.
	postrm := string(meta["/postrm"].Body)
	remove, _, _ := strings.Cut(postrm[strings.Index(postrm, "remove)"):], ";;")
	if strings.Contains(remove, "rm ") {
		t.Errorf("postrm remove branch deletes files:\n%s", remove)
	}
}

// checkScriptsSyntax runs sh -n over every maintainer script.
func checkScriptsSyntax(t *testing.T, meta map[string]tarFile) {
	t.Helper()
	for _, name := range []string{"/preinst", "/postinst", "/prerm", "/postrm"} {
		body := string(meta[name].Body)
		if body == "" {
			t.Errorf("no %s", name)
			continue
		}
		if strings.Contains(body, "{{") || strings.Contains(body, "<no value>") {
			t.Errorf("%s has an unrendered template action", name)
		}
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", name, err, out)
		}
	}
}

// TestUnits checks the promises the systemd units make in docs/install.md.
func TestUnits(t *testing.T) {
	for _, s := range specs {
		t.Run(s.Name, func(t *testing.T) {
			unit := parseUnit(string(repoFile(t, s.UnitSrc)))
			for key, want := range map[string]string{
				"User":                    s.User,
				"ProtectSystem":           "strict",
				"ReadWritePaths":          s.StateDir,
				"NoNewPrivileges":         "yes",
				"PrivateTmp":              "yes",
				"ProtectHome":             "yes",
				"ProtectKernelTunables":   "yes",
				"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
				"StateDirectory":          strings.TrimPrefix(s.StateDir, "/var/lib/"),
				"WantedBy":                "multi-user.target",
			} {
				if got := unit[key]; !slices.Contains(got, want) {
					t.Errorf("%s=%q, want %q", key, got, want)
				}
			}
			exec := strings.Join(unit["ExecStart"], " ")
			dirFlag := map[string]string{"agent": "--state-dir ", "server": "--data-dir "}[s.key]
			for _, w := range []string{"/usr/bin/" + s.Name + " ", dirFlag + s.StateDir} {
				if !strings.Contains(exec, w) {
					t.Errorf("ExecStart=%q lacks %q", exec, w)
				}
			}
			// The unit reads the packaged configuration: the server takes a
			// YAML file, the agent its EDGEFLEET_* environment.
			if strings.HasSuffix(s.Config, ".env") {
				if !slices.Contains(unit["EnvironmentFile"], s.Config) {
					t.Errorf("EnvironmentFile=%q, want %s", unit["EnvironmentFile"], s.Config)
				}
			} else if !strings.Contains(exec, "--config "+s.Config) {
				t.Errorf("ExecStart=%q does not read %s", exec, s.Config)
			}
			// A watchdog without notification kills the service every
			// period: WatchdogSec= needs Type=notify (and an agent that pings).
			if len(unit["WatchdogSec"]) > 0 && !slices.Contains(unit["Type"], "notify") {
				t.Errorf("WatchdogSec=%q without Type=notify", unit["WatchdogSec"])
			}
		})
	}
	agent := parseUnit(string(repoFile(t, "deploy/systemd/edgefleet-agent.service")))
	if !slices.Contains(agent["Restart"], "always") {
		t.Errorf("agent Restart=%q, want always", agent["Restart"])
	}
	dropIn := parseUnit(string(repoFile(t, "deploy/systemd/edgefleet-agent.service.d/accelerators.conf")))
	for _, dev := range []string{"/dev/apex_0 rw", "/dev/nvidia0 rw", "/dev/hailo0 rw", "/dev/rknpu rw"} {
		if !slices.Contains(dropIn["DeviceAllow"], dev) {
			t.Errorf("accelerators drop-in lacks DeviceAllow=%s", dev)
		}
	}
}

// parseUnit returns every active key=value of a unit file (comments
// skipped); a key may repeat.
func parseUnit(s string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = append(out[strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return out
}

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"1.2.3-rc1", "1.2.3~rc1"},
		{"0.0.0-dev", "0.0.0~dev"},
		{"1.2.3+4.gabcdef", "1.2.3+4.gabcdef"},
		{"1.2.3-rc.1-x+4-gabc", "1.2.3~rc.1.x+4.gabc"},
	} {
		got, err := debianVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("debianVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "latest", "1.2 3", "1.2.3;rm -rf /", "-1", strings.Repeat("1", 65)} {
		if _, err := debianVersion(bad); !errors.Is(err, ErrBadVersion) {
			t.Errorf("debianVersion(%q): err %v, want ErrBadVersion", bad, err)
		}
	}
	// Debian must sort them as releases do; dpkg is the judge where present.
	if _, err := exec.LookPath("dpkg"); err == nil {
		order := []string{"0.0.0~dev", "1.2.3~rc1", "1.2.3", "1.2.3+4.gabcdef", "1.2.4"}
		for i := 1; i < len(order); i++ {
			if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
				t.Errorf("dpkg does not sort %s before %s", order[i-1], order[i])
			}
		}
	}
}

func TestPlanBuilds(t *testing.T) {
	plan, err := planBuilds("1.0.0", []string{"agent", "server"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range plan {
		got = append(got, b.Spec.Name+"/"+b.Target.DebArch)
	}
	want := []string{"edgefleet-agent/amd64", "edgefleet-agent/arm64", "edgefleet-agent/armhf", "edgefleet-server/amd64", "edgefleet-server/arm64"}
	if !slices.Equal(got, want) {
		t.Errorf("plan %q, want %q", got, want)
	}
	if armhf := targets["armhf"]; armhf.GOARCH != "arm" || armhf.GOARM != "7" {
		t.Errorf("armhf builds GOARCH=%s GOARM=%s, want arm/7", armhf.GOARCH, armhf.GOARM)
	}
	for _, tc := range []struct {
		pkgs, arches []string
		want         error
	}{
		{[]string{"agent"}, []string{"riscv64"}, ErrUnknownArch},
		{[]string{"server"}, []string{"armhf"}, ErrUnknownArch},
		{[]string{"console"}, nil, ErrUnknownPackage},
	} {
		if _, err := planBuilds("1.0.0", tc.pkgs, tc.arches); !errors.Is(err, tc.want) {
			t.Errorf("planBuilds(%q, %q): err %v, want %v", tc.pkgs, tc.arches, err, tc.want)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-version", "latest"},
		{"-arch", "mips"},
		{"-package", "nope"},
		{"extra"},
	} {
		err := run(context.Background(), append([]string{"-out", t.TempDir()}, args...))
		if err == nil {
			t.Errorf("run(%q) succeeded, want an error", args)
		}
	}
}

func TestFromDescribe(t *testing.T) {
	for _, tc := range []struct{ in, want, deb string }{
		{"v1.2.0\n", "1.2.0", "1.2.0"},
		{"v1.2.0-dirty", "1.2.0+dirty", "1.2.0+dirty"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-rc1-3-gabc1234-dirty", "1.2.0-rc1+3.gabc1234.dirty", "1.2.0~rc1+3.gabc1234.dirty"},
		{"vnext", "0.0.0-dev", "0.0.0~dev"},
	} {
		got := fromDescribe(tc.in)
		deb, err := debianVersion(got)
		if got != tc.want || err != nil || deb != tc.deb {
			t.Errorf("fromDescribe(%q) = %q → %q, %v; want %q → %q", tc.in, got, deb, err, tc.want, tc.deb)
		}
	}
}

// TestServerDebContents packages the server with a stand-in binary, so the
// server's layout is checked even while its command does not build.
func TestServerDebContents(t *testing.T) {
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planBuilds("2.0.0", []string{"server"}, []string{"arm64"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgefleet-server")
	if err := os.WriteFile(bin, []byte("stand-in binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := writeDeb(root, filepath.Join(dir, "work"), dir, bin, plan[0], sourceDate(context.Background(), root))
	if err != nil {
		t.Fatal(err)
	}
	d := readDeb(t, path)
	if d.Control["Package"] != "edgefleet-server" || d.Control["Architecture"] != "arm64" || d.Control["Version"] != "2.0.0" {
		t.Errorf("control %q", d.Control)
	}
	if got := string(d.Meta["/conffiles"].Body); got != "/etc/edgefleet/server.yaml\n" {
		t.Errorf("conffiles = %q", got)
	}
	for p, mode := range map[string]int64{
		"/usr/bin/edgefleet-server":                        0o755,
		"/usr/lib/systemd/system/edgefleet-server.service": 0o644,
		"/etc/edgefleet/server.yaml":                       0o640,
	} {
		if f, ok := d.Data[p]; !ok || f.Mode != mode {
			t.Errorf("%s: present %v mode %o, want %o", p, ok, f.Mode, mode)
		}
	}
	if !bytes.Equal(d.Data["/etc/edgefleet/server.yaml"].Body, repoFile(t, "deploy/config/server.yaml")) {
		t.Errorf("server.yaml differs from deploy/config/server.yaml")
	}
	postrm := string(d.Meta["/postrm"].Body)
	for _, w := range []string{"rm -rf /var/lib/edgefleet\n", "rm -f /etc/edgefleet/server.env"} {
		if !strings.Contains(postrm, w) {
			t.Errorf("server postrm lacks %q", w)
		}
	}
	if strings.Contains(postrm, "edgefleet-agent") {
		t.Errorf("server postrm touches the agent's files")
	}
	checkScriptsSyntax(t, d.Meta)

	// Same inputs, same bytes: a package can be rebuilt and compared.
	again, err := writeDeb(root, filepath.Join(dir, "work2"), t.TempDir(), bin, plan[0], sourceDate(context.Background(), root))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of the same package differ (%d and %d bytes)", len(a), len(b))
	}
}
