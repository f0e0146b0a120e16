package wire

import "errors"

var (
	// ErrFrame is returned when a binary tensor frame is malformed: bad
	// magic, truncated, trailing bytes, or a header field out of range.
	ErrFrame = errors.New("malformed tensor frame")
	// ErrJSON is returned when tensor data in a JSON body is not a flat
	// array of numbers.
	ErrJSON = errors.New("malformed JSON tensor data")
	// ErrDType is returned when a dtype name or code is unknown.
	ErrDType = errors.New("unknown dtype")
	// ErrSize is returned when a tensor's data does not match its shape.
	ErrSize = errors.New("tensor data does not match its shape")
	// ErrRange is returned when a JSON number does not fit the dtype.
	ErrRange = errors.New("value out of range for dtype")
)
