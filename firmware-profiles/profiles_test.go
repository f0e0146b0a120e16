package profiles

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
)

func TestBuiltin(t *testing.T) {
	ps, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"coral-dev-board", "generic-amd64", "generic-arm", "generic-arm64", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "x86-ipc-avx2"}
	var got []string
	for _, p := range ps {
		got = append(got, p.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("profiles %v, want %v", got, want)
	}
	for _, p := range ps {
		if len(p.Backends) == 0 || p.Threads == 0 || p.ModelMemoryMB == 0 {
			t.Errorf("%s is incomplete: %+v", p.Name, p)
		}
	}
	var jet *Profile
	for _, p := range ps {
		if p.Name == "jetson-orin-nano" {
			jet = p
		}
	}
	if !jet.FirmwareOK("36.4.0") || jet.FirmwareOK("35.5") || jet.FirmwareOK("") || jet.FirmwareOK("not-a-version") {
		t.Error("jetson firmware constraint is not >= 36.0, < 37.0")
	}
	if jet.Settings("onnxruntime")["library"] == "" {
		t.Error("jetson has no ONNX Runtime library path")
	}
}

const good = `name: x
priority: 1
match:
  arch: [arm64]
backends: [{name: tflite}]
model_memory_mb: 64
threads: 1
`

func TestParseErrorsNameFileAndField(t *testing.T) {
	tests := []struct {
		name, yaml, field string
	}{
		{"unknown field", good + "colour: blue\n", "colour"},
		{"bad regexp", strings.Replace(good, "match:\n", "match:\n  board_model: '('\n", 1), "match.board_model"},
		{"bad constraint", strings.Replace(good, "match:\n", "match:\n  firmware: 'newer please'\n", 1), "match.firmware"},
		{"bad os constraint", strings.Replace(good, "match:\n", "match:\n  os_version: '>>> 3'\n", 1), "match.os_version"},
		{"no arch", strings.Replace(good, "  arch: [arm64]\n", "", 1), "match.arch"},
		{"bad arch", strings.Replace(good, "arm64", "z80", 1), "match.arch"},
		{"no threads", strings.Replace(good, "threads: 1", "threads: 0", 1), "threads"},
		{"no memory", strings.Replace(good, "model_memory_mb: 64", "model_memory_mb: -1", 1), "model_memory_mb"},
		{"no backends", strings.Replace(good, "backends: [{name: tflite}]", "backends: []", 1), "backends"},
		{"dup backend", strings.Replace(good, "[{name: tflite}]", "[{name: tflite}, {name: tflite}]", 1), "backends[1].name"},
		{"bad name", strings.Replace(good, "name: x", "name: X Y", 1), "name"},
		{"wrong type", strings.Replace(good, "threads: 1", "threads: many", 1), "threads"},
		{"bad node", strings.Replace(good, "match:\n", "match:\n  device_nodes: [/etc/passwd]\n", 1), "match.device_nodes"},
		{"generic with rules", strings.Replace(good, "match:\n", "generic: true\nmatch:\n  board_model: pi\n", 1), "generic"},
		{"empty", "", "empty"},
	}
	for _, tt := range tests {
		_, err := Parse("x.yaml", []byte(tt.yaml))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.name, err)
			continue
		}
		if !strings.Contains(err.Error(), "x.yaml") || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: error %q does not name the file and %q", tt.name, err, tt.field)
		}
	}
	if _, err := Parse("x.yaml", []byte(good)); err != nil {
		t.Fatalf("good profile: %v", err)
	}
}

func TestLoadChecksSet(t *testing.T) {
	generic := "name: generic-arm64\ngeneric: true\nmatch: {arch: [arm64]}\nbackends: [{name: tflite}]\nmodel_memory_mb: 1\nthreads: 1\n"
	_, err := Load(fstest.MapFS{"y.yaml": {Data: []byte(good)}, "generic-arm64.yaml": {Data: []byte(generic)}})
	if err == nil || !strings.Contains(err.Error(), "y.yaml") {
		t.Errorf("name/file mismatch: %v", err)
	}
	_, err = Load(fstest.MapFS{"x.yaml": {Data: []byte(good)}})
	if err == nil || !strings.Contains(err.Error(), "no generic profile for arm64") {
		t.Errorf("missing generic: %v", err)
	}
	if _, err := Load(fstest.MapFS{"x.yaml": {Data: []byte(good)}, "generic-arm64.yaml": {Data: []byte(generic)}}); err != nil {
		t.Errorf("valid set: %v", err)
	}
	if _, err := Load(fstest.MapFS{}); err == nil {
		t.Error("empty set loaded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("name: [\n"))
	f.Add([]byte("match: {arch: [amd64], firmware: '>= 1'}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse("fuzz.yaml", b)
		if err == nil && p.Name == "" {
			t.Fatal("accepted a profile without a name")
		}
	})
}
