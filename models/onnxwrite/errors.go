package onnxwrite

import "errors"

// ErrInvalid is returned by Encode when the graph was built with a bad
// argument: a name used twice, a node input nothing produces, data of the
// wrong size. The wrapping error names what was wrong.
var ErrInvalid = errors.New("invalid onnx graph")
