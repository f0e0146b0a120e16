package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testSuffix marks the versions this test installs, so that a leftover of
// a killed run is told apart from a real installation.
const testSuffix = "~test"

const (
	agentPkg    = "edgefleet-agent"
	agentConfig = "/etc/edgefleet/agent.env"
	agentState  = "/var/lib/edgefleet-agent"
	agentUnit   = "/usr/lib/systemd/system/edgefleet-agent.service"
	agentBinary = "/usr/bin/edgefleet-agent"
)

// TestAgentDebInstall installs the agent package on this machine with dpkg,
// upgrades it over itself, removes and purges it, checking at each step
// what a gateway would have. It runs only as root on a Debian system where
// edgefleet-agent is not installed for real, and puts the machine back as
// it found it, even when a check fails.
func TestAgentDebInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the dpkg install test")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: the dpkg install test needs root (run the tests as root on a Debian machine)")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg: the install test needs a Debian system")
	}
	leftover := false
	if st := dpkgStatus(t); strings.HasSuffix(st, testSuffix) {
		// Left by a run of this test that was killed before its cleanup.
		if out, err := dpkg("--purge", agentPkg); err != nil {
			t.Fatalf("purging a leftover test install (%s): %v\n%s", st, err, out)
		}
		leftover = true
	} else if st != "" {
		t.Skipf("edgefleet-agent is already on this machine (%q): not touching a real installation", st)
	}
	_, userErr := user.Lookup("edgefleet")
	_, groupErr := user.LookupGroup("edgefleet")
	if leftover && exec.Command("dpkg-query", "-W", "edgefleet-server").Run() != nil {
		// The killed run made the account; nothing else uses it.
		userErr, groupErr = errors.New("made by a killed test run"), errors.New("made by a killed test run")
	}
	_, etcErr := os.Stat("/etc/edgefleet")
	_, stateErr := os.Stat(agentState)
	if stateErr == nil {
		t.Skipf("%s exists without the package: not touching it", agentState)
	}

	// One binary, two package versions: the upgrade is dpkg's business,
	// and building the agent twice would double the test's time.
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, agentPkg)
	plan, err := planBuilds("0.0.1"+testSuffix, []string{"agent"}, []string{hostArch()})
	if err != nil || hostArch() == "" {
		t.Fatalf("no agent build for %s: %v", hostArch(), err)
	}
	if err := buildBinary(t.Context(), root, plan[0], bin); err != nil {
		t.Fatal(err)
	}
	mtime := sourceDate(t.Context(), root)
	v1, err := writeDeb(root, filepath.Join(dir, "v1"), dir, bin, plan[0], mtime)
	if err != nil {
		t.Fatal(err)
	}
	plan[0].Version = "0.0.2" + testSuffix
	v2, err := writeDeb(root, filepath.Join(dir, "v2"), dir, bin, plan[0], mtime)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		if dpkgStatus(t) != "" {
			if out, err := dpkg("--purge", agentPkg); err != nil {
				t.Errorf("cleanup: dpkg --purge: %v\n%s", err, out)
			}
		}
		os.RemoveAll(agentState)
		if userErr != nil {
			if out, err := exec.Command("userdel", "edgefleet").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel edgefleet: %v\n%s", err, out)
			}
		}
		if groupErr != nil {
			if _, err := user.LookupGroup("edgefleet"); err == nil {
				if out, err := exec.Command("groupdel", "edgefleet").CombinedOutput(); err != nil {
					t.Errorf("cleanup: groupdel edgefleet: %v\n%s", err, out)
				}
			}
		}
		if etcErr != nil {
			os.Remove("/etc/edgefleet") // only if empty
		}
	})

	// Install.
	mustDpkg(t, "-i", v1)
	if st := dpkgStatus(t); st != "install ok installed 0.0.1"+testSuffix {
		t.Fatalf("after dpkg -i: status %q", st)
	}
	u, err := user.Lookup("edgefleet")
	if err != nil {
		t.Fatalf("preinst did not create the edgefleet user: %v", err)
	}
	if out, _ := exec.Command("getent", "passwd", "edgefleet").Output(); !strings.HasSuffix(strings.TrimSpace(string(out)), ":/usr/sbin/nologin") {
		t.Errorf("edgefleet user can log in: %q", out)
	}
	if uid, _ := strconv.Atoi(u.Uid); uid >= 1000 {
		t.Errorf("edgefleet uid %d is not a system uid", uid)
	}
	gid := lookupGID(t, "edgefleet")
	uid, _ := strconv.Atoi(u.Uid)
	checkPath(t, agentBinary, 0o755, 0, 0)
	checkPath(t, agentUnit, 0o644, 0, 0)
	checkPath(t, agentConfig, 0o640, 0, gid)
	checkPath(t, agentState, fs.ModeDir|0o750, uid, gid)
	// It runs here: usage text, whatever the exit code of "help" becomes.
	if out, err := exec.Command(agentBinary, "help").CombinedOutput(); !bytes.Contains(out, []byte("edgefleet-agent")) {
		t.Errorf("installed agent does not run: %v\n%s", err, out)
	}
	if out, err := dpkg("--verify", agentPkg); err != nil || len(out) > 0 {
		t.Errorf("dpkg --verify: %v\n%s", err, out)
	}
	verifyUnit(t)
	checkNotRunning(t)
	runAsService(t, uid, gid)
	checkNotRunning(t)

	// Local changes an upgrade must keep.
	edited := append(readFile(t, agentConfig), []byte("# edited on this gateway\n")...)
	if err := os.WriteFile(agentConfig, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	deviceID := filepath.Join(agentState, "device-id")
	if err := os.WriteFile(deviceID, []byte("gw-0042\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	stateBefore := dirNames(t, agentState)

	// Upgrade over itself.
	mustDpkg(t, "-i", v2)
	if st := dpkgStatus(t); st != "install ok installed 0.0.2"+testSuffix {
		t.Fatalf("after upgrade: status %q", st)
	}
	if !bytes.Equal(readFile(t, agentConfig), edited) {
		t.Errorf("upgrade lost the local edit of %s", agentConfig)
	}
	if string(readFile(t, deviceID)) != "gw-0042\n" || !slices.Equal(dirNames(t, agentState), stateBefore) {
		t.Errorf("upgrade changed the agent state: %q, was %q", dirNames(t, agentState), stateBefore)
	}
	checkPath(t, agentConfig, 0o640, 0, gid)
	checkPath(t, agentState, fs.ModeDir|0o750, uid, gid)
	checkNotRunning(t)

	// Remove: program gone, configuration and state kept.
	mustDpkg(t, "--remove", agentPkg)
	if st := dpkgStatus(t); st != "deinstall ok config-files 0.0.2"+testSuffix {
		t.Errorf("after remove: status %q", st)
	}
	for _, p := range []string{agentBinary, agentUnit} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("remove left %s", p)
		}
	}
	if !bytes.Equal(readFile(t, agentConfig), edited) {
		t.Errorf("remove changed %s", agentConfig)
	}
	if string(readFile(t, deviceID)) != "gw-0042\n" || !slices.Equal(dirNames(t, agentState), stateBefore) {
		t.Errorf("remove changed the agent state: %q, was %q", dirNames(t, agentState), stateBefore)
	}

	// Purge: everything of the package gone.
	mustDpkg(t, "--purge", agentPkg)
	if st := dpkgStatus(t); st != "" {
		t.Errorf("after purge: status %q, want not installed", st)
	}
	gone := []string{agentConfig, agentState}
	if etcErr != nil {
		gone = append(gone, "/etc/edgefleet")
	}
	for _, p := range gone {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("purge left %s", p)
		}
	}
}

