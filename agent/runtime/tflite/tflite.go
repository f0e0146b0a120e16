// Package tflite is the agent's built-in inference engine: a pure-Go
// interpreter for TensorFlow Lite flatbuffers that runs on every gateway,
// with no native library, as a static binary.
//
// Quantized kernels reproduce a real runtime's integer arithmetic bit for
// bit, chosen by Config.Settings["rounding"]: TFLite's reference kernels
// with double rounding as TFLite Micro builds them (the default), the same
// with TFLITE_SINGLE_ROUNDING ("single"), or what LiteRT runs on CPUs
// ("litert": XNNPACK's float32 requantization), which gives LiteRT's
// outputs byte for byte. A model is read and checked once at Open, every
// tensor is placed in one arena by a static plan, and inference allocates
// nothing. On amd64 with AVX2 or AVX-512 VNNI the hot kernels run in
// assembly; the portable Go kernels are always built and are the reference
// the vector ones are tested against.
//
// Operators live in one file per family and register a prepare function in
// a table keyed by builtin code (see registerOp); adding an operator means
// adding a file.
package tflite

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

func init() {
	runtime.Register("tflite", func(cfg runtime.Config) runtime.Backend { return New(cfg) })
}

// Version of the engine, reported by Backend.Version.
const Version = "0.1.0"

// DefaultArenaLimit bounds a session's working memory when
// Options.ArenaLimit is 0; it keeps a model with absurd tensor shapes from
// exhausting a gateway's memory.
const DefaultArenaLimit = 512 << 20

// Backend is the built-in TFLite engine.
type Backend struct {
	arith  arith
	logger *slog.Logger
	// badSetting explains a configuration the engine cannot honour.
	badSetting error
}

// New returns the engine configured by cfg. Settings["rounding"] selects
// the integer arithmetic: "double" (default: TFLite's reference kernels
// with double rounding, as TFLite Micro), "single" (reference kernels built
// with TFLITE_SINGLE_ROUNDING) or "litert" (what LiteRT runs on CPUs by
// default: XNNPACK's float32 requantization; matches LiteRT byte for byte).
func New(cfg runtime.Config) *Backend {
	b := &Backend{logger: cfg.Logger}
	switch r := cfg.Settings["rounding"]; r {
	case "", "double":
	case "single":
		b.arith = arithSingle
	case "litert":
		b.arith = arithLiteRT
	default:
		b.badSetting = fmt.Errorf("%w: tflite setting rounding=%q: want double, single or litert", runtime.ErrUnavailable, r)
	}
	if b.logger == nil {
		b.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return b
}

func (b *Backend) Name() string      { return "tflite" }
func (b *Backend) Version() string   { return Version }
func (b *Backend) Formats() []string { return []string{"tflite"} }

// Available is nil unless the configuration is invalid: the engine is pure
// Go and runs everywhere.
func (b *Backend) Available() error { return b.badSetting }

// Open parses, checks and plans a model. The returned Model keeps
// references into data.
func (b *Backend) Open(ctx context.Context, data []byte, opts runtime.Options) (runtime.Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.badSetting != nil {
		return nil, b.badSetting
	}
	g, err := parse(data)
	if err != nil {
		return nil, err
	}
	m := &Model{g: g, logger: b.logger}
	if opts.Logger != nil {
		m.logger = opts.Logger
	}
	if err := m.prepare(b.arith); err != nil {
		return nil, err
	}
	limit := opts.ArenaLimit
	if limit <= 0 {
		limit = DefaultArenaLimit
	}
	if int64(m.arenaSize) > limit {
		return nil, fmt.Errorf("%w: the model needs %d bytes of working memory, the limit is %d", runtime.ErrArenaLimit, m.arenaSize, limit)
	}
	m.logger.Debug("tflite model opened", "operators", len(g.ops), "tensors", len(g.tensors), "arena_bytes", m.arenaSize, "macs", m.macs)
	if opts.Threads > 1 {
		m.logger.Debug("tflite runs each inference on one thread", "threads_requested", opts.Threads)
	}
	return m, nil
}

// Model is an opened, planned model.
type Model struct {
	g       *graph
	kernels []kernel
	// place is each buffer's arena offset, or -1 for constants and unused
	// tensors; entries past len(g.tensors) are kernels' scratch buffers.
	place     []int
	sizes     []int
	arenaSize int
	// macs counts the multiply-accumulates (or element operations) of
	// one inference, as an estimate of its cost.
	macs   int64
	logger *slog.Logger

	mu     sync.RWMutex // held for reading by running sessions
	closed bool
}

func (m *Model) info(idx int) runtime.TensorInfo {
	t := &m.g.tensors[idx]
	ti := runtime.TensorInfo{Name: t.name, DType: t.dtype, Shape: slices.Clone(t.shape)}
	if t.quant != nil {
		ti.Quant = &runtime.Quantization{Scale: slices.Clone(t.quant.Scale), ZeroPoint: slices.Clone(t.quant.ZeroPoint), Axis: t.quant.Axis}
	}
	return ti
}

// Inputs describes the model's inputs in graph order.
func (m *Model) Inputs() []runtime.TensorInfo {
	out := make([]runtime.TensorInfo, len(m.g.inputs))
	for i, idx := range m.g.inputs {
		out[i] = m.info(idx)
	}
	return out
}

// Outputs describes the model's outputs in graph order.
func (m *Model) Outputs() []runtime.TensorInfo {
	out := make([]runtime.TensorInfo, len(m.g.outputs))
	for i, idx := range m.g.outputs {
		out[i] = m.info(idx)
	}
	return out
}

// Operators lists the distinct operators the model uses.
func (m *Model) Operators() []string { return slices.Clone(m.g.opNames) }

// MACs estimates the multiply-accumulates of one inference.
func (m *Model) MACs() int64 { return m.macs }

// ArenaSize is the working memory of one session in bytes.
func (m *Model) ArenaSize() int { return m.arenaSize }

// NewSession allocates a session's arena.
func (m *Model) NewSession() (runtime.Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, runtime.ErrClosed
	}
	s := &Session{m: m, bufs: make([][]byte, len(m.place))}
	// Back the arena with uint64 so every 16-byte-aligned offset can be
	// viewed as int32 or float32.
	words := make([]uint64, (m.arenaSize+7)/8)
	arena := unsafeBytes(words)
	for i, off := range m.place {
		switch {
		case off >= 0:
			s.bufs[i] = arena[off : off+m.sizes[i] : off+m.sizes[i]]
		case i < len(m.g.tensors):
			s.bufs[i] = m.g.tensors[i].data
		}
	}
	return s, nil
}

