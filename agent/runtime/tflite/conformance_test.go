package tflite

import (
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
)

// TestConformance runs the shared backend conformance suite. The reference
// outputs come from LiteRT, so the engine runs in LiteRT arithmetic.
func TestConformance(t *testing.T) {
	runtimetest.Run(t, New(litert), runtimetest.Options{Format: "tflite"})
}
