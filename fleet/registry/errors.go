package registry

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is returned when a publish request, a name or a version
	// breaks a rule; the error is a *FieldError naming the field.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound is returned when a model or a version does not exist.
	ErrNotFound = errors.New("not found")
	// ErrVersionExists is returned when a version is published again with
	// content that differs from what was published first. Published versions
	// are immutable: publish a new version instead.
	ErrVersionExists = errors.New("version already published with different content")
	// ErrIncompatible is returned by Resolve when no variant of a version can
	// run on a device; the error is an *IncompatibleError with the reasons.
	ErrIncompatible = errors.New("no compatible variant")
	// ErrArtifactNotFound is returned when a sha256 is not in the artifact
	// store.
	ErrArtifactNotFound = errors.New("artifact not found")
	// ErrArtifactTooLarge is returned when an upload is larger than the
	// configured limit.
	ErrArtifactTooLarge = errors.New("artifact too large")
	// ErrDigestMismatch is returned when uploaded bytes do not have the
	// sha256 or size the uploader declared.
	ErrDigestMismatch = errors.New("artifact does not match its declared digest")
	// ErrInsufficientSpace is returned when the artifact store's disk has
	// too little free space to accept an upload.
	ErrInsufficientSpace = errors.New("insufficient disk space for the artifact")
	// ErrKeyPermissions is returned when the signing key file can be read by
	// users other than its owner.
	ErrKeyPermissions = errors.New("signing key file permissions too open")
	// ErrSchemaTooNew is returned by Open when the database holds registry
	// data written by a newer build.
	ErrSchemaTooNew = errors.New("registry schema is newer than this build")
	// ErrLocked is returned by Open when another process holds the database
	// file.
	ErrLocked = errors.New("registry database is in use by another process")
	// ErrClosed is returned when the registry is used after Close.
	ErrClosed = errors.New("registry closed")
)

// FieldError names the field of a request that broke a rule. It wraps
// ErrInvalid.
type FieldError struct {
	Field  string // "version", "variants[1].profiles[0]", ...
	Reason string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
