package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/store"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildServer builds the binary once for all tests of the package.
func buildServer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "edgefleet-server-test")
		if buildErr != nil {
			return
		}
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", filepath.Join(buildDir, "edgefleet-server"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build edgefleet-server: %v", buildErr)
	}
	return filepath.Join(buildDir, "edgefleet-server")
}

// TestSignalShutdown builds the real binary, runs it, and checks that
// SIGTERM makes it exit 0 and leaves a consistent database behind.
func TestSignalShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildServer(t)
	dataDir := t.TempDir()
	for run := range 2 { // the second run proves the lock was released
		cmd := exec.Command(bin, "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0", "--log-level", "warn")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		urls := make(chan string, 1)
		go func() {
			re := regexp.MustCompile(`console at (http://[0-9.:]+)/`)
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					urls <- m[1]
				}
			}
			exited <- cmd.Wait()
		}()
		var base string
		select {
		case base = <-urls:
		case err := <-exited:
			t.Fatalf("run %d: server exited at start: %v", run, err)
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("run %d: server printed no URL within 30 s", run)
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("run %d: readyz = %d", run, resp.StatusCode)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("run %d: exit after SIGTERM: %v, want status 0", run, err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("run %d: no exit within 20 s of SIGTERM", run)
		}
	}
	st, err := store.Open(filepath.Join(dataDir, "fleet.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Fatalf("database after shutdown: %v", err)
	}
}

func TestBadFlagsExitNonZero(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildServer(t)
	out, err := exec.Command(bin, "--log-level", "loud").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !regexp.MustCompile(`log level "loud"`).Match(out) {
		t.Fatalf("bad log level: %v\n%s", err, out)
	}
}
