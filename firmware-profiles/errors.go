package profiles

import "errors"

// ErrInvalid is returned when a profile file cannot be parsed or breaks a
// rule; the message names the file and the field.
var ErrInvalid = errors.New("invalid firmware profile")
