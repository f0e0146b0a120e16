package runtime

import "errors"

var (
	// ErrUnknownBackend is returned by New when no backend has that name.
	ErrUnknownBackend = errors.New("unknown inference backend")
	// ErrUnavailable is returned by Backend.Available (and Open) when the
	// backend cannot run on this device: a missing shared library, a CPU
	// without a needed feature, a library too old.
	ErrUnavailable = errors.New("inference backend unavailable")
	// ErrBadModel is returned when model bytes are corrupt, truncated or
	// inconsistent.
	ErrBadModel = errors.New("bad model")
	// ErrUnsupported is returned when a model is valid but uses something the
	// backend does not implement (an operator, a dtype, an option).
	ErrUnsupported = errors.New("unsupported by backend")
	// ErrInput is returned by Session.Run when inputs or outputs do not match
	// the model: count, dtype, shape or byte size.
	ErrInput = errors.New("bad inference input")
	// ErrClosed is returned when a closed model or session is used.
	ErrClosed = errors.New("model or session closed")
	// ErrArenaLimit is returned when a model needs more working memory than
	// Options.ArenaLimit allows.
	ErrArenaLimit = errors.New("model exceeds arena limit")
)
