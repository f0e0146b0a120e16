package broker

import "errors"

var (
	// ErrNotReady is returned by Ready and Publish when the broker is not
	// serving (not started, closed) or, for an external broker, not connected.
	ErrNotReady = errors.New("mqtt broker not ready")
	// ErrBadURL is returned by NewExternal when the broker URL cannot be used.
	ErrBadURL = errors.New("bad mqtt broker url")
	// ErrPublish is returned when a publish was not accepted in time.
	ErrPublish = errors.New("mqtt publish failed")
)
