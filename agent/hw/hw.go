// Package hw probes the hardware facts of the device the agent runs on (CPU
// model and the flags that matter for inference, cores, memory, accelerator
// device nodes, board, kernel, OS and firmware versions) and matches them
// against the firmware profiles.
//
// Probing reads files only, from a file system rooted at "/" that tests
// replace with testdata trees, so the same code is tested against a Pi 4, a
// Pi 5, a Jetson and an x86 IPC on any machine. Missing files are not
// errors: a fact the device does not expose is left empty.
package hw

import (
	"bufio"
	"bytes"
	"io"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/proto"
)

// Facts are what the agent knows about its hardware.
type Facts struct {
	Arch     string // GOARCH
	OS       string // GOOS
	CPUModel string
	// CPUFlags holds only the flags that matter for inference, sorted.
	CPUFlags []string
	Cores    int
	// MemoryBytes is MemTotal from /proc/meminfo.
	MemoryBytes uint64
	// Accelerators are the device nodes present, e.g. /dev/apex_0.
	Accelerators []string
	BoardModel   string
	Kernel       string
	// OSRelease is PRETTY_NAME from os-release, OSVersion its VERSION_ID.
	OSRelease string
	OSVersion string
	// FirmwareVersion is the L4T release on Jetson, the BIOS version from
	// DMI on x86, or empty.
	FirmwareVersion string
}

// Proto returns the facts as the protocol's Hardware message.
func (f Facts) Proto() *proto.Hardware {
	return &proto.Hardware{
		Arch:            f.Arch,
		Os:              f.OS,
		CpuModel:        f.CPUModel,
		CpuFlags:        append([]string(nil), f.CPUFlags...),
		Cores:           uint32(f.Cores),
		MemoryBytes:     f.MemoryBytes,
		Accelerators:    append([]string(nil), f.Accelerators...),
		BoardModel:      f.BoardModel,
		KernelVersion:   f.Kernel,
		OsRelease:       f.OSRelease,
		FirmwareVersion: f.FirmwareVersion,
	}
}

// HasFlag reports whether the CPU has the flag.
func (f Facts) HasFlag(flag string) bool {
	for _, x := range f.CPUFlags {
		if x == flag {
			return true
		}
	}
	return false
}

// HasAccelerator reports whether the device node exists.
func (f Facts) HasAccelerator(node string) bool {
	for _, x := range f.Accelerators {
		if x == node {
			return true
		}
	}
	return false
}

// InferenceFlags are the CPU flags worth reporting: the ones that decide
// which kernels or backends are fast on a device. Everything else in
// /proc/cpuinfo is noise for the fleet.
var InferenceFlags = []string{
	// x86
	"sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
	"avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
	// arm64
	"asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2",
	// 32-bit arm
	"neon", "vfpv4",
}

// AcceleratorNodes are the device nodes probed for.
var AcceleratorNodes = []string{
	"/dev/apex_0",          // Coral Edge TPU (PCIe/M.2 and Dev Board)
	"/dev/nvidia0",         // NVIDIA GPU (desktop driver)
	"/dev/nvhost-ctrl-gpu", // NVIDIA Jetson integrated GPU
	"/dev/hailo0",          // Hailo-8
	"/dev/rknpu",           // Rockchip NPU
	"/dev/dri/renderD128",  // any GPU with a render node
}

// maxFileBytes bounds what Probe reads from any one file; cpuinfo of a
// 256-core server is about 400 KiB.
const maxFileBytes = 1 << 20

// Probe reads the facts of the machine it runs on.
func Probe() Facts {
	return ProbeFS(os.DirFS("/"), runtime.GOARCH)
}

