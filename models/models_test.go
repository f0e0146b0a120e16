package models_test

import (
	"bytes"
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/models"
	"github.com/edgefleet/edgefleet/models/vibration"
)

// TestDemoFilesUpToDate regenerates every demo file and compares it with
// the committed copy, byte for byte, both ways.
func TestDemoFilesUpToDate(t *testing.T) {
	want, err := vibration.Generate()
	if err != nil {
		t.Fatal(err)
	}
	const fix = "; run `go run ./models/cmd/gen -out models/demo` and commit the result"
	for name, data := range want {
		got, err := fs.ReadFile(models.FS(), path.Join(models.DemoDir, name))
		if err != nil {
			t.Errorf("%s is not committed%s", name, fix)
			continue
		}
		if !bytes.Equal(got, data) {
			t.Errorf("committed %s differs from what the generator writes%s", name, fix)
		}
	}
	entries, err := fs.ReadDir(models.FS(), models.DemoDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok && e.Name() != "README.md" {
			t.Errorf("%s in models/demo is not written by the generator; delete it", e.Name())
		}
	}
}

func TestDemos(t *testing.T) {
	ds, err := models.Demos()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2*len(vibration.Specs()) {
		t.Fatalf("%d demos, want %d (tflite and onnx per version)", len(ds), 2*len(vibration.Specs()))
	}
	magic := map[string]string{"tflite": "TFL3", "onnx": "\x08\x08"} // TFLite identifier; ONNX ir_version 8, field 1
	for i, d := range ds {
		format := []string{"onnx", "tflite"}[i/len(vibration.Specs())]
		version := vibration.Specs()[i%len(vibration.Specs())].Version
		if d.Meta.Version != version || d.Meta.Format != format {
			t.Errorf("demo %d is %s %s, want %s %s", i, d.Meta.Version, d.Meta.Format, version, format)
		}
		if format == "tflite" && string(d.Model[4:8]) != magic[format] || format == "onnx" && string(d.Model[:2]) != magic[format] {
			t.Errorf("%s does not start like a %s file", d.Meta.File, format)
		}
		if len(d.SampleInput) != 128 || len(d.ExpectedOutput) != 4 {
			t.Errorf("%s: sample %d bytes, expected %d", d.Meta.File, len(d.SampleInput), len(d.ExpectedOutput))
		}
		if wantTol := map[string]int{"tflite": 0, "onnx": vibration.ONNXTolerance}[format]; d.Meta.Tolerance != wantTol {
			t.Errorf("%s: tolerance %d, want %d", d.Meta.File, d.Meta.Tolerance, wantTol)
		}
	}
	d, err := models.DemoModel(vibration.Name, "3.0.0", "tflite")
	if err != nil || !strings.Contains(d.Meta.Purpose, "bad") {
		t.Errorf("DemoModel 3.0.0 = %q, %v", d.Meta.Purpose, err)
	}
	if _, err := models.DemoModel(vibration.Name, "9.9.9", "tflite"); err == nil {
		t.Error("DemoModel found a version that does not exist")
	}
}
