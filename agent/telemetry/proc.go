package telemetry

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// ProcSampler reads the figures of this process and machine from /proc and
// /sys. Figures the machine does not expose are left zero (temperature is
// flagged absent).
type ProcSampler struct {
	// Root is the file system with proc/ and sys/; nil means "/".
	Root fs.FS
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu        sync.Mutex
	lastTicks uint64
	lastAt    time.Time
}

// clockTicks is USER_HZ, 100 on every Linux architecture the agent runs on.
const clockTicks = 100

// Sample implements Sampler.
func (p *ProcSampler) Sample() (*proto.ProcessStats, *proto.SystemStats) {
	root := p.Root
	if root == nil {
		root = os.DirFS("/")
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	ps := &proto.ProcessStats{Goroutines: uint32(runtime.NumGoroutine())}
	ss := &proto.SystemStats{}

	if ticks, ok := procTicks(read(root, "proc/self/stat")); ok {
		t := now()
		p.mu.Lock()
		if !p.lastAt.IsZero() && ticks >= p.lastTicks {
			if el := t.Sub(p.lastAt).Seconds(); el > 0 {
				ps.CpuPercent = float64(ticks-p.lastTicks) / clockTicks / el * 100
			}
		}
		p.lastTicks, p.lastAt = ticks, t
		p.mu.Unlock()
	}
	ps.RssBytes = kbField(read(root, "proc/self/status"), "VmRSS:")
	mi := read(root, "proc/meminfo")
	ss.MemoryTotalBytes = kbField(mi, "MemTotal:")
	ss.MemoryAvailableBytes = kbField(mi, "MemAvailable:")
	if f := strings.Fields(string(read(root, "proc/loadavg"))); len(f) > 0 {
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && v >= 0 && v < 1e6 {
			ss.Load1 = v
		}
	}
	ss.HasTemperature, ss.TemperatureC = temperature(root)
	return ps, ss
}

func read(root fs.FS, name string) []byte {
	b, err := fs.ReadFile(root, name)
	if err != nil || len(b) > 1<<20 {
		return nil
	}
	return b
}

// procTicks returns utime+stime from /proc/self/stat. The command name in
// field 2 may contain spaces and parentheses, so fields are counted after
// the last ')'.
func procTicks(b []byte) (uint64, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state(3) ppid ... utime is field 14, stime 15 → index 11, 12.
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return u + s, true
}

func kbField(b []byte, key string) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			v, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil || v > 1<<42 {
				return 0
			}
			return v * 1024
		}
	}
	return 0
}

// temperature returns the hottest thermal zone, in °C: the one that
// throttles first is the one that matters for inference latency.
func temperature(root fs.FS) (bool, float64) {
	zones, _ := fs.Glob(root, "sys/class/thermal/thermal_zone*/temp")
	found, hottest := false, 0.0
	for i, z := range zones {
		if i >= 32 {
			break
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(read(root, z))), 10, 64)
		if err != nil || v < -50_000 || v > 200_000 {
			continue
		}
		c := float64(v) / 1000
		if !found || c > hottest {
			found, hottest = true, c
		}
	}
	return found, hottest
}
