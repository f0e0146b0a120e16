package client

import "errors"

var (
	// ErrBusy is matched (errors.Is) by an *Error for a request turned
	// away for load: 429 (queue full, deadline cannot be met) or 503 with
	// kind "expired". Its RetryAfter says when to try again.
	ErrBusy = errors.New("inference server busy")
	// ErrNotFound is matched by an *Error for an unknown model (404).
	ErrNotFound = errors.New("model not found")
	// ErrBadRequest is matched by an *Error for a 4xx other than 404 and
	// 429: the request itself was wrong and retrying will not help.
	ErrBadRequest = errors.New("bad inference request")
	// ErrResponse is returned when the server's answer cannot be read.
	ErrResponse = errors.New("malformed inference response")
)
