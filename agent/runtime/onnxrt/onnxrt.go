//go:build cgo

package onnxrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

func init() {
	runtime.Register(Name, func(cfg runtime.Config) runtime.Backend { return New(cfg) })
}

// Backend runs ONNX models with ONNX Runtime. Create it with New (or
// runtime.New("onnxruntime", cfg)); its methods are safe for concurrent use.
type Backend struct {
	log      *slog.Logger
	library  string // configured path, "" to search
	optLevel ort.GraphOptimizationLevel
	arena    bool
	spinning bool
	cfgErr   error // a bad setting, reported by Available

	once    sync.Once
	path    string
	version string
	err     error
}

// New returns the backend configured by cfg.Settings (SettingLibrary,
// SettingGraphOptimization, SettingMemoryArena, SettingSpinning). It does
// not load the library; Available and Open do.
func New(cfg runtime.Config) *Backend {
	b := &Backend{log: cfg.Logger, library: cfg.Settings[SettingLibrary], optLevel: ort.GraphOptimizationLevelEnableAll, arena: true}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var errs []error
	if v, ok := cfg.Settings[SettingGraphOptimization]; ok {
		switch strings.ToLower(v) {
		case "disable", "none", "off":
			b.optLevel = ort.GraphOptimizationLevelDisableAll
		case "basic":
			b.optLevel = ort.GraphOptimizationLevelEnableBasic
		case "extended":
			b.optLevel = ort.GraphOptimizationLevelEnableExtended
		case "all", "":
			b.optLevel = ort.GraphOptimizationLevelEnableAll
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want disable, basic, extended or all", SettingGraphOptimization, v))
		}
	}
	var err error
	if b.arena, err = onOff(cfg.Settings, SettingMemoryArena, true); err != nil {
		errs = append(errs, err)
	}
	if b.spinning, err = onOff(cfg.Settings, SettingSpinning, false); err != nil {
		errs = append(errs, err)
	}
	b.cfgErr = errors.Join(errs...)
	return b
}

func onOff(s map[string]string, key string, def bool) (bool, error) {
	v, ok := s[key]
	if !ok || v == "" {
		return def, nil
	}
	switch strings.ToLower(v) {
	case "on", "true", "1", "yes":
		return true, nil
	case "off", "false", "0", "no":
		return false, nil
	}
	return def, fmt.Errorf("%s=%q: want on or off", key, v)
}

// Name returns "onnxruntime".
func (b *Backend) Name() string { return Name }

// Version returns the version of the ONNX Runtime library, loading it if
// need be, or "" when it cannot be loaded (Available says why).
func (b *Backend) Version() string {
	if b.Available() != nil {
		return ""
	}
	return b.version
}

// Formats returns ["onnx"].
func (b *Backend) Formats() []string { return []string{"onnx"} }

// Library returns the path of the library in use, or "" when none could be
// loaded.
func (b *Backend) Library() string {
	if b.Available() != nil {
		return ""
	}
	return b.path
}

// Available loads the library on first use and reports why the backend
// cannot run, wrapping runtime.ErrUnavailable, or nil. The outcome is
// remembered: a library does not appear or change under a running agent.
func (b *Backend) Available() error {
	b.once.Do(func() {
		if b.cfgErr != nil {
			b.err = fmt.Errorf("%w: onnxruntime settings: %w", runtime.ErrUnavailable, b.cfgErr)
			return
		}
		b.path, b.version, b.err = resolve(b.library)
		if b.err == nil {
			b.log.Info("ONNX Runtime loaded", "library", b.path, "version", b.version)
		} else {
			b.log.Info("ONNX Runtime unavailable", "reason", b.err)
		}
	})
	return b.err
}

