package telemetry

import (
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// Sampler reads the process and system figures of a window. The agent
// uses ProcSampler; the simulator a cheap synthetic one, since ten
// thousand devices in one process share one /proc.
type Sampler interface {
	Sample() (*proto.ProcessStats, *proto.SystemStats)
}

// BuildWindow assembles the window [start, end) numbered seq: the
// recorder's figures since the last window (which it resets), the
// sampler's, and the queue's cumulative drop counter.
func BuildWindow(deviceID string, seq uint64, start, end time.Time, rec *Recorder, s Sampler, dropped uint64) *proto.TelemetryWindow {
	w := &proto.TelemetryWindow{
		ProtocolVersion: proto.ProtocolVersion,
		DeviceId:        deviceID,
		Seq:             seq,
		StartUnixMs:     start.UnixMilli(),
		EndUnixMs:       end.UnixMilli(),
		WindowsDropped:  dropped,
	}
	if w.EndUnixMs < w.StartUnixMs {
		// A clock stepped back (NTP on a device without an RTC); a window
		// must not end before it starts.
		w.EndUnixMs = w.StartUnixMs
	}
	if rec != nil {
		w.Models = rec.Flush()
	}
	if s != nil {
		w.Process, w.System = s.Sample()
	}
	return w
}