// runAsService starts the installed agent as the unit would (the edgefleet
// user, the packaged environment file, the unit's flags) but with its broker
// on a closed loopback port, waits until it has opened its state, checks
// that the state directory is writable for it, and stops it with SIGTERM,
// as systemctl stop would. It cannot apply the unit's sandbox: no systemd
// runs here.
func runAsService(t *testing.T, uid, gid int) {
	t.Helper()
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, line := range strings.Split(string(readFile(t, agentConfig)), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			env = append(env, line)
		}
	}
	// Never the example host of the packaged file: loopback, closed port.
	env = append(env, "EDGEFLEET_SERVER=tcp://127.0.0.1:1")
	unit := parseUnit(string(readFile(t, agentUnit)))
	argv := strings.Fields(unit["ExecStart"][0])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv, err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test stopped reading; keep draining
			}
		}
		close(lines)
		done <- cmd.Wait()
	}()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-done
		}
	}()

	var log []string
	timeout := time.After(30 * time.Second)
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("agent exited before it started:\n%s", strings.Join(log, "\n"))
			}
			log = append(log, line)
			if strings.Contains(line, "edgefleet-agent starting") {
				break wait
			}
		case <-timeout:
			t.Fatalf("agent did not report starting within 30s:\n%s", strings.Join(log, "\n"))
		}
	}
	entries, err := os.ReadDir(agentState)
	if err != nil || len(entries) == 0 {
		t.Errorf("agent started but wrote nothing to %s: %v", agentState, err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("state file %s: owner %d mode %v, want the edgefleet user and nothing for others", e.Name(), st.Uid, fi.Mode())
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				lines = nil // closed: wait for the exit status alone
			}
		case err := <-done:
			stopped = true
			if err != nil {
				t.Errorf("agent did not exit cleanly on SIGTERM: %v", err)
			}
			return
		case <-deadline:
			t.Errorf("agent still running 30s after SIGTERM; killing it")
			return
		}
	}
}

