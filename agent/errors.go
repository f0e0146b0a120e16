package agent

import "errors"

var (
	// ErrConfig is returned by New when the configuration is unusable; the
	// message names the setting.
	ErrConfig = errors.New("bad agent configuration")
	// ErrUnknownModel is returned by Infer when no model of that name is
	// loaded.
	ErrUnknownModel = errors.New("unknown model")
	// ErrNoBackend is returned by New when no available backend runs a
	// configured model's format.
	ErrNoBackend = errors.New("no inference backend for model")
	// ErrRunning is returned by Run when the agent is already running or
	// has been closed.
	ErrRunning = errors.New("agent already running or closed")
	// ErrClosed is returned by Infer after Close.
	ErrClosed = errors.New("agent closed")
)
