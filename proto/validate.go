package proto

import (
	"fmt"
	"math"
)

// validate checks the rules a decoded message must follow beyond being
// well-formed protobuf.
func validate(m Message, deviceID string) error {
	switch m := m.(type) {
	case *Hello:
		return validateHello(m, deviceID)
	case *Status:
		if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
			return err
		}
		if m.GetState() != Status_STATE_ONLINE && m.GetState() != Status_STATE_OFFLINE {
			return fmt.Errorf("%w: status state %v is neither online nor offline", ErrInvalid, m.GetState())
		}
		return nil
	case *TelemetryWindow:
		return validateTelemetry(m, deviceID)
	case *DesiredDeployment:
		if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
			return err
		}
		if len(m.GetModels()) > MaxModels {
			return fmt.Errorf("%w: %d desired models, limit %d", ErrInvalid, len(m.GetModels()), MaxModels)
		}
		for i, dm := range m.GetModels() {
			if dm.GetName() == "" || dm.GetVersion() == "" {
				return fmt.Errorf("%w: desired model %d has no name or version", ErrInvalid, i)
			}
			if err := checkStrings("desired model", dm.GetName(), dm.GetVersion(), dm.GetFormat(), dm.GetBackend(), dm.GetSha256(), dm.GetJobId()); err != nil {
				return err
			}
			if len(dm.GetUrl()) > 4*MaxStringLen {
				return fmt.Errorf("%w: desired model %d url is %d bytes", ErrInvalid, i, len(dm.GetUrl()))
			}
		}
		return nil
	case *JobProgress:
		if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
			return err
		}
		if f := m.GetFraction(); math.IsNaN(f) || f < 0 || f > 1 {
			return fmt.Errorf("%w: job progress fraction %v is outside 0..1", ErrInvalid, f)
		}
		return checkStrings("job progress", m.GetJobId(), m.GetModel(), m.GetVersion(), m.GetReason())
	case *Command:
		if err := checkVersion(m.GetProtocolVersion()); err != nil {
			return err
		}
		if m.GetRequestId() == "" || m.GetName() == "" {
			return fmt.Errorf("%w: command without request id or name", ErrInvalid)
		}
		if err := checkMap("command args", m.GetArgs()); err != nil {
			return err
		}
		return checkStrings("command", m.GetRequestId(), m.GetName())
	case *Ack:
		if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
			return err
		}
		if m.GetRequestId() == "" {
			return fmt.Errorf("%w: ack without request id", ErrInvalid)
		}
		if err := checkMap("ack result", m.GetResult()); err != nil {
			return err
		}
		return checkStrings("ack", m.GetRequestId(), m.GetError())
	}
	return nil
}

func checkVersion(v uint32) error {
	if v == 0 {
		return fmt.Errorf("%w: protocol_version is missing", ErrInvalid)
	}
	if v > ProtocolVersion {
		return fmt.Errorf("%w: protocol_version %d is newer than this build's %d", ErrInvalid, v, ProtocolVersion)
	}
	return nil
}

func checkHeader(version uint32, got, want string) error {
	if err := checkVersion(version); err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: device_id %q in the payload does not match %q in the topic", ErrInvalid, truncate(got), want)
	}
	return nil
}

func validateHello(m *Hello, deviceID string) error {
	if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
		return err
	}
	if err := checkStrings("hello", m.GetAgentVersion(), m.GetFirmwareProfile()); err != nil {
		return err
	}
	if err := checkMap("labels", m.GetLabels()); err != nil {
		return err
	}
	if n := len(m.GetBackends()); n > MaxBackends {
		return fmt.Errorf("%w: %d backends, limit %d", ErrInvalid, n, MaxBackends)
	}
	for _, b := range m.GetBackends() {
		if err := checkStrings("backend", b.GetName(), b.GetVersion(), b.GetReason()); err != nil {
			return err
		}
		if err := checkList("backend formats", b.GetFormats(), 8); err != nil {
			return err
		}
	}
	if err := checkInstalled(m.GetModels()); err != nil {
		return err
	}
	if hw := m.GetHardware(); hw != nil {
		if err := checkStrings("hardware", hw.GetArch(), hw.GetOs(), hw.GetCpuModel(), hw.GetBoardModel(), hw.GetKernelVersion(), hw.GetOsRelease(), hw.GetFirmwareVersion()); err != nil {
			return err
		}
		if err := checkList("cpu flags", hw.GetCpuFlags(), MaxCPUFlags); err != nil {
			return err
		}
		if err := checkList("accelerators", hw.GetAccelerators(), MaxAccelerators); err != nil {
			return err
		}
	}
	return nil
}

