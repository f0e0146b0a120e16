package enroll

import "errors"

var (
	// ErrNotEnrolled is returned by Load when the state directory has no
	// credentials: run `edgefleet-agent enroll` first.
	ErrNotEnrolled = errors.New("device not enrolled")
	// ErrBadCredentials is returned when credentials, a CA pin or the
	// server's answer cannot be used.
	ErrBadCredentials = errors.New("unusable enrolment credentials")
	// ErrRefused is returned when the server refused the enrolment; the
	// message says why (bad or expired token, used up, rejected device).
	ErrRefused = errors.New("enrolment refused")
	// ErrPending is returned when the device was still waiting for an
	// operator when the caller gave up.
	ErrPending = errors.New("enrolment pending")
)
