package runtimetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// EnvModels names the environment variable that points at the shared
// models directory when it is not at ../shared/models from the repo root.
const EnvModels = "EDGEFLEET_SHARED_MODELS"

// Dir returns the shared models directory: $EDGEFLEET_SHARED_MODELS, else
// ../shared/models relative to the repository root (the first directory
// above the working directory that holds go.mod). It skips the test, naming
// both places, when neither exists.
func Dir(tb testing.TB) string {
	tb.Helper()
	dir, err := findDir()
	if err != nil {
		tb.Skipf("runtimetest: %v", err)
	}
	return dir
}

func findDir() (string, error) {
	if env := os.Getenv(EnvModels); env != "" {
		if isDir(env) {
			return env, nil
		}
		return "", fmt.Errorf("shared models not found: $%s=%q is not a directory", EnvModels, env)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("shared models not found: $%s is unset and the working directory is unknown: %w", EnvModels, err)
	}
	root := wd
	for !isFile(filepath.Join(root, "go.mod")) {
		parent := filepath.Dir(root)
		if parent == root {
			return "", fmt.Errorf("shared models not found: $%s is unset and no go.mod above %s to find ../shared/models from", EnvModels, wd)
		}
		root = parent
	}
	dir := filepath.Join(root, "..", "shared", "models")
	if !isDir(dir) {
		return "", fmt.Errorf("shared models not found: $%s is unset and ../shared/models (%s) does not exist", EnvModels, filepath.Clean(dir))
	}
	return filepath.Clean(dir), nil
}

func isDir(p string) bool  { st, err := os.Stat(p); return err == nil && st.IsDir() }
func isFile(p string) bool { st, err := os.Stat(p); return err == nil && st.Mode().IsRegular() }

// Model is one folder of the shared models: a model file, what its inputs
// and outputs should look like, and cases with reference outputs.
type Model struct {
	// Name is the folder name, e.g. "tflm_person_detect_int8".
	Name string
	// Dir is the folder's path.
	Dir string
	// Format is "tflite" or "onnx".
	Format string
	// Path is the model file's path.
	Path string
	// Inputs and Outputs are the graph's tensors in order, as meta.json
	// describes them: symbolic dimensions are -1 and named in DimNames.
	Inputs, Outputs []Info
	// Golden is the runtime whose outputs are the ones to trust, if meta.json
	// names one.
	Golden string
	Cases  []Case
}

// Info is one graph input or output as meta.json describes it.
type Info struct {
	runtime.TensorInfo
	// DimNames holds the name of each symbolic dimension ("batch") and ""
	// for fixed ones; nil when all are fixed.
	DimNames []string
	// Signature is TFLite's shape_signature (-1 for a dynamic dimension);
	// nil when absent.
	Signature []int
}

// Case is one set of inputs with the outputs real runtimes produced.
type Case struct {
	Name string
	// Inputs are in graph order.
	Inputs []runtime.Tensor
	// Reference names the runtime Want came from ("litertjs", "ort", ...).
	Reference string
	// Want are the reference outputs, in graph order.
	Want []runtime.Tensor
	// Others are the outputs of other trusted runtimes, by runtime name; the
	// suite only logs how far they are from the backend's.
	Others map[string][]runtime.Tensor
}

// Bytes reads the model file.
func (m Model) Bytes(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(m.Path)
	if err != nil {
		tb.Fatalf("runtimetest: %v", err)
	}
	return b
}

// Models returns the shared model folders of the given format ("tflite",
// "onnx"), sorted by name, with their cases loaded. It skips the test when
// the shared models are absent and fails it when a folder is malformed.
func Models(tb testing.TB, format string) []Model {
	tb.Helper()
	ms, err := loadModels(Dir(tb), format)
	if err != nil {
		tb.Fatalf("runtimetest: %v", err)
	}
	return ms
}

