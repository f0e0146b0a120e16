package telemetry

import "errors"

var (
	// ErrLimits is returned by NewQueue when its bounds are unusable.
	ErrLimits = errors.New("bad telemetry queue limits")
	// ErrWindowTooLarge is returned by Queue.Push when one window alone is
	// larger than the queue's byte bound.
	ErrWindowTooLarge = errors.New("telemetry window larger than the queue")
)
