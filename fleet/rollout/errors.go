package rollout

import "errors"

var (
	// ErrInvalid is returned when a rollout spec, group, selector or action
	// is malformed; the message names the field.
	ErrInvalid = errors.New("invalid rollout request")
	// ErrNotFound is returned when a rollout or group does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when an action does not apply to the
	// rollout's current state (resuming a completed rollout), or when a
	// model already has an active rollout.
	ErrConflict = errors.New("conflicts with the current state")
	// ErrNoTargets is returned when a rollout's group resolves to no
	// device that can run the version.
	ErrNoTargets = errors.New("no compatible device in the target group")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("rollout engine closed")
	// ErrLimit is returned when a request exceeds a bound (devices in a
	// group, phases, rollouts).
	ErrLimit = errors.New("over a limit")
)
