package inventory

import "errors"

var (
	// ErrRejected is returned by Handle when a device message is dropped for
	// what it is (bad topic, payload or sender); it was counted and logged.
	// The transport should acknowledge it anyway: resending cannot fix it.
	ErrRejected = errors.New("device message rejected")
	// ErrBadQuery is returned by List when a filter, limit or cursor is not
	// valid; the message names which.
	ErrBadQuery = errors.New("bad device query")
	// ErrNotFound is returned by Device when no device has the id.
	ErrNotFound = errors.New("device not found")
)