// Open creates an ONNX Runtime session for the model. The session is shared
// by the Model's Sessions: ONNX Runtime runs concurrent calls on one session
// safely, and one copy of the weights is what a gateway can afford.
func (b *Backend) Open(ctx context.Context, model []byte, opts runtime.Options) (runtime.Model, error) {
	if err := b.Available(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(model) == 0 {
		return nil, fmt.Errorf("%w: empty ONNX model", runtime.ErrBadModel)
	}
	if opts.ArenaLimit > 0 {
		return nil, fmt.Errorf("%w: onnxruntime cannot bound a session's memory (Options.ArenaLimit=%d); use the built-in engine or leave it 0", runtime.ErrUnsupported, opts.ArenaLimit)
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = 1
	}
	log := opts.Logger
	if log == nil {
		log = b.log
	}

	// onnxruntime_go needs the input and output names to create a session.
	// They come from the model's protobuf; when it declares them in a way
	// graphIO does not take, a throwaway ONNX Runtime session reads them,
	// at the cost of loading the model twice.
	m := &Model{log: log}
	var err error
	m.inputs, m.outputs, err = declaredIO(model)
	if err != nil {
		log.Debug("onnxruntime: reading inputs and outputs through a temporary session", "reason", err)
		ins, outs, err := ort.GetInputOutputInfoWithONNXData(model)
		if err != nil {
			return nil, classify(err)
		}
		if m.inputs, err = infos("input", ins); err != nil {
			return nil, err
		}
		if m.outputs, err = infos("output", outs); err != nil {
			return nil, err
		}
	}
	if len(m.outputs) == 0 {
		return nil, fmt.Errorf("%w: ONNX model has no outputs", runtime.ErrBadModel)
	}
	m.shapes = make([]atomic.Int32, len(m.outputs))

	so, err := b.sessionOptions(threads)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	m.sess, err = ort.NewDynamicAdvancedSessionWithONNXData(model, names(m.inputs), names(m.outputs), so)
	if err != nil {
		return nil, classify(err)
	}
	log.Debug("onnxruntime model opened", "inputs", m.inputs, "outputs", m.outputs, "threads", threads)
	return m, nil
}

func (b *Backend) sessionOptions(threads int) (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnxruntime session options: %w", err)
	}
	spin := "0"
	if b.spinning {
		spin = "1"
	}
	for _, step := range []struct {
		what string
		err  error
	}{
		{"intra-op threads", so.SetIntraOpNumThreads(threads)},
		{"inter-op threads", so.SetInterOpNumThreads(1)},
		{"execution mode", so.SetExecutionMode(ort.ExecutionModeSequential)},
		{"graph optimisation", so.SetGraphOptimizationLevel(b.optLevel)},
		{"memory arena", so.SetCpuMemArena(b.arena)},
		{"spinning", so.AddSessionConfigEntry("session.intra_op.allow_spinning", spin)},
		{"inter-op spinning", so.AddSessionConfigEntry("session.inter_op.allow_spinning", spin)},
	} {
		if step.err != nil {
			so.Destroy()
			return nil, fmt.Errorf("onnxruntime session options: %s: %w", step.what, step.err)
		}
	}
	return so, nil
}

// classify wraps an ONNX Runtime load error: an operator or type it lacks
// is ErrUnsupported, anything else a bad model.
func classify(err error) error {
	msg := err.Error()
	for _, s := range []string{"NOT_IMPLEMENTED", "Could not find an implementation", "Unsupported model IR version"} {
		if strings.Contains(msg, s) {
			return fmt.Errorf("%w: onnxruntime: %w", runtime.ErrUnsupported, err)
		}
	}
	return fmt.Errorf("%w: onnxruntime cannot load the model: %w", runtime.ErrBadModel, err)
}

func infos(kind string, ios []ort.InputOutputInfo) ([]runtime.TensorInfo, error) {
	out := make([]runtime.TensorInfo, len(ios))
	for i, io := range ios {
		if io.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%w: %s %d (%s) is a %s; only tensors are supported", runtime.ErrUnsupported, kind, i, io.Name, io.OrtValueType)
		}
		dt, ok := fromORT[io.DataType]
		if !ok {
			return nil, fmt.Errorf("%w: %s %d (%s) has element type %s", runtime.ErrUnsupported, kind, i, io.Name, io.DataType)
		}
		shape := make([]int, len(io.Dimensions))
		for j, d := range io.Dimensions {
			shape[j] = int(d)
			if d < 0 {
				shape[j] = -1
			}
		}
		out[i] = runtime.TensorInfo{Name: io.Name, DType: dt, Shape: shape}
	}
	return out, nil
}

