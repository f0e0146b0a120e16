package hw

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"
	"testing/fstest"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"
)

func TestProbeAndMatch(t *testing.T) {
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir     string
		arch    string
		profile string
		want    Facts
	}{
		{"pi4", "arm64", "raspberry-pi-4", Facts{
			Arch: "arm64", OS: "linux", CPUModel: "Cortex-A72", CPUFlags: []string{"asimd"}, Cores: 4,
			MemoryBytes: 3882924 * 1024, BoardModel: "Raspberry Pi 4 Model B Rev 1.5", Kernel: "6.6.51+rpt-rpi-v8",
			OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12",
		}},
		{"pi5", "arm64", "raspberry-pi-5", Facts{
			Arch: "arm64", OS: "linux", CPUModel: "Cortex-A76", CPUFlags: []string{"asimd", "asimddp", "asimdhp", "fphp"}, Cores: 4,
			MemoryBytes: 8245392 * 1024, BoardModel: "Raspberry Pi 5 Model B Rev 1.0", Kernel: "6.6.31+rpt-rpi-2712",
			OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12",
		}},
		{"jetson", "arm64", "jetson-orin-nano", Facts{
			Arch: "arm64", OS: "linux", CPUModel: "Cortex-A78AE", CPUFlags: []string{"asimd", "asimddp", "asimdhp", "fphp"}, Cores: 6,
			MemoryBytes: 7802096 * 1024, Accelerators: []string{"/dev/nvhost-ctrl-gpu"},
			BoardModel: "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", Kernel: "5.15.148-tegra",
			OSRelease: "Ubuntu 22.04.5 LTS", OSVersion: "22.04", FirmwareVersion: "36.4.0",
		}},
		{"ipc-avx2", "amd64", "x86-ipc-avx2", Facts{
			Arch: "amd64", OS: "linux", CPUModel: "11th Gen Intel(R) Core(TM) i5-1145G7E @ 2.60GHz",
			CPUFlags: []string{"avx", "avx2", "avx512_vnni", "avx512bw", "avx512f", "avx512vl", "f16c", "fma", "sse4_1", "sse4_2"},
			Cores:    8, MemoryBytes: 16132420 * 1024, BoardModel: "NUC11TNKi5", Kernel: "6.1.0-26-amd64",
			OSRelease: "Debian GNU/Linux 12 (bookworm)", OSVersion: "12", FirmwareVersion: "TNTGL357.0064.2022.0217.1533",
		}},
		{"coral", "arm64", "coral-dev-board", Facts{
			Arch: "arm64", OS: "linux", CPUModel: "Cortex-A53", CPUFlags: []string{"asimd"}, Cores: 4,
			MemoryBytes: 1000696 * 1024, Accelerators: []string{"/dev/apex_0"}, BoardModel: "Freescale i.MX8MQ Phanbell",
			Kernel: "4.14.98-imx", OSRelease: "Mendel GNU/Linux 5 (Eagle)", OSVersion: "5",
		}},
		{"unknown-arm64", "arm64", "generic-arm64", Facts{
			Arch: "arm64", OS: "linux", CPUModel: "Cortex-A55", CPUFlags: []string{"asimd", "asimddp", "asimdhp", "fphp"}, Cores: 8,
			MemoryBytes: 16125860 * 1024, Accelerators: []string{"/dev/rknpu"}, BoardModel: "Radxa ROCK 5B",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			f := ProbeFS(os.DirFS("testdata/"+tt.dir), tt.arch)
			if !reflect.DeepEqual(f, tt.want) {
				t.Errorf("facts:\n got %+v\nwant %+v", f, tt.want)
			}
			p, err := Match(f, ps)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tt.profile {
				t.Errorf("matched %s, want %s", p.Name, tt.profile)
			}
			hwp := f.Proto()
			if hwp.GetCores() != uint32(tt.want.Cores) || hwp.GetBoardModel() != tt.want.BoardModel {
				t.Errorf("proto hardware %v does not carry the facts", hwp)
			}
		})
	}
}

