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
	if len(ds) != len(vibration.Specs()) {
		t.Fatalf("%d demos, want %d", len(ds), len(vibration.Specs()))
	}
	for i, d := range ds {
		if d.Meta.Version != vibration.Specs()[i].Version || d.Meta.Format != "tflite" {
			t.Errorf("demo %d is %s %s, want %s tflite", i, d.Meta.Version, d.Meta.Format, vibration.Specs()[i].Version)
		}
		if string(d.Model[4:8]) != "TFL3" {
			t.Errorf("%s: identifier %q", d.Meta.File, d.Model[4:8])
		}
		if len(d.SampleInput) != 128 || len(d.ExpectedOutput) != 4 {
			t.Errorf("%s: sample %d bytes, expected %d", d.Meta.File, len(d.SampleInput), len(d.ExpectedOutput))
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