// Close releases the model after running sessions finish; later runs
// return runtime.ErrClosed.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Session runs inferences one at a time over its own arena.
type Session struct {
	m      *Model
	mu     sync.Mutex
	bufs   [][]byte
	closed bool
}

// Run copies inputs into the arena, runs every operator and copies the
// outputs out. It allocates nothing once outputs have the capacity.
func (s *Session) Run(ctx context.Context, inputs []runtime.Tensor, outputs []runtime.Tensor) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every kernel's bounds are checked at Open; should one still be
	// missed, a model must not take the agent down with it.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: inference failed: %v", runtime.ErrBadModel, r)
		}
	}()
	if s.closed {
		return runtime.ErrClosed
	}
	m := s.m
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return runtime.ErrClosed
	}
	g := m.g
	if len(inputs) != len(g.inputs) {
		return fmt.Errorf("%w: got %d inputs, the model has %d", runtime.ErrInput, len(inputs), len(g.inputs))
	}
	if len(outputs) != len(g.outputs) {
		return fmt.Errorf("%w: got %d outputs, the model has %d", runtime.ErrInput, len(outputs), len(g.outputs))
	}
	for i, idx := range g.inputs {
		t := &g.tensors[idx]
		if err := checkInput(t, inputs[i]); err != nil {
			return err
		}
	}
	for i, idx := range g.inputs {
		copy(s.bufs[idx], inputs[i].Data)
	}
	for i, k := range m.kernels {
		if i&7 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := k.eval(s.bufs); err != nil {
			op := &g.ops[i]
			return fmt.Errorf("operator %d (%s): %w", op.index, opName(op.code, op.custom), err)
		}
	}
	for i, idx := range g.outputs {
		t := &g.tensors[idx]
		o := &outputs[i]
		o.DType = t.dtype
		o.Shape = append(o.Shape[:0], t.shape...)
		if cap(o.Data) >= t.size {
			o.Data = o.Data[:t.size]
		} else {
			o.Data = make([]byte, t.size)
		}
		copy(o.Data, s.bufs[idx])
	}
	return nil
}

// checkInput is runtime.CheckInput without its allocations on success.
func checkInput(t *tensor, in runtime.Tensor) error {
	ok := in.DType == t.dtype && len(in.Shape) == len(t.shape) && len(in.Data) == t.size
	if ok {
		for i, d := range t.shape {
			if in.Shape[i] != d {
				ok = false
			}
		}
	}
	if ok {
		return nil
	}
	info := runtime.TensorInfo{Name: t.name, DType: t.dtype, Shape: t.shape}
	if err := runtime.CheckInput(info, in); err != nil {
		return err
	}
	return fmt.Errorf("%w: input %q does not match %v", runtime.ErrInput, t.name, info)
}

// Close frees the session; later runs return runtime.ErrClosed.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.bufs = nil
	return nil
}

func opName(code int32, custom string) string {
	if custom != "" {
		return "CUSTOM:" + custom
	}
	if code >= 0 && int(code) < len(builtinNames) {
		return builtinNames[code]
	}
	return fmt.Sprintf("BUILTIN_%d", code)
}

