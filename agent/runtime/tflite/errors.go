package tflite

import (
	"errors"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// The engine reports the runtime package's sentinels so callers need to know
// only those; these aliases keep the call sites short.
var (
	errBadModel    = runtime.ErrBadModel
	errUnsupported = runtime.ErrUnsupported
)

var (
	// ErrExternalBuffer is returned (wrapped with runtime.ErrUnsupported) when
	// a model keeps tensor data outside the flatbuffer (Buffer.offset/size,
	// used for models over 2 GB); the engine reads only self-contained files.
	ErrExternalBuffer = errors.New("tensor data stored outside the flatbuffer")
	// ErrRuntimeIndex is returned by Run when a tensor computed at run time
	// (a GATHER index, say) points outside the tensor it indexes.
	ErrRuntimeIndex = errors.New("index out of range at run time")
)
