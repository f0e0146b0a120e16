package hw

import "errors"

// ErrNoProfile is returned by Match when no profile, not even a generic
// one, exists for the device's architecture.
var ErrNoProfile = errors.New("no firmware profile for this device")