func loadModels(dir, format string) ([]Model, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading shared models: %w", err)
	}
	var ms []Model
	for _, e := range entries {
		if !e.IsDir() || !isFile(filepath.Join(dir, e.Name(), "meta.json")) {
			continue
		}
		m, err := loadModel(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("model folder %s: %w", e.Name(), err)
		}
		if m.Format == format {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	return ms, nil
}

// The meta.json layout described in ../shared/models/README.md.
type metaFile struct {
	Model   string       `json:"model"`
	Format  string       `json:"format"`
	Inputs  []metaTensor `json:"inputs"`
	Outputs []metaTensor `json:"outputs"`
	Cases   []metaCase   `json:"cases"`
	Golden  string       `json:"golden_runtime"`
}

type metaTensor struct {
	Name      string          `json:"name"`
	DType     string          `json:"dtype"`
	Shape     []any           `json:"shape"`
	Signature []int           `json:"shape_signature"`
	Quant     json.RawMessage `json:"quantization"`
}

type metaCase struct {
	Name        string              `json:"name"`
	Inputs      []string            `json:"inputs"`
	InputShapes [][]int             `json:"input_shapes"`
	InputDTypes []string            `json:"input_dtypes"`
	Outputs     map[string][]string `json:"outputs"`
	// Per-runtime output shapes and dtypes of ONNX cases.
	OrtShapes      [][]int  `json:"ort_output_shapes"`
	OrtDTypes      []string `json:"ort_output_dtypes"`
	ExpectedShapes [][]int  `json:"expected_output_shapes"`
	ExpectedDTypes []string `json:"expected_output_dtypes"`
}

// Runtimes whose outputs are trusted, most trusted first when meta.json
// names no golden runtime. armnn_suspect is known wrong and never used.
var trusted = []string{"litertjs", "ort", "onnx_expected", "armnn"}

func loadModel(dir string) (Model, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return Model{}, err
	}
	var mf metaFile
	if err := json.Unmarshal(raw, &mf); err != nil {
		return Model{}, fmt.Errorf("meta.json: %w", err)
	}
	m := Model{Name: filepath.Base(dir), Dir: dir, Format: mf.Format, Path: filepath.Join(dir, mf.Model), Golden: mf.Golden}
	if mf.Model == "" || mf.Format == "" {
		return Model{}, errors.New("meta.json lacks model or format")
	}
	for i, t := range mf.Inputs {
		info, err := t.info()
		if err != nil {
			return Model{}, fmt.Errorf("input %d: %w", i, err)
		}
		m.Inputs = append(m.Inputs, info)
	}
	for i, t := range mf.Outputs {
		info, err := t.info()
		if err != nil {
			return Model{}, fmt.Errorf("output %d: %w", i, err)
		}
		m.Outputs = append(m.Outputs, info)
	}
	for _, mc := range mf.Cases {
		c, err := m.loadCase(mc)
		if err != nil {
			return Model{}, fmt.Errorf("case %s: %w", mc.Name, err)
		}
		m.Cases = append(m.Cases, c)
	}
	return m, nil
}

func (t metaTensor) info() (Info, error) {
	dt, err := runtime.ParseDType(t.DType)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	info := Info{TensorInfo: runtime.TensorInfo{Name: t.Name, DType: dt, Shape: make([]int, len(t.Shape))}, Signature: t.Signature}
	for i, d := range t.Shape {
		switch d := d.(type) {
		case float64:
			info.Shape[i] = int(d)
		case string:
			info.Shape[i] = -1
			if info.DimNames == nil {
				info.DimNames = make([]string, len(t.Shape))
			}
			info.DimNames[i] = d
		default:
			return Info{}, fmt.Errorf("%s: dimension %d is %v, want a number or a name", t.Name, i, d)
		}
	}
	if len(t.Quant) > 0 && string(t.Quant) != "null" {
		var q struct {
			Scale     json.RawMessage `json:"scale"`
			ZeroPoint json.RawMessage `json:"zero_point"`
			Dim       int             `json:"quantized_dimension"`
		}
		if err := json.Unmarshal(t.Quant, &q); err != nil {
			return Info{}, fmt.Errorf("%s quantization: %w", t.Name, err)
		}
		info.Quant = &runtime.Quantization{Axis: q.Dim}
		if err := oneOrMany(q.Scale, &info.Quant.Scale); err != nil {
			return Info{}, fmt.Errorf("%s quantization scale: %w", t.Name, err)
		}
		if err := oneOrMany(q.ZeroPoint, &info.Quant.ZeroPoint); err != nil {
			return Info{}, fmt.Errorf("%s quantization zero_point: %w", t.Name, err)
		}
	}
	return info, nil
}

