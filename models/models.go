// Package models holds the demo models the project generates for itself
// (under demo/, embedded here) and their sidecar metadata, so the simulator,
// `make run` and tests have real, runnable models without any file from
// outside the repository. The files are written by `go run ./models/cmd/gen`
// from models/vibration; a test checks that regenerating gives identical
// bytes.
package models

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Meta is a demo model's JSON sidecar.
type Meta struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Format is "tflite" or "onnx".
	Format string `json:"format"`
	// Precision is the arithmetic of the weights and activations, "int8".
	Precision string `json:"precision"`
	// Backend is the inference backend that runs the file: "tflite" (the
	// built-in engine) or "onnxruntime".
	Backend string `json:"backend"`
	// File is the model file's name, next to the sidecar.
	File   string `json:"file"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
	// Purpose says what the version is for in demos and rollout tests.
	Purpose     string       `json:"purpose"`
	Description string       `json:"description"`
	Inputs      []TensorMeta `json:"inputs"`
	Outputs     []TensorMeta `json:"outputs"`
	// SampleInput and ExpectedOutput name raw little-endian tensor files
	// (the ../shared/models layout): the device self-test runs the one and
	// compares with the other byte for byte.
	SampleInput    string `json:"sample_input"`
	ExpectedOutput string `json:"expected_output"`
	// ExpectedLabel is the class the expected output picks.
	ExpectedLabel string `json:"expected_label"`
	// Tolerance is the largest difference, in quantization steps, between
	// a correct engine's output and ExpectedOutput: 0 (exact) for TFLite
	// files, whose integer arithmetic is specified bit for bit; more for a
	// format whose runtimes round differently.
	Tolerance int `json:"tolerance"`
	// MACs is the multiply-accumulates of one inference, a size hint.
	MACs      int    `json:"macs"`
	Generator string `json:"generator"`
}

// TensorMeta describes a model input or output, as in ../shared/models
// meta.json files.
type TensorMeta struct {
	Name         string            `json:"name"`
	DType        string            `json:"dtype"`
	Shape        []int             `json:"shape"`
	Quantization *QuantizationMeta `json:"quantization,omitempty"`
	Description  string            `json:"description,omitempty"`
	// Labels name the classes of a classifier output, in order.
	Labels []string `json:"labels,omitempty"`
}

// QuantizationMeta is a tensor's quantization.
type QuantizationMeta struct {
	Scale              []float32 `json:"scale"`
	ZeroPoint          []int64   `json:"zero_point"`
	QuantizedDimension int       `json:"quantized_dimension"`
}

// Demo is one generated model with its sample.
type Demo struct {
	Meta           Meta
	Model          []byte
	SampleInput    []byte
	ExpectedOutput []byte
}

//go:embed demo
var demoFiles embed.FS

// DemoDir is the directory of the generated files inside FS.
const DemoDir = "demo"

// FS returns the embedded demo files, under DemoDir.
func FS() fs.FS { return demoFiles }

// Demos returns every embedded demo model, ordered by name, format and
// version, with its files read and its sha256 checked against the sidecar.
func Demos() ([]Demo, error) {
	entries, err := fs.ReadDir(demoFiles, DemoDir)
	if err != nil {
		return nil, fmt.Errorf("reading embedded demo models: %w", err)
	}
	var out []Demo
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		d, err := loadDemo(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Meta, out[j].Meta
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Format != b.Format {
			return a.Format < b.Format
		}
		return versionLess(a.Version, b.Version)
	})
	return out, nil
}

// versionLess orders dotted numeric versions by number, so 10.0.0 comes
// after 9.0.0; parts that are not numbers compare as strings.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] == pb[i] {
			continue
		}
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			return na < nb
		}
		return pa[i] < pb[i]
	}
	return len(pa) < len(pb)
}

// DemoModel returns the embedded demo of that name, version and format.
func DemoModel(name, version, format string) (Demo, error) {
	ds, err := Demos()
	if err != nil {
		return Demo{}, err
	}
	for _, d := range ds {
		if d.Meta.Name == name && d.Meta.Version == version && d.Meta.Format == format {
			return d, nil
		}
	}
	return Demo{}, fmt.Errorf("no demo model %s %s (%s); run `go run ./models/cmd/gen -out models/demo` to regenerate", name, version, format)
}

func loadDemo(sidecar string) (Demo, error) {
	read := func(name string) ([]byte, error) {
		if name == "" || path.Base(name) != name {
			return nil, fmt.Errorf("demo sidecar %s names file %q, want a plain file name", sidecar, name)
		}
		b, err := fs.ReadFile(demoFiles, path.Join(DemoDir, name))
		if err != nil {
			return nil, fmt.Errorf("demo sidecar %s: %w", sidecar, err)
		}
		return b, nil
	}
	raw, err := read(sidecar)
	if err != nil {
		return Demo{}, err
	}
	var d Demo
	if err := json.Unmarshal(raw, &d.Meta); err != nil {
		return Demo{}, fmt.Errorf("demo sidecar %s: %w", sidecar, err)
	}
	if d.Model, err = read(d.Meta.File); err != nil {
		return Demo{}, err
	}
	if sum := SHA256(d.Model); sum != d.Meta.SHA256 {
		return Demo{}, fmt.Errorf("demo model %s has sha256 %s, sidecar %s says %s", d.Meta.File, sum, sidecar, d.Meta.SHA256)
	}
	if d.SampleInput, err = read(d.Meta.SampleInput); err != nil {
		return Demo{}, err
	}
	if d.ExpectedOutput, err = read(d.Meta.ExpectedOutput); err != nil {
		return Demo{}, err
	}
	return d, nil
}

// SHA256 is the hex sha256 the sidecars use.
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
