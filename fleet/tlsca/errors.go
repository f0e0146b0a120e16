package tlsca

import "errors"

var (
	// ErrBadCA is returned when the stored CA cannot be used.
	ErrBadCA = errors.New("unusable TLS CA")
	// ErrBadCSR is returned by SignClient for a request it cannot sign.
	ErrBadCSR = errors.New("unusable certificate request")
)
