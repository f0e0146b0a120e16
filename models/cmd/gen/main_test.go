package main

import (
	"bytes"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/models"
)

// TestRunWritesTheCommittedFiles runs the command's body into a temporary
// directory and compares every file with the committed copy.
func TestRunWritesTheCommittedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "demo")
	if err := run(dir); err != nil {
		t.Fatal(err)
	}
	written, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) < 8 {
		t.Fatalf("%d files written", len(written))
	}
	for _, e := range written {
		got, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want, err := fs.ReadFile(models.FS(), path.Join(models.DemoDir, e.Name()))
		if err != nil {
			t.Errorf("%s is written but not committed: %v", e.Name(), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the committed copy", e.Name())
		}
	}
}
