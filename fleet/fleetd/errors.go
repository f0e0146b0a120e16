package fleetd

import "errors"

var (
	// ErrNotRunning is returned by Ready when the server is not serving:
	// before Run, or once shutdown has begun.
	ErrNotRunning = errors.New("fleet server not running")
	// ErrRunOnce is returned by Run when called a second time or after
	// Close; a Server runs once.
	ErrRunOnce = errors.New("fleet server runs once")
	// ErrConfig is returned by New for security settings that are unknown
	// or incomplete (--mqtt-auth, --tls and its files).
	ErrConfig = errors.New("bad server configuration")
)
