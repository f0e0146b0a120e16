package runtimetest

import (
	"testing"

	"github.com/edgefleet/edgefleet/internal/leakcheck"
)

// TestMain fails the package when its tests leave goroutines of its own
// running: every goroutine must have an owner that stops it.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "github.com/edgefleet/edgefleet/agent/runtime/runtimetest")
}
