// Command gen writes the project's demo models (models/vibration) into a
// directory: each version's .tflite file, JSON sidecar, sample input and
// expected output. `go run ./models/cmd/gen -out models/demo` refreshes the
// committed copies; the output is the same bytes on every run and machine.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/edgefleet/edgefleet/models/vibration"
)

func main() {
	out := flag.String("out", "", "directory to write the demo models into (created if missing)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gen -out DIR")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := vibration.Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), files[n], 0o644); err != nil {
			return err
		}
		fmt.Printf("%8d  %s\n", len(files[n]), filepath.Join(dir, n))
	}
	return nil
}