// declaredIO describes the inputs and outputs the model declares, or fails
// when graphIO cannot say exactly.
func declaredIO(model []byte) (inputs, outputs []runtime.TensorInfo, err error) {
	ins, outs, err := graphIO(model)
	if err != nil {
		return nil, nil, err
	}
	conv := func(ds []ioDesc) ([]runtime.TensorInfo, error) {
		out := make([]runtime.TensorInfo, len(ds))
		for i, d := range ds {
			dt, ok := fromORT[ort.TensorElementDataType(d.elem)]
			if !ok || d.name == "" {
				return nil, fmt.Errorf("%w: %q has element type %d", errNoGraphIO, d.name, d.elem)
			}
			shape := make([]int, len(d.dims))
			for j, x := range d.dims {
				shape[j] = int(x)
			}
			out[i] = runtime.TensorInfo{Name: d.name, DType: dt, Shape: shape}
		}
		return out, nil
	}
	if inputs, err = conv(ins); err != nil {
		return nil, nil, err
	}
	if outputs, err = conv(outs); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

func names(ts []runtime.TensorInfo) []string {
	n := make([]string, len(ts))
	for i, t := range ts {
		n[i] = t.Name
	}
	return n
}

var toORT = map[runtime.DType]ort.TensorElementDataType{
	runtime.Float32: ort.TensorElementDataTypeFloat,
	runtime.Uint8:   ort.TensorElementDataTypeUint8,
	runtime.Int8:    ort.TensorElementDataTypeInt8,
	runtime.Uint16:  ort.TensorElementDataTypeUint16,
	runtime.Int16:   ort.TensorElementDataTypeInt16,
	runtime.Int32:   ort.TensorElementDataTypeInt32,
	runtime.Int64:   ort.TensorElementDataTypeInt64,
	runtime.Bool:    ort.TensorElementDataTypeBool,
	runtime.Float16: ort.TensorElementDataTypeFloat16,
	runtime.Float64: ort.TensorElementDataTypeDouble,
	runtime.Uint32:  ort.TensorElementDataTypeUint32,
	runtime.Uint64:  ort.TensorElementDataTypeUint64,
}

var fromORT = func() map[ort.TensorElementDataType]runtime.DType {
	m := map[ort.TensorElementDataType]runtime.DType{}
	for k, v := range toORT {
		m[v] = k
	}
	return m
}()

// Model is an ONNX model opened in ONNX Runtime.
type Model struct {
	inputs, outputs []runtime.TensorInfo
	// shapes says, per output, whether its declared static shape has been
	// seen to be the real one. Models can declare an output shape that
	// ONNX Runtime's own inference contradicts; writing in place into a
	// buffer of the declared shape would then fail every run.
	shapes []atomic.Int32
	log    *slog.Logger
	// mu is held for reading by every run, so Close waits for runs in
	// flight before it frees the session under them.
	mu     sync.RWMutex
	closed bool
	sess   *ort.DynamicAdvancedSession
}

// States of Model.shapes.
const (
	shapeUnchecked int32 = iota // let ONNX Runtime allocate and compare
	shapeConfirmed              // write in place
	shapeDynamic                // the declaration was wrong: always allocate
)

// Inputs describes the graph inputs; symbolic dimensions are -1.
func (m *Model) Inputs() []runtime.TensorInfo { return cloneInfos(m.inputs) }

// Outputs describes the graph outputs; symbolic dimensions are -1, and so
// are the dimensions of an output whose declared shape runs contradicted.
func (m *Model) Outputs() []runtime.TensorInfo {
	out := cloneInfos(m.outputs)
	for i := range out {
		if m.shapes[i].Load() == shapeDynamic {
			for j := range out[i].Shape {
				out[i].Shape[j] = -1
			}
		}
	}
	return out
}

func cloneInfos(ts []runtime.TensorInfo) []runtime.TensorInfo {
	out := slices.Clone(ts)
	for i := range out {
		out[i].Shape = slices.Clone(out[i].Shape)
	}
	return out
}

// NewSession returns a session; sessions share the model's ONNX Runtime
// session and have their own run options, so cancelling one run does not
// touch the others.
func (m *Model) NewSession() (runtime.Session, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("onnxruntime: new session: %w", runtime.ErrClosed)
	}
	ro, err := ort.NewRunOptions()
	if err != nil {
		return nil, fmt.Errorf("onnxruntime run options: %w", err)
	}
	return &Session{
		m: m, ro: ro,
		inSlots: make([]slot, len(m.inputs)), outSlots: make([]slot, len(m.outputs)),
		in: make([]ort.Value, len(m.inputs)), out: make([]ort.Value, len(m.outputs)),
	}, nil
}