// oneOrMany decodes a JSON number or array of numbers into *dst.
func oneOrMany[T float32 | int64](raw json.RawMessage, dst *[]T) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var one T
	if err := json.Unmarshal(raw, &one); err == nil {
		*dst = []T{one}
		return nil
	}
	return json.Unmarshal(raw, dst)
}

func (m Model) loadCase(mc metaCase) (Case, error) {
	c := Case{Name: mc.Name, Others: map[string][]runtime.Tensor{}}
	if len(mc.Inputs) != len(m.Inputs) {
		return c, fmt.Errorf("%d input files for %d graph inputs", len(mc.Inputs), len(m.Inputs))
	}
	for i, f := range mc.Inputs {
		dt, shape := m.Inputs[i].DType, m.Inputs[i].Shape
		if i < len(mc.InputShapes) {
			shape = mc.InputShapes[i]
		}
		if i < len(mc.InputDTypes) {
			d, err := runtime.ParseDType(mc.InputDTypes[i])
			if err != nil {
				return c, fmt.Errorf("input %d: %w", i, err)
			}
			dt = d
		}
		t, err := readTensor(filepath.Join(m.Dir, f), dt, shape)
		if err != nil {
			return c, fmt.Errorf("input %d: %w", i, err)
		}
		c.Inputs = append(c.Inputs, t)
	}
	primary := m.Golden
	if _, ok := mc.Outputs[primary]; !ok {
		primary = ""
		for _, rt := range trusted {
			if _, ok := mc.Outputs[rt]; ok {
				primary = rt
				break
			}
		}
	}
	if primary == "" {
		return c, fmt.Errorf("no trusted reference outputs (have %v)", keys(mc.Outputs))
	}
	for _, rt := range trusted {
		files, ok := mc.Outputs[rt]
		if !ok {
			continue
		}
		if len(files) != len(m.Outputs) {
			return c, fmt.Errorf("%d %s output files for %d graph outputs", len(files), rt, len(m.Outputs))
		}
		shapes, dtypes := mc.outputLayout(rt)
		var outs []runtime.Tensor
		for i, f := range files {
			dt, shape := m.Outputs[i].DType, m.Outputs[i].Shape
			if i < len(shapes) {
				shape = shapes[i]
			}
			if i < len(dtypes) {
				d, err := runtime.ParseDType(dtypes[i])
				if err != nil {
					return c, fmt.Errorf("%s output %d: %w", rt, i, err)
				}
				dt = d
			}
			t, err := readTensor(filepath.Join(m.Dir, f), dt, shape)
			if err != nil {
				return c, fmt.Errorf("%s output %d: %w", rt, i, err)
			}
			outs = append(outs, t)
		}
		if rt == primary {
			c.Reference, c.Want = rt, outs
		} else {
			c.Others[rt] = outs
		}
	}
	return c, nil
}

func (mc metaCase) outputLayout(rt string) ([][]int, []string) {
	switch rt {
	case "ort":
		return mc.OrtShapes, mc.OrtDTypes
	case "onnx_expected":
		return mc.ExpectedShapes, mc.ExpectedDTypes
	}
	return nil, nil
}

func readTensor(path string, dt runtime.DType, shape []int) (runtime.Tensor, error) {
	want := runtime.ByteSize(dt, shape)
	if want < 0 {
		return runtime.Tensor{}, fmt.Errorf("%s: shape %v of %s is not concrete", path, shape, dt)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return runtime.Tensor{}, err
	}
	if len(data) != want {
		return runtime.Tensor{}, fmt.Errorf("%s has %d bytes, shape %v of %s needs %d", path, len(data), shape, dt, want)
	}
	if shape == nil {
		shape = []int{}
	}
	return runtime.Tensor{DType: dt, Shape: shape, Data: data}, nil
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
