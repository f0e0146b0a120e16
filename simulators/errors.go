package simulators

import "errors"

// ErrConfig is returned by New when the fleet configuration is unusable.
var ErrConfig = errors.New("bad simulator configuration")