// Close waits for runs in flight and frees the model. Later runs return
// runtime.ErrClosed.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if err := m.sess.Destroy(); err != nil {
		return fmt.Errorf("onnxruntime: closing model: %w", err)
	}
	return nil
}

// Session runs one inference at a time.
type Session struct {
	m *Model
	// mu guards ro against a cancellation arriving as the run ends.
	mu     sync.Mutex
	ro     *ort.RunOptions
	gen    uint64 // run number, so a late cancellation hits only its run
	done   bool   // the current run has returned
	killed bool   // ro is set to terminate
	closed bool

	// Values over the caller's tensors, kept while the caller passes the
	// same buffers with the same shapes, as a steady caller does: a run
	// then creates no ONNX Runtime value and allocates little.
	inSlots, outSlots []slot
	in, out           []ort.Value
}

// slot holds the ONNX Runtime value made for one input or output.
type slot struct {
	v ort.Value
	// over is true when v reads or writes data in place, so it stays right
	// for as long as the caller passes the same buffer and shape; false for
	// a value holding a copy, which is remade every run.
	over  bool
	dt    runtime.DType
	data  []byte
	shape []int
}

func (sl *slot) fits(dt runtime.DType, data []byte, shape []int) bool {
	return sl.v != nil && sl.over && sl.dt == dt && len(sl.data) == len(data) &&
		unsafe.SliceData(sl.data) == unsafe.SliceData(data) && slices.Equal(sl.shape, shape)
}

func (sl *slot) set(v ort.Value, over bool, dt runtime.DType, data []byte, shape []int) {
	sl.release()
	sl.v, sl.over, sl.dt, sl.data = v, over, dt, data
	sl.shape = append(sl.shape[:0], shape...)
}

func (sl *slot) release() {
	if sl.v != nil {
		sl.v.Destroy()
	}
	sl.v, sl.data = nil, nil
}

