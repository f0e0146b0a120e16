package runtimetest

import (
	"fmt"
	"os"
	goruntime "runtime"
	"testing"
	"time"
)

// TestMain fails the package when tests leave goroutines behind: the suite
// waits for every goroutine it starts, even those of a backend that hangs
// (released at the test's cleanup).
func TestMain(m *testing.M) {
	base := goruntime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		if n := settle(base); n > base {
			buf := make([]byte, 1<<20)
			buf = buf[:goruntime.Stack(buf, true)]
			fmt.Fprintf(os.Stderr, "goroutines leaked: %d before the tests, %d after\n%s", base, n, buf)
			code = 1
		}
	}
	os.Exit(code)
}

// settle gives exiting goroutines a bounded chance to finish and returns
// how many are left.
func settle(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	n := goruntime.NumGoroutine()
	for n > want && time.Now().Before(deadline) {
		goruntime.Gosched()
		time.Sleep(10 * time.Millisecond)
		n = goruntime.NumGoroutine()
	}
	return n
}
