package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve/client"
	"github.com/edgefleet/edgefleet/agent/serve/wire"
	// The built-in engine is in every agent; other backends add their own
	// imports (backend_*.go).
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
)

func init() {
	register("infer", "run one inference on raw tensor files", runInfer)
}

// maxModelBytes bounds a model file read by infer and bench.
const maxModelBytes = 1 << 30

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// backendFlags are the flags infer and bench share for choosing and
// configuring a backend.
type backendFlags struct {
	model    string
	backend  string
	threads  int
	settings listFlag
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.model, "model", "", "model `file` (.tflite or .onnx)")
	fs.StringVar(&b.backend, "backend", "", "inference backend `name` (default: the first available one for the model's format)")
	fs.IntVar(&b.threads, "threads", 1, "threads one inference may use")
	fs.Var(&b.settings, "set", "backend setting `key=value`, repeatable (e.g. rounding=litert for the built-in engine)")
}

// open reads the model, picks the backend and opens it, returning the
// model and the time it took to open.
func (b *backendFlags) open(ctx context.Context) (runtime.Model, runtime.Backend, error) {
	if b.model == "" {
		return nil, nil, errors.New("--model is required")
	}
	data, err := readLimited(b.model, maxModelBytes)
	if err != nil {
		return nil, nil, err
	}
	cfg := runtime.Config{Settings: map[string]string{}}
	for _, s := range b.settings {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("--set %q: want key=value", s)
		}
		cfg.Settings[k] = v
	}
	var be runtime.Backend
	if b.backend != "" {
		if be, err = runtime.New(b.backend, cfg); err != nil {
			return nil, nil, err
		}
		if err := be.Available(); err != nil {
			return nil, nil, fmt.Errorf("backend %s: %w", b.backend, err)
		}
	} else {
		format := modelFormat(b.model, data)
		usable, skipped := runtime.ForFormat(format, cfg, "tflite")
		if len(usable) == 0 {
			return nil, nil, fmt.Errorf("no available backend runs %s models (registered: %v, unavailable: %v)", format, runtime.Names(), skipped)
		}
		be = usable[0]
	}
	m, err := be.Open(ctx, data, runtime.Options{Threads: b.threads})
	if err != nil {
		return nil, nil, fmt.Errorf("open %s with %s: %w", b.model, be.Name(), err)
	}
	return m, be, nil
}

