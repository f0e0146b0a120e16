package runtimetest

import "errors"

// errOpened is returned by tryCorrupt when a corrupted model opened and
// then behaved (ran or refused to run): acceptable, and counted apart from
// the variants refused at Open.
var errOpened = errors.New("corrupted model opened")
