package store

import "time"

// Device is what the fleet knows about one device. It is the record the
// inventory keeps; the JSON tags are its storage encoding, so renaming one
// needs a schema migration.
type Device struct {
	ID              string            `json:"id"`
	FirstSeen       time.Time         `json:"first_seen"`
	LastSeen        time.Time         `json:"last_seen"`
	Online          bool              `json:"online"`
	Session         uint64            `json:"session"`
	AgentVersion    string            `json:"agent_version,omitempty"`
	ProtocolVersion uint32            `json:"protocol_version,omitempty"`
	Profile         string            `json:"profile,omitempty"`
	Hardware        Hardware          `json:"hardware"`
	Backends        []Backend         `json:"backends,omitempty"`
	Models          []InstalledModel  `json:"models,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// LastSeq is the highest telemetry window seq ingested; windows at or
	// below it are resends and are not counted again.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// WindowsDropped is the device's own count of telemetry windows it lost
	// from its offline queue.
	WindowsDropped uint64 `json:"windows_dropped,omitempty"`
}

// Hardware mirrors proto.Hardware.
type Hardware struct {
	Arch            string   `json:"arch,omitempty"`
	OS              string   `json:"os,omitempty"`
	CPUModel        string   `json:"cpu_model,omitempty"`
	CPUFlags        []string `json:"cpu_flags,omitempty"`
	Cores           uint32   `json:"cores,omitempty"`
	MemoryBytes     uint64   `json:"memory_bytes,omitempty"`
	Accelerators    []string `json:"accelerators,omitempty"`
	BoardModel      string   `json:"board_model,omitempty"`
	KernelVersion   string   `json:"kernel_version,omitempty"`
	OSRelease       string   `json:"os_release,omitempty"`
	FirmwareVersion string   `json:"firmware_version,omitempty"`
}

// Backend mirrors proto.Backend.
type Backend struct {
	Name      string   `json:"name"`
	Version   string   `json:"version,omitempty"`
	Available bool     `json:"available"`
	Reason    string   `json:"reason,omitempty"`
	Formats   []string `json:"formats,omitempty"`
}

// InstalledModel mirrors proto.InstalledModel.
type InstalledModel struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Format    string `json:"format,omitempty"`
	Backend   string `json:"backend,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	SizeBytes uint64 `json:"size_bytes,omitempty"`
	Active    bool   `json:"active"`
	Slot      string `json:"slot,omitempty"`
}

// ActiveModel returns the model the device serves with, if any.
func (d *Device) ActiveModel() (InstalledModel, bool) {
	for _, m := range d.Models {
		if m.Active {
			return m, true
		}
	}
	return InstalledModel{}, false
}

// Window is one stored telemetry window: the payload exactly as the device
// sent it (an encoded proto.TelemetryWindow), so later readers decode the
// fields they need, including ones this build does not know.
type Window struct {
	Seq      uint64    `json:"seq"`
	Received time.Time `json:"received"`
	Payload  []byte    `json:"payload"`
}