// kernel is a prepared operator. eval reads and writes tensors by index in
// bufs; it must not allocate.
type kernel interface {
	eval(bufs [][]byte) error
}

// prepareFunc checks an operator's tensors and options and returns its
// kernel. It runs once per model at Open.
type prepareFunc func(c *prepCtx) (kernel, error)

var kernels = map[int32]prepareFunc{}

// registerOp adds an operator implementation; each op family file calls it
// from init.
func registerOp(code int32, f prepareFunc) {
	if _, dup := kernels[code]; dup {
		panic("tflite: operator registered twice: " + opName(code, ""))
	}
	kernels[code] = f
}

func (m *Model) prepare(a arith) error {
	g := m.g
	foldPads(g)
	m.place = make([]int, len(g.tensors))
	m.sizes = make([]int, len(g.tensors))
	for i := range g.tensors {
		m.sizes[i] = g.tensors[i].size
	}
	var scratchLife []int
	for i := range g.ops {
		op := &g.ops[i]
		name := opName(op.code, op.custom)
		f := kernels[op.code]
		if op.custom != "" || op.code == 32 {
			f = nil
		}
		if f == nil {
			return fmt.Errorf("%w: operator %d is %s, which the engine does not implement (model uses %s)",
				errUnsupported, op.index, name, strings.Join(g.opNames, ", "))
		}
		c := &prepCtx{g: g, op: op, index: op.index, name: name, arith: a, single: a == arithSingle, m: m}
		k, err := f(c)
		if err == nil {
			err = op.opts.err()
		}
		if err != nil {
			return fmt.Errorf("operator %d (%s): %w", op.index, name, err)
		}
		m.macs += c.macs
		for _, o := range op.outputs {
			m.macs += int64(g.tensors[o].numElements())
		}
		for range c.scratch {
			scratchLife = append(scratchLife, i)
		}
		m.kernels = append(m.kernels, k)
	}
	return m.plan(scratchLife)
}

// prepCtx gives a prepare function its operator's tensors and options.
type prepCtx struct {
	g      *graph
	op     *operator
	index  int
	name   string
	arith  arith
	single bool
	m      *Model
	// scratch holds the sizes of the scratch buffers the kernel asked for.
	scratch []int
	// macs is the kernel's multiply-accumulates per inference.
	macs int64
}

func (c *prepCtx) opts() *options { return &c.op.opts }

// input returns input i, which must be present.
func (c *prepCtx) input(i int) (*tensor, int, error) {
	if i >= len(c.op.inputs) || c.op.inputs[i] < 0 {
		return nil, -1, fmt.Errorf("%w: input %d missing (operator has %d inputs)", errBadModel, i, len(c.op.inputs))
	}
	idx := c.op.inputs[i]
	return &c.g.tensors[idx], idx, nil
}

// optInput returns input i or nil when absent.
func (c *prepCtx) optInput(i int) (*tensor, int) {
	if i >= len(c.op.inputs) || c.op.inputs[i] < 0 {
		return nil, -1
	}
	idx := c.op.inputs[i]
	return &c.g.tensors[idx], idx
}

func (c *prepCtx) output(i int) (*tensor, int, error) {
	if i >= len(c.op.outputs) {
		return nil, -1, fmt.Errorf("%w: output %d missing (operator has %d outputs)", errBadModel, i, len(c.op.outputs))
	}
	idx := c.op.outputs[i]
	t := &c.g.tensors[idx]
	if t.data != nil {
		return nil, -1, fmt.Errorf("%w: output %d is constant tensor %q", errBadModel, i, t.name)
	}
	return t, idx, nil
}

// counts checks the number of inputs and outputs.
func (c *prepCtx) counts(minIn, maxIn, outs int) error {
	if n := len(c.op.inputs); n < minIn || n > maxIn {
		return fmt.Errorf("%w: has %d inputs, want %d..%d", errBadModel, n, minIn, maxIn)
	}
	if n := len(c.op.outputs); n != outs {
		return fmt.Errorf("%w: has %d outputs, want %d", errBadModel, n, outs)
	}
	return nil
}

// addScratch reserves a scratch buffer live only during this operator and
// returns its index in bufs.
func (c *prepCtx) addScratch(size int) int {
	c.scratch = append(c.scratch, size)
	c.m.sizes = append(c.m.sizes, size)
	c.m.place = append(c.m.place, 0)
	return len(c.m.sizes) - 1
}

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadModel, fmt.Sprintf(format, args...))
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUnsupported, fmt.Sprintf(format, args...))
}

// Compile-time checks that the engine implements the runtime interfaces.
var (
	_ runtime.Backend = (*Backend)(nil)
	_ runtime.Model   = (*Model)(nil)
	_ runtime.Session = (*Session)(nil)
)
