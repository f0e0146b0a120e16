package state

import "errors"

var (
	// ErrLocked is returned by OpenBolt when another process (another
	// agent with the same state directory) holds the state file.
	ErrLocked = errors.New("agent state is locked by another process")
	// ErrCorrupt is returned when the state file or a value in it is not
	// what this agent wrote.
	ErrCorrupt = errors.New("agent state is corrupt")
	// ErrSeqOrder is returned by AppendWindow when the seq is not larger
	// than every queued one.
	ErrSeqOrder = errors.New("telemetry window seq out of order")
	// ErrTooMany is returned when a write would exceed a bound of the store.
	ErrTooMany = errors.New("too many entries")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("agent state closed")
)
