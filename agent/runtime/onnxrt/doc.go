// Package onnxrt runs ONNX models through ONNX Runtime, loaded at run time
// from a shared library, as the "onnxruntime" inference backend.
//
// The backend exists only in cgo builds: every file that touches ONNX
// Runtime carries `//go:build cgo`, so a static CGO_ENABLED=0 agent still
// builds (with this package empty) and serves with the built-in engine.
// Importing the package for its side effect registers the backend:
//
//	import _ "github.com/edgefleet/edgefleet/agent/runtime/onnxrt"
//
// The library is looked for, in order, at Settings["library"] (agent config
// or firmware profile), $EDGEFLEET_ONNXRUNTIME_LIB, and the system's usual
// places (/usr/local/lib, /usr/lib, /usr/lib/<triplet>, then the dynamic
// linker's own search). A library that is missing, not loadable or older than
// ONNX Runtime 1.24 (C API 24, what github.com/yalue/onnxruntime_go v1.27.0
// needs) makes Available return an error wrapping runtime.ErrUnavailable;
// nothing crashes. deploy/onnxruntime/fetch.sh fetches a pinned build.
//
// ONNX Runtime's environment is process-wide: the first library loaded is
// the one every backend value in the process uses.
package onnxrt

// Settings keys read from runtime.Config.Settings.
const (
	// SettingLibrary is the path of libonnxruntime.so.
	SettingLibrary = "library"
	// SettingGraphOptimization is "disable", "basic", "extended" or "all"
	// (the default).
	SettingGraphOptimization = "graph_optimization"
	// SettingMemoryArena is "on" (the default) or "off". Off returns memory
	// to the system after each run at some cost in speed.
	SettingMemoryArena = "memory_arena"
	// SettingSpinning is "off" (the default) or "on". ONNX Runtime's worker
	// threads busy-wait between tasks when on, which burns a shared
	// gateway's CPU for a little latency.
	SettingSpinning = "spinning"
)

// EnvLibrary names the environment variable consulted for the library's
// path when Settings["library"] is empty.
const EnvLibrary = "EDGEFLEET_ONNXRUNTIME_LIB"

// Name is the name the backend registers under.
const Name = "onnxruntime"

// minAPI is the ONNX Runtime C API version onnxruntime_go v1.27.0 requests.
const minAPI = 24
