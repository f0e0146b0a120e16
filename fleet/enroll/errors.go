package enroll

import "errors"

var (
	// ErrBadToken is returned when an enrolment token is malformed, unknown
	// or does not match its secret.
	ErrBadToken = errors.New("enrolment token not valid")
	// ErrTokenExpired is returned when an enrolment token is past its expiry.
	ErrTokenExpired = errors.New("enrolment token expired")
	// ErrTokenUsedUp is returned when an enrolment token has been used as
	// many times as it allows, or was revoked.
	ErrTokenUsedUp = errors.New("enrolment token used up or revoked")
	// ErrRefused is returned when a device is rejected or revoked, or its
	// credentials are wrong: the broker and the enrolment endpoint refuse it.
	ErrRefused = errors.New("device refused")
	// ErrPending is returned to a device that asked to join without a token
	// and has not been accepted by an operator yet.
	ErrPending = errors.New("device awaiting acceptance by an operator")
	// ErrExists is returned when a device id is already enrolled.
	ErrExists = errors.New("device id already enrolled")
	// ErrNotFound is returned when a device or token does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLimit is returned when a limit on tokens or devices is reached.
	ErrLimit = errors.New("enrolment limit reached")
	// ErrInvalid is returned for a malformed request: a bad device id, a
	// negative use count, labels out of bounds.
	ErrInvalid = errors.New("invalid enrolment request")
)