func TestMatchRules(t *testing.T) {
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	pi5 := ProbeFS(os.DirFS("testdata/pi5"), "arm64")
	// Each broken rule alone must drop the Pi 5 to the generic profile.
	breaks := map[string]func(f *Facts){
		"old os":      func(f *Facts) { f.OSVersion = "11" },
		"no os":       func(f *Facts) { f.OSVersion = "" },
		"no dotprod":  func(f *Facts) { f.CPUFlags = []string{"asimd"} },
		"other board": func(f *Facts) { f.BoardModel = "Raspberry Pi 3 Model B" },
	}
	for name, brk := range breaks {
		f := pi5
		f.CPUFlags = append([]string(nil), f.CPUFlags...)
		brk(&f)
		p, err := Match(f, ps)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name != "generic-arm64" {
			t.Errorf("%s: matched %s, want generic-arm64", name, p.Name)
		}
	}
	jet := ProbeFS(os.DirFS("testdata/jetson"), "arm64")
	jet.FirmwareVersion = "35.5.0" // JetPack 5 is outside the profile's constraint
	if p, _ := Match(jet, ps); p.Name != "generic-arm64" {
		t.Errorf("Jetson on L4T 35 matched %s, want generic-arm64", p.Name)
	}
	if _, err := Match(Facts{Arch: "riscv64"}, ps); !errors.Is(err, ErrNoProfile) {
		t.Errorf("riscv64: err = %v, want ErrNoProfile", err)
	}
	if p, _ := Match(Facts{Arch: "amd64"}, ps); p.Name != "generic-amd64" {
		t.Errorf("bare amd64 matched %s", p.Name)
	}
}

func TestProbeMissingAndOddFiles(t *testing.T) {
	f := ProbeFS(fstest.MapFS{}, "arm64")
	if f.Cores != 0 || f.CPUModel != "" || f.MemoryBytes != 0 {
		t.Errorf("empty root gave %+v", f)
	}
	f = ProbeFS(fstest.MapFS{
		"proc/cpuinfo":         {Data: []byte("garbage without colons\n\x00\xff")},
		"proc/meminfo":         {Data: []byte("MemTotal: lots kB\n")},
		"etc/nv_tegra_release": {Data: []byte("# no release here")},
	}, "amd64")
	if f.MemoryBytes != 0 || f.FirmwareVersion != "" {
		t.Errorf("odd files gave %+v", f)
	}
}

func TestProbeHost(t *testing.T) {
	// The machine running the tests is a real Linux box: it has cores and
	// memory, and it matches some profile of its arch.
	f := Probe()
	if f.Cores == 0 || f.MemoryBytes == 0 {
		t.Skipf("host exposes no /proc/cpuinfo or /proc/meminfo: %+v", f)
	}
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Match(f, ps); err != nil && !errors.Is(err, ErrNoProfile) {
		t.Fatal(err)
	}
}

func FuzzProbeFS(f *testing.F) {
	for _, d := range []string{"pi4", "pi5", "jetson", "ipc-avx2", "coral"} {
		b, err := os.ReadFile("testdata/" + d + "/proc/cpuinfo")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte("MemTotal: 1024 kB\n"), []byte("# R36 (release), REVISION: 4.0"))
	}
	f.Fuzz(func(t *testing.T, cpuinfo, meminfo, tegra []byte) {
		ProbeFS(fstest.MapFS{
			"proc/cpuinfo":         {Data: cpuinfo},
			"proc/meminfo":         {Data: meminfo},
			"etc/nv_tegra_release": {Data: tegra},
			"etc/os-release":       {Data: cpuinfo},
		}, "arm64")
	})
}

func TestEveryAgentArchHasAProfile(t *testing.T) {
	// The architectures the agent is built for (see the dependency test in
	// cmd/edgefleet-agent): each must get at least its generic profile.
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64", "arm"} {
		p, err := Match(Facts{Arch: arch}, ps)
		if err != nil || p.Name != "generic-"+arch {
			t.Errorf("%s: %v, %v", arch, p, err)
		}
	}
}

func TestMatchPriority(t *testing.T) {
	parse := func(name string, prio int) *profiles.Profile {
		t.Helper()
		p, err := profiles.Parse(name+".yaml", []byte(fmt.Sprintf("name: %s\npriority: %d\nmatch: {arch: [amd64], cpu_flags: [avx2]}\nbackends: [{name: tflite}]\nmodel_memory_mb: 1\nthreads: 1\n", name, prio)))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ps, err := profiles.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	ipc := ProbeFS(os.DirFS("testdata/ipc-avx2"), "amd64")
	for _, tt := range []struct {
		extra []*profiles.Profile
		want  string
	}{
		{nil, "x86-ipc-avx2"},
		{[]*profiles.Profile{parse("zz-vendor-box", 40)}, "zz-vendor-box"}, // higher priority wins
		{[]*profiles.Profile{parse("aa-same-prio", 30)}, "aa-same-prio"},   // a tie goes to the first name
		{[]*profiles.Profile{parse("zz-low-prio", 10)}, "x86-ipc-avx2"},    // lower priority loses
	} {
		p, err := Match(ipc, append(append([]*profiles.Profile(nil), ps...), tt.extra...))
		if err != nil || p.Name != tt.want {
			t.Errorf("with %d extra: %v, %v; want %s", len(tt.extra), p.Name, err, tt.want)
		}
	}
}
