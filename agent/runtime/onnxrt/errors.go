package onnxrt

import "errors"

// The backend returns the sentinel errors of package runtime
// (ErrUnavailable, ErrBadModel, ErrUnsupported, ErrInput, ErrClosed); these
// are its internal ones.

// errNoGraphIO is returned by graphIO when the model declares its inputs
// and outputs in a way it cannot describe exactly; Open then asks ONNX
// Runtime instead.
var errNoGraphIO = errors.New("graph inputs and outputs not described exactly")
