package proto

import "errors"

var (
	// ErrTooLarge is returned when a payload is larger than MaxPayloadBytes.
	ErrTooLarge = errors.New("payload too large")
	// ErrMalformed is returned when a payload is not a valid protobuf
	// encoding of the message its topic names.
	ErrMalformed = errors.New("malformed payload")
	// ErrInvalid is returned when a payload decodes but breaks a rule of the
	// protocol: a missing or future protocol version, a device id that does
	// not match, a list or string over its limit.
	ErrInvalid = errors.New("invalid message")
)