// Run checks the inputs against the model, runs it and writes the outputs,
// reusing their Data when large enough.
func (s *Session) Run(ctx context.Context, inputs, outputs []runtime.Tensor) error {
	m := s.m
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed || s.closed {
		return fmt.Errorf("onnxruntime: run: %w", runtime.ErrClosed)
	}
	if len(inputs) != len(m.inputs) {
		return fmt.Errorf("%w: %d inputs, model expects %d (%v)", runtime.ErrInput, len(inputs), len(m.inputs), m.inputs)
	}
	if len(outputs) != len(m.outputs) {
		return fmt.Errorf("%w: %d output tensors, model has %d outputs (%v)", runtime.ErrInput, len(outputs), len(m.outputs), m.outputs)
	}
	for i, info := range m.inputs {
		if err := runtime.CheckInput(info, inputs[i]); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	for i, t := range inputs {
		sl := &s.inSlots[i]
		if !sl.fits(t.DType, t.Data, t.Shape) {
			v, err := inputValue(t)
			if err != nil {
				return fmt.Errorf("onnxruntime: input %d (%s): %w", i, m.inputs[i].Name, err)
			}
			sl.set(v, len(t.Shape) > 0 && len(t.Data) > 0, t.DType, t.Data, t.Shape)
		}
		s.in[i] = sl.v
	}
	// Outputs of known shape are written by ONNX Runtime straight into the
	// caller's buffers; the others it allocates, and Run copies them.
	for i, info := range m.outputs {
		sl := &s.outSlots[i]
		s.out[i] = nil
		switch n := runtime.ByteSize(info.DType, info.Shape); {
		case len(info.Shape) == 0:
			// A scalar value owns its memory and is read after the run.
			if sl.v == nil || sl.dt != info.DType {
				v, err := scalarOut(info.DType)
				if err != nil {
					return fmt.Errorf("onnxruntime: output %d (%s): %w", i, info.Name, err)
				}
				sl.set(v, false, info.DType, nil, nil)
			}
			s.out[i] = sl.v
		case n > 0 && m.shapes[i].Load() == shapeConfirmed:
			setOutput(&outputs[i], info.DType, info.Shape, n)
			if !sl.fits(info.DType, outputs[i].Data, info.Shape) {
				typ, ok := toORT[info.DType]
				if !ok {
					return fmt.Errorf("onnxruntime: output %d (%s): %w: dtype %s", i, info.Name, runtime.ErrUnsupported, info.DType)
				}
				v, err := ort.NewCustomDataTensor(shape64(info.Shape), outputs[i].Data, typ)
				if err != nil {
					return fmt.Errorf("onnxruntime: output %d (%s): %w", i, info.Name, err)
				}
				sl.set(v, true, info.DType, outputs[i].Data, info.Shape)
			}
			s.out[i] = sl.v
		}
	}
	// Values ONNX Runtime allocated for outputs of unknown shape.
	defer func() {
		for i, v := range s.out {
			if v != nil && v != s.outSlots[i].v {
				v.Destroy()
			}
			s.out[i] = nil
		}
	}()

	stop := s.watch(ctx)
	err := m.sess.RunWithOptions(s.in, s.out, s.ro)
	stop()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("onnxruntime: run cancelled: %w", cerr)
		}
		return fmt.Errorf("onnxruntime: run: %w", err)
	}
	for i, info := range m.outputs {
		if err := readOutput(s.out[i], &outputs[i]); err != nil {
			return fmt.Errorf("onnxruntime: output %d (%s): %w", i, info.Name, err)
		}
		if len(info.Shape) > 0 && runtime.ByteSize(info.DType, info.Shape) > 0 && m.shapes[i].Load() == shapeUnchecked {
			if slices.Equal(outputs[i].Shape, info.Shape) {
				m.shapes[i].CompareAndSwap(shapeUnchecked, shapeConfirmed)
			} else if m.shapes[i].CompareAndSwap(shapeUnchecked, shapeDynamic) {
				m.log.Warn("onnxruntime: model output shape differs from its declaration; allocating it per run",
					"output", info.Name, "declared", info.Shape, "actual", outputs[i].Shape)
			}
		}
	}
	return nil
}

// watch terminates the run when ctx is done and returns a function that
// ends the watch and clears the termination for the next run.
func (s *Session) watch(ctx context.Context) func() {
	if ctx.Done() == nil {
		return func() {}
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.done = false
	s.mu.Unlock()
	stopAfter := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.gen == gen && !s.done {
			s.ro.Terminate()
			s.killed = true
		}
	})
	return func() {
		stopAfter()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.done = true
		if s.killed {
			s.ro.UnsetTerminate()
			s.killed = false
		}
	}
}

// Close frees the session's run options.
func (s *Session) Close() error {
	s.m.mu.RLock()
	defer s.m.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for i := range s.inSlots {
		s.inSlots[i].release()
	}
	for i := range s.outSlots {
		s.outSlots[i].release()
	}
	return s.ro.Destroy()
}

