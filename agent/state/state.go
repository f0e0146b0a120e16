// Package state is the agent's local state: its device id, the session
// counter its status messages carry, the telemetry sequence, the installed
// models and the queue of telemetry windows waiting for the broker.
//
// Two stores implement the same domain methods: Bolt, a bbolt file in the
// agent's state directory that survives restarts and power loss, and
// Memory, for the simulator, where ten thousand devices in one process
// cannot each afford a bbolt file (a memory map and a file lock apiece).
// Both pass the same conformance suite (statetest.Run).
package state

import (
	"crypto/rand"
	"encoding/hex"
)

// Model is one installed model version, as the hello message reports it.
type Model struct {
	Name      string
	Version   string
	Format    string
	Backend   string
	SHA256    string
	SizeBytes uint64
	Active    bool
	Slot      string
}

// MaxModels bounds the installed models a store keeps.
const MaxModels = 64

// NewDeviceID returns a fresh random device id, "ef-" and 24 hex digits,
// valid under proto.ValidateDeviceID.
func NewDeviceID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return "ef-" + hex.EncodeToString(b[:])
}
