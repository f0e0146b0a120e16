package auth

import "errors"

var (
	// ErrBadCredentials is returned when a login names an unknown user or
	// the wrong password; the two are not told apart, so a caller cannot
	// probe for user names.
	ErrBadCredentials = errors.New("wrong user name or password")
	// ErrRateLimited is returned when too many login attempts came from one
	// address or for one user; the error is a *RateLimitError saying when
	// to retry.
	ErrRateLimited = errors.New("too many login attempts")
	// ErrUnauthenticated is returned when a request carries no valid
	// session or API token.
	ErrUnauthenticated = errors.New("not logged in")
	// ErrForbidden is returned when the caller's role is below what the
	// action needs.
	ErrForbidden = errors.New("your role does not allow this")
	// ErrBadCSRF is returned when a form or API call made with a session
	// cookie lacks the session's CSRF token.
	ErrBadCSRF = errors.New("the form is out of date or was not sent by this console; reload the page and try again")
	// ErrInvalid is returned when a user name, password, role or token name
	// is malformed; the message says which and why.
	ErrInvalid = errors.New("invalid")
	// ErrExists is returned when creating a user that already exists.
	ErrExists = errors.New("already exists")
	// ErrNotFound is returned when a user or token does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLimit is returned when creating more users, tokens or sessions
	// than the limits allow.
	ErrLimit = errors.New("over a limit")
)