// modelFormat tells TFLite from ONNX by the file identifier, falling back
// to the extension.
func modelFormat(name string, data []byte) string {
	if len(data) >= 8 && string(data[4:8]) == "TFL3" {
		return "tflite"
	}
	if strings.EqualFold(filepath.Ext(name), ".tflite") {
		return "tflite"
	}
	return "onnx"
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", name, st.Size(), limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(st.Size()))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// tensorFor makes the input tensor for info from raw bytes. A dynamic
// dimension (-1) takes whatever size the data implies.
func tensorFor(info runtime.TensorInfo, data []byte, what string) (runtime.Tensor, error) {
	shape := append([]int(nil), info.Shape...)
	known, dyn := 1, -1
	for i, d := range shape {
		if d < 0 {
			if dyn >= 0 {
				return runtime.Tensor{}, fmt.Errorf("%s: input %q has more than one dynamic dimension %v", what, info.Name, info.Shape)
			}
			dyn = i
			continue
		}
		known *= d
	}
	es := info.DType.Size()
	if dyn >= 0 && known*es > 0 && len(data)%(known*es) == 0 {
		shape[dyn] = len(data) / (known * es)
	}
	if want := runtime.ByteSize(info.DType, shape); want != len(data) {
		return runtime.Tensor{}, fmt.Errorf("%s has %d bytes; input %q (%s %v) needs %d", what, len(data), info.Name, info.DType, info.Shape, want)
	}
	return runtime.Tensor{DType: info.DType, Shape: shape, Data: data}, nil
}

func runInfer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("infer", flag.ContinueOnError)
	var bf backendFlags
	bf.register(fs)
	var inputs listFlag
	fs.Var(&inputs, "input", "raw little-endian input tensor `file`, one per model input in graph order")
	outDir := fs.String("output-dir", "", "`directory` for output_<i>.bin, one raw tensor per model output")
	url := fs.String("url", "", "run on a serving agent's local inference API at this `URL` (e.g. http://127.0.0.1:8470) instead of loading --model here")
	socket := fs.String("socket", "", "run on a serving agent's local inference API at this unix socket `path`")
	name := fs.String("name", "", "with --url or --socket: the served model's `name`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *outDir == "" {
		return errors.New("--output-dir is required")
	}
	if *url != "" || *socket != "" {
		return inferRemote(ctx, *url, *socket, *name, inputs, *outDir)
	}
	m, be, err := bf.open(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	infos := m.Inputs()
	if len(inputs) != len(infos) {
		return fmt.Errorf("the model has %d inputs (%v), got %d --input files", len(infos), infos, len(inputs))
	}
	ins := make([]runtime.Tensor, len(infos))
	for i, name := range inputs {
		data, err := readLimited(name, maxModelBytes)
		if err != nil {
			return err
		}
		if ins[i], err = tensorFor(infos[i], data, name); err != nil {
			return err
		}
	}
	s, err := m.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	outs := make([]runtime.Tensor, len(m.Outputs()))
	if err := s.Run(ctx, ins, outs); err != nil {
		return fmt.Errorf("run with %s: %w", be.Name(), err)
	}
	return writeOutputs(*outDir, outs)
}

// writeOutputs writes DIR/output_<i>.bin, the ../shared/models layout.
func writeOutputs(dir string, outs []runtime.Tensor) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, o := range outs {
		name := filepath.Join(dir, fmt.Sprintf("output_%d.bin", i))
		if err := os.WriteFile(name, o.Data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(benchOut, "%s: %s %v (%d bytes)\n", name, o.DType, o.Shape, len(o.Data))
	}
	return nil
}

// inferRemote runs one inference on a serving agent through its local API,
// with the same input files and output layout as a local run.
func inferRemote(ctx context.Context, url, socket, name string, inputs []string, outDir string) error {
	if name == "" {
		return errors.New("--name is required with --url or --socket: the served model to run")
	}
	var c *client.Client
	if socket != "" {
		c = client.NewUnix(socket)
	} else {
		var err error
		if c, err = client.New(url, nil); err != nil {
			return err
		}
	}
	defer c.Close()
	spec, err := c.Model(ctx, name)
	if err != nil {
		return err
	}
	if len(inputs) != len(spec.Inputs) {
		return fmt.Errorf("model %s %s has %d inputs, got %d --input files", name, spec.Version, len(spec.Inputs), len(inputs))
	}
	ins := make([]wire.Tensor, len(spec.Inputs))
	for i, file := range inputs {
		data, err := readLimited(file, maxModelBytes)
		if err != nil {
			return err
		}
		dt, err := runtime.ParseDType(spec.Inputs[i].DType)
		if err != nil {
			return fmt.Errorf("input %q: %w", spec.Inputs[i].Name, err)
		}
		t, err := tensorFor(runtime.TensorInfo{Name: spec.Inputs[i].Name, DType: dt, Shape: spec.Inputs[i].Shape}, data, file)
		if err != nil {
			return err
		}
		ins[i] = wire.Tensor{Name: spec.Inputs[i].Name, DType: t.DType, Shape: t.Shape, Data: t.Data}
	}
	resp, err := c.InferBinary(ctx, name, ins, client.Options{})
	if err != nil {
		return err
	}
	outs := make([]runtime.Tensor, len(resp.Outputs))
	for i, o := range resp.Outputs {
		outs[i] = runtime.Tensor{DType: o.DType, Shape: o.Shape, Data: o.Data}
	}
	fmt.Fprintf(benchOut, "served by %s %s (queue %v, compute %v)\n", resp.Model, resp.Version, resp.Queue, resp.Compute)
	return writeOutputs(outDir, outs)
}
