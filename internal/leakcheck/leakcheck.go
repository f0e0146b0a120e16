// Package leakcheck fails a package's tests when they leave goroutines of
// that package running: every goroutine must have an owner that stops it
// and waits for it (STYLE.md 12). Call it from TestMain.
package leakcheck

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Wait is how long Main gives goroutines that are already ending.
const Wait = 5 * time.Second

// Main runs the tests and exits with their code; when they passed, it fails
// the run if a goroutine with a frame in pkg (an import path such as
// "github.com/edgefleet/edgefleet/fleet/registry") is still alive Wait later,
// and prints the stacks of those that are.
func Main(m *testing.M, pkg string) {
	code := m.Run()
	if code == 0 {
		if leaked := Leaked(pkg, Wait); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by %s:\n%s\n", pkg, leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Leaked waits up to d for goroutines with a frame in pkg to end, and
// returns the stacks of those that did not ("" when none is left).
func Leaked(pkg string, d time.Duration) string {
	http.DefaultClient.CloseIdleConnections()
	frame := pkg + "."
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if isLeak(g, frame) {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// isLeak reports whether the goroutine stack g runs code of the package
// (frame is "import/path."; a test package's frames are "import/path_test.")
// other than the test binary's own main goroutine.
func isLeak(g, frame string) bool {
	testFrame := strings.TrimSuffix(frame, ".") + "_test."
	if !strings.Contains(g, frame) && !strings.Contains(g, testFrame) {
		return false
	}
	// The goroutine asking (Main's, or a test calling Leaked) is not a leak.
	return !strings.Contains(g, ".TestMain(") && !strings.Contains(g, "leakcheck.Leaked(")
}