// inputValue wraps t's data, without copying, as an ONNX Runtime value.
func inputValue(t runtime.Tensor) (ort.Value, error) {
	if len(t.Shape) == 0 {
		return scalarIn(t)
	}
	typ, ok := toORT[t.DType]
	if !ok {
		return nil, fmt.Errorf("%w: dtype %s", runtime.ErrUnsupported, t.DType)
	}
	data := t.Data
	if len(data) == 0 {
		// ONNX Runtime wants a buffer even for a tensor with no elements.
		data = make([]byte, 1)
	}
	return ort.NewCustomDataTensor(shape64(t.Shape), data, typ)
}

func setOutput(t *runtime.Tensor, dt runtime.DType, shape []int, n int) {
	t.DType = dt
	t.Shape = append(t.Shape[:0], shape...)
	if cap(t.Data) >= n {
		t.Data = t.Data[:n]
	} else {
		t.Data = make([]byte, n)
	}
}

// readOutput copies what ONNX Runtime produced into t, unless it already
// wrote there.
func readOutput(v ort.Value, t *runtime.Tensor) error {
	var dt runtime.DType
	var data []byte
	switch v := v.(type) {
	case *ort.CustomDataTensor:
		if len(t.Data) > 0 && len(v.GetData()) > 0 && &v.GetData()[0] == &t.Data[0] {
			return nil // written in place
		}
		d, ok := fromORT[ort.TensorElementDataType(v.DataType())]
		if !ok {
			return fmt.Errorf("%w: element type %d", runtime.ErrUnsupported, v.DataType())
		}
		dt, data = d, v.GetData()
	case *ort.Scalar[float32]:
		return scalarOutput(t, runtime.Float32, v.GetData())
	case *ort.Scalar[float64]:
		return scalarOutput(t, runtime.Float64, v.GetData())
	case *ort.Scalar[int8]:
		return scalarOutput(t, runtime.Int8, v.GetData())
	case *ort.Scalar[uint8]:
		return scalarOutput(t, runtime.Uint8, v.GetData())
	case *ort.Scalar[int16]:
		return scalarOutput(t, runtime.Int16, v.GetData())
	case *ort.Scalar[uint16]:
		return scalarOutput(t, runtime.Uint16, v.GetData())
	case *ort.Scalar[int32]:
		return scalarOutput(t, runtime.Int32, v.GetData())
	case *ort.Scalar[uint32]:
		return scalarOutput(t, runtime.Uint32, v.GetData())
	case *ort.Scalar[int64]:
		return scalarOutput(t, runtime.Int64, v.GetData())
	case *ort.Scalar[uint64]:
		return scalarOutput(t, runtime.Uint64, v.GetData())
	case *ort.Scalar[bool]:
		return scalarOutput(t, runtime.Bool, v.GetData())
	case *ort.Tensor[float32]:
		dt, data = runtime.Float32, asBytes(v.GetData())
	case *ort.Tensor[float64]:
		dt, data = runtime.Float64, asBytes(v.GetData())
	case *ort.Tensor[int8]:
		dt, data = runtime.Int8, asBytes(v.GetData())
	case *ort.Tensor[uint8]:
		dt, data = runtime.Uint8, asBytes(v.GetData())
	case *ort.Tensor[int16]:
		dt, data = runtime.Int16, asBytes(v.GetData())
	case *ort.Tensor[uint16]:
		dt, data = runtime.Uint16, asBytes(v.GetData())
	case *ort.Tensor[int32]:
		dt, data = runtime.Int32, asBytes(v.GetData())
	case *ort.Tensor[uint32]:
		dt, data = runtime.Uint32, asBytes(v.GetData())
	case *ort.Tensor[int64]:
		dt, data = runtime.Int64, asBytes(v.GetData())
	case *ort.Tensor[uint64]:
		dt, data = runtime.Uint64, asBytes(v.GetData())
	case *ort.Tensor[bool]:
		dt, data = runtime.Bool, asBytes(v.GetData())
	case nil:
		return errors.New("ONNX Runtime returned no value")
	default:
		return fmt.Errorf("%w: ONNX Runtime returned a %s", runtime.ErrUnsupported, v.GetONNXType())
	}
	shape := v.GetShape()
	dims := make([]int, len(shape))
	for i, d := range shape {
		dims[i] = int(d)
	}
	n := runtime.ByteSize(dt, dims)
	if n < 0 || n > len(data) {
		return fmt.Errorf("ONNX Runtime returned %d bytes for %s%v", len(data), dt, dims)
	}
	setOutput(t, dt, dims, n)
	copy(t.Data, data[:n])
	return nil
}

