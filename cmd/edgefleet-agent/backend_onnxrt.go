//go:build cgo

package main

// ONNX Runtime, loaded at run time, in cgo builds only; a static agent runs
// the built-in engine alone.
import _ "github.com/edgefleet/edgefleet/agent/runtime/onnxrt"
