package simulators

import (
	"math/rand/v2"

	"github.com/edgefleet/edgefleet/agent/hw"
)

// Classes are the simulated hardware classes, each the facts of a real
// board (the same boards as agent/hw's testdata), with the share of the
// fleet it makes up. Devices share these values; the slices in them are
// never modified.
var Classes = []struct {
	Weight int
	Facts  hw.Facts
}{
	{30, hw.Facts{Arch: "arm64", OS: "linux", CPUModel: "Cortex-A72", CPUFlags: []string{"asimd"}, Cores: 4,
		MemoryBytes: 4 << 30, BoardModel: "Raspberry Pi 4 Model B Rev 1.5", Kernel: "6.6.51+rpt-rpi-v8",
		OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12"}},
	{25, hw.Facts{Arch: "arm64", OS: "linux", CPUModel: "Cortex-A76", CPUFlags: []string{"asimd", "asimddp", "asimdhp", "fphp"}, Cores: 4,
		MemoryBytes: 8 << 30, BoardModel: "Raspberry Pi 5 Model B Rev 1.0", Kernel: "6.6.31+rpt-rpi-2712",
		OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12"}},
	{10, hw.Facts{Arch: "arm64", OS: "linux", CPUModel: "Cortex-A78AE", CPUFlags: []string{"asimd", "asimddp", "asimdhp", "fphp"}, Cores: 6,
		MemoryBytes: 8 << 30, Accelerators: []string{"/dev/nvhost-ctrl-gpu"},
		BoardModel: "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", Kernel: "5.15.148-tegra",
		OSRelease: "Ubuntu 22.04.5 LTS", OSVersion: "22.04", FirmwareVersion: "36.4.0"}},
	{20, hw.Facts{Arch: "amd64", OS: "linux", CPUModel: "11th Gen Intel(R) Core(TM) i5-1145G7E @ 2.60GHz",
		CPUFlags: []string{"avx", "avx2", "avx512_vnni", "avx512bw", "avx512f", "avx512vl", "f16c", "fma", "sse4_1", "sse4_2"},
		Cores:    8, MemoryBytes: 16 << 30, BoardModel: "NUC11TNKi5", Kernel: "6.1.0-26-amd64",
		OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12", FirmwareVersion: "TNTGL357.0064.2022.0217.1533"}},
	{5, hw.Facts{Arch: "arm64", OS: "linux", CPUModel: "Cortex-A53", CPUFlags: []string{"asimd"}, Cores: 4,
		MemoryBytes: 1 << 30, Accelerators: []string{"/dev/apex_0"}, BoardModel: "Freescale i.MX8MQ Phanbell",
		Kernel: "4.14.98-imx", OSRelease: "Mendel GNU/Linux 5 (Eagle)", OSVersion: "5"}},
	{10, hw.Facts{Arch: "amd64", OS: "linux", CPUModel: "Intel(R) Celeron(R) J6412 @ 2.00GHz",
		CPUFlags: []string{"sse4_1", "sse4_2"}, Cores: 4, MemoryBytes: 8 << 30, BoardModel: "Default string",
		Kernel: "6.1.0-26-amd64", OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12"}},
}

// PickHardware returns the facts of a device drawn from Classes by weight.
func PickHardware(r *rand.Rand) *hw.Facts {
	total := 0
	for _, c := range Classes {
		total += c.Weight
	}
	n := r.IntN(total)
	for i := range Classes {
		if n < Classes[i].Weight {
			return &Classes[i].Facts
		}
		n -= Classes[i].Weight
	}
	return &Classes[0].Facts
}