// dpkg runs dpkg non-interactively. dpkg does not wait for its lock, so
// while another process holds it (apt in a parallel job) it is retried, a
// bounded number of times.
func dpkg(args ...string) ([]byte, error) {
	args = append([]string{"--force-confdef", "--force-confold"}, args...)
	var out []byte
	var err error
	for attempt := 0; attempt < 60; attempt++ {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err = cmd.CombinedOutput()
		if err == nil || !(bytes.Contains(out, []byte("frontend lock")) || bytes.Contains(out, []byte("database area is locked"))) {
			return out, err
		}
		time.Sleep(500 * time.Millisecond)
	}
	return out, fmt.Errorf("dpkg lock still held after 30s: %w", err)
}

func mustDpkg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := dpkg(args...); err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// dpkgStatus is "<status> <version>" of the agent package, or "" when dpkg
// knows nothing of it (never installed, or purged).
func dpkgStatus(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Status} ${Version}", agentPkg).Output()
	if err != nil {
		return ""
	}
	st := strings.TrimSpace(string(out))
	if strings.HasPrefix(st, "unknown ok not-installed") {
		return ""
	}
	return st
}

func checkPath(t *testing.T, path string, mode fs.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: %v %d:%d, want %v %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

func lookupGID(t *testing.T, name string) int {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatalf("group %s: %v", name, err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return gid
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verifyUnit runs systemd-analyze verify on the installed unit: syntax,
// unknown keys, ExecStart pointing at an executable.
func verifyUnit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found (apt-get install systemd): unit not verified")
		return
	}
	out, err := exec.Command("systemd-analyze", "verify", agentUnit).CombinedOutput()
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "edgefleet") {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", agentUnit, err, out)
	}
}

// checkNotRunning fails if an installed agent process exists: the package
// must not start the agent before it is configured.
func checkNotRunning(t *testing.T) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, agentBinary) {
			t.Errorf("an installed agent is running: %s → %s", p, exe)
		}
	}
}
