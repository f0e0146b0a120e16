package tflitewrite

import "errors"

var (
	// ErrInvalid is returned by Encode when the graph was built with a bad
	// argument: an unknown tensor, a dtype or shape an operator cannot take,
	// quantization that does not fit its tensor, constant data of the wrong
	// size. The wrapping error names the tensor or operator.
	ErrInvalid = errors.New("invalid tflite graph")
)