func checkInstalled(models []*InstalledModel) error {
	if len(models) > MaxModels {
		return fmt.Errorf("%w: %d installed models, limit %d", ErrInvalid, len(models), MaxModels)
	}
	for _, im := range models {
		if err := checkStrings("installed model", im.GetName(), im.GetVersion(), im.GetFormat(), im.GetBackend(), im.GetSha256(), im.GetSlot()); err != nil {
			return err
		}
	}
	return nil
}

func validateTelemetry(m *TelemetryWindow, deviceID string) error {
	if err := checkHeader(m.GetProtocolVersion(), m.GetDeviceId(), deviceID); err != nil {
		return err
	}
	if m.GetSeq() == 0 {
		return fmt.Errorf("%w: telemetry window has no seq", ErrInvalid)
	}
	if m.GetEndUnixMs() < m.GetStartUnixMs() {
		return fmt.Errorf("%w: telemetry window ends (%d) before it starts (%d)", ErrInvalid, m.GetEndUnixMs(), m.GetStartUnixMs())
	}
	if len(m.GetModels()) > MaxModels {
		return fmt.Errorf("%w: %d model stats, limit %d", ErrInvalid, len(m.GetModels()), MaxModels)
	}
	for _, ms := range m.GetModels() {
		if err := checkStrings("model stats", ms.GetName(), ms.GetVersion()); err != nil {
			return err
		}
		if ms.GetErrors() > ms.GetRequests() {
			return fmt.Errorf("%w: model %s %s reports %d errors in %d requests", ErrInvalid, truncate(ms.GetName()), truncate(ms.GetVersion()), ms.GetErrors(), ms.GetRequests())
		}
		for _, v := range []float64{ms.GetP50Ms(), ms.GetP95Ms(), ms.GetP99Ms()} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return fmt.Errorf("%w: model %s latency percentile %v is not a finite non-negative number", ErrInvalid, truncate(ms.GetName()), v)
			}
		}
		if len(ms.GetErrorsByKind()) > MaxLabels {
			return fmt.Errorf("%w: %d error kinds, limit %d", ErrInvalid, len(ms.GetErrorsByKind()), MaxLabels)
		}
		if h := ms.GetLatency(); h != nil {
			if len(h.GetBoundsMs()) > MaxHistogramSlots {
				return fmt.Errorf("%w: histogram has %d bounds, limit %d", ErrInvalid, len(h.GetBoundsMs()), MaxHistogramSlots)
			}
			if len(h.GetCounts()) != len(h.GetBoundsMs())+1 && len(h.GetCounts())+len(h.GetBoundsMs()) != 0 {
				return fmt.Errorf("%w: histogram has %d counts for %d bounds; want bounds+1", ErrInvalid, len(h.GetCounts()), len(h.GetBoundsMs()))
			}
			for i := 1; i < len(h.GetBoundsMs()); i++ {
				if !(h.GetBoundsMs()[i] > h.GetBoundsMs()[i-1]) {
					return fmt.Errorf("%w: histogram bounds are not increasing at %d", ErrInvalid, i)
				}
			}
		}
	}
	if p := m.GetProcess(); p != nil {
		if v := p.GetCpuPercent(); math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("%w: cpu_percent %v is not a finite non-negative number", ErrInvalid, v)
		}
	}
	if s := m.GetSystem(); s != nil && s.GetHasTemperature() {
		if v := s.GetTemperatureC(); math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: temperature %v is not finite", ErrInvalid, v)
		}
	}
	return nil
}

func checkStrings(what string, ss ...string) error {
	for _, s := range ss {
		if len(s) > MaxStringLen {
			return fmt.Errorf("%w: %s has a string of %d bytes, limit %d", ErrInvalid, what, len(s), MaxStringLen)
		}
	}
	return nil
}

func checkList(what string, ss []string, limit int) error {
	if len(ss) > limit {
		return fmt.Errorf("%w: %d %s, limit %d", ErrInvalid, len(ss), what, limit)
	}
	return checkStrings(what, ss...)
}

func checkMap(what string, m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%w: %d %s, limit %d", ErrInvalid, len(m), what, MaxLabels)
	}
	for k, v := range m {
		if k == "" || len(k) > MaxLabelKeyLen {
			return fmt.Errorf("%w: %s key %q is empty or longer than %d bytes", ErrInvalid, what, truncate(k), MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValueLen {
			return fmt.Errorf("%w: %s value for %q is %d bytes, limit %d", ErrInvalid, what, k, len(v), MaxLabelValueLen)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