// ProbeFS reads the facts from root, a file system laid out like "/"
// (proc/cpuinfo, sys/..., etc/os-release, dev/...), for a machine of the
// given GOARCH.
func ProbeFS(root fs.FS, arch string) Facts {
	f := Facts{Arch: arch, OS: "linux"}
	parseCPUInfo(readFile(root, "proc/cpuinfo"), &f)
	f.MemoryBytes = memTotal(readFile(root, "proc/meminfo"))
	for _, n := range AcceleratorNodes {
		if _, err := fs.Stat(root, strings.TrimPrefix(n, "/")); err == nil {
			f.Accelerators = append(f.Accelerators, n)
		}
	}
	f.BoardModel = cleanString(readFile(root, "proc/device-tree/model"))
	if f.BoardModel == "" {
		f.BoardModel = cleanString(readFile(root, "sys/class/dmi/id/product_name"))
	}
	f.Kernel = cleanString(readFile(root, "proc/sys/kernel/osrelease"))
	osr := readFile(root, "etc/os-release")
	if osr == nil {
		osr = readFile(root, "usr/lib/os-release")
	}
	f.OSRelease, f.OSVersion = osRelease(osr)
	if v := tegraRelease(readFile(root, "etc/nv_tegra_release")); v != "" {
		f.FirmwareVersion = v
	} else {
		f.FirmwareVersion = cleanString(readFile(root, "sys/class/dmi/id/bios_version"))
	}
	return f
}

func readFile(root fs.FS, name string) []byte {
	fh, err := root.Open(name)
	if err != nil {
		return nil
	}
	defer fh.Close()
	// /proc files report size 0, so read to EOF, up to the bound.
	b, _ := io.ReadAll(io.LimitReader(fh, maxFileBytes))
	return b
}

// cleanString trims the NUL that device-tree strings end with, and spaces,
// and bounds the length so a strange board cannot break the hello message.
func cleanString(b []byte) string {
	s := strings.TrimSpace(strings.TrimRight(string(b), "\x00\n "))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 256 {
		s = s[:256]
	}
	return s
}

// armParts names the Arm cores found in gateways, by "CPU part"; arm64
// cpuinfo has no model name.
var armParts = map[string]string{
	"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
	"0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
	"0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd42": "Cortex-A78AE",
	"0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd4f": "Neoverse-V2",
}

func parseCPUInfo(b []byte, f *Facts) {
	flags := map[string]bool{}
	var part, hwName string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			f.Cores++
		case "model name":
			if f.CPUModel == "" {
				f.CPUModel = v
			}
		case "CPU part":
			if part == "" {
				part = v
			}
		case "Hardware":
			hwName = v
		case "flags", "Features":
			for _, fl := range strings.Fields(v) {
				flags[fl] = true
			}
		}
	}
	if f.CPUModel == "" {
		if n, ok := armParts[strings.ToLower(part)]; ok {
			f.CPUModel = n
		} else if part != "" {
			f.CPUModel = "Arm part " + part
		} else {
			f.CPUModel = hwName
		}
	}
	if len(f.CPUModel) > 256 {
		f.CPUModel = f.CPUModel[:256]
	}
	for _, fl := range InferenceFlags {
		if flags[fl] {
			f.CPUFlags = append(f.CPUFlags, fl)
		}
	}
	sort.Strings(f.CPUFlags)
}

func memTotal(b []byte) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				return 0
			}
			kb, err := strconv.ParseUint(fields[0], 10, 64)
			if err != nil || kb > 1<<40 {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}

func osRelease(b []byte) (pretty, versionID string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch k {
		case "PRETTY_NAME":
			pretty = cleanString([]byte(v))
		case "VERSION_ID":
			versionID = cleanString([]byte(v))
		}
	}
	return pretty, versionID
}

// tegraRelease turns the first line of /etc/nv_tegra_release,
// "# R36 (release), REVISION: 3.0, GCID: ...", into "36.3.0".
func tegraRelease(b []byte) string {
	line := cleanString(b)
	i := strings.Index(line, "R")
	if i < 0 {
		return ""
	}
	rest := line[i+1:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	if j == 0 {
		return ""
	}
	major := rest[:j]
	_, rev, ok := strings.Cut(rest, "REVISION:")
	if !ok {
		return major
	}
	rev = strings.TrimSpace(rev)
	if k := strings.IndexByte(rev, ','); k >= 0 {
		rev = rev[:k]
	}
	return major + "." + strings.TrimSpace(rev)
}
