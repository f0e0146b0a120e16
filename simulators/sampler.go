package simulators

import (
	"github.com/edgefleet/edgefleet/proto"
)

// simSampler reports plausible, constant process and system figures:
// reading /proc ten thousand times per interval would measure the
// simulator, not the devices.
type simSampler struct{ memTotal uint64 }

func (s simSampler) Sample() (*proto.ProcessStats, *proto.SystemStats) {
	return &proto.ProcessStats{CpuPercent: 3.5, RssBytes: 38 << 20, Goroutines: 12},
		&proto.SystemStats{MemoryTotalBytes: s.memTotal, MemoryAvailableBytes: s.memTotal / 2, HasTemperature: true, TemperatureC: 48.5, Load1: 0.4}
}