func shape64(s []int) ort.Shape {
	out := make(ort.Shape, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

// asBytes views a slice of fixed-size elements as its little-endian bytes;
// edgefleet's targets (amd64, arm64, arm) are all little-endian.
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

// Scalars: onnxruntime_go's byte-backed tensors need at least one
// dimension, so rank-0 values go through its typed Scalar.
func scalarIn(t runtime.Tensor) (ort.Value, error) {
	switch t.DType {
	case runtime.Float32:
		return newScalar[float32](t.Data)
	case runtime.Float64:
		return newScalar[float64](t.Data)
	case runtime.Int8:
		return newScalar[int8](t.Data)
	case runtime.Uint8:
		return newScalar[uint8](t.Data)
	case runtime.Int16:
		return newScalar[int16](t.Data)
	case runtime.Uint16:
		return newScalar[uint16](t.Data)
	case runtime.Int32:
		return newScalar[int32](t.Data)
	case runtime.Uint32:
		return newScalar[uint32](t.Data)
	case runtime.Int64:
		return newScalar[int64](t.Data)
	case runtime.Uint64:
		return newScalar[uint64](t.Data)
	case runtime.Bool:
		return newScalar[bool](t.Data)
	}
	return nil, fmt.Errorf("%w: scalar of dtype %s", runtime.ErrUnsupported, t.DType)
}

func newScalar[T ort.TensorData](b []byte) (ort.Value, error) {
	var v T
	if len(b) != int(unsafe.Sizeof(v)) {
		return nil, fmt.Errorf("%w: scalar needs %d bytes, has %d", runtime.ErrInput, unsafe.Sizeof(v), len(b))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), len(b)), b)
	return ort.NewScalar(v)
}

func scalarOut(dt runtime.DType) (ort.Value, error) {
	switch dt {
	case runtime.Float32:
		return ort.NewEmptyScalar[float32]()
	case runtime.Float64:
		return ort.NewEmptyScalar[float64]()
	case runtime.Int8:
		return ort.NewEmptyScalar[int8]()
	case runtime.Uint8:
		return ort.NewEmptyScalar[uint8]()
	case runtime.Int16:
		return ort.NewEmptyScalar[int16]()
	case runtime.Uint16:
		return ort.NewEmptyScalar[uint16]()
	case runtime.Int32:
		return ort.NewEmptyScalar[int32]()
	case runtime.Uint32:
		return ort.NewEmptyScalar[uint32]()
	case runtime.Int64:
		return ort.NewEmptyScalar[int64]()
	case runtime.Uint64:
		return ort.NewEmptyScalar[uint64]()
	case runtime.Bool:
		return ort.NewEmptyScalar[bool]()
	}
	return nil, fmt.Errorf("%w: scalar output of dtype %s", runtime.ErrUnsupported, dt)
}

func scalarOutput[T any](t *runtime.Tensor, dt runtime.DType, v T) error {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v))
	setOutput(t, dt, nil, len(b))
	t.Shape = t.Shape[:0]
	copy(t.Data, b)
	return nil
}

// Compile-time checks that the types implement the interfaces.
var (
	_ runtime.Backend = (*Backend)(nil)
	_ runtime.Model   = (*Model)(nil)
	_ runtime.Session = (*Session)(nil)
)
