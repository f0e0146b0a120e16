// Package tflitewrite writes TensorFlow Lite flatbuffers for small quantized
// networks: the project's demo and test models, built in Go so that tests and
// `make run` never need a converter or a file from outside the repository.
//
// A Graph is built like the network it describes: inputs, constant tensors
// (weights, biases), then operators that each return their output tensor.
// Arguments are checked as they are given; the first mistake is remembered
// and returned by Encode with the name of the tensor or operator at fault,
// so a builder reads as straight-line code without an error check per line.
//
// Files follow what the TFLite converter writes: identifier "TFL3", schema
// version 3, a leading empty buffer, operator codes with both builtin_code
// and deprecated_builtin_code, int8 weights with symmetric per-channel or
// per-tensor scales, int32 biases. The table layout is hand-written from the
// schema's field slots (schema.go) rather than generated.
package tflitewrite

import (
	"encoding/binary"
	"fmt"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"
)

// TensorType is a TFLite element type; the values are the schema's.
type TensorType int8

// The element types the writer supports.
const (
	Float32 TensorType = 0
	Int32   TensorType = 2
	Uint8   TensorType = 3
	Int8    TensorType = 9
)

func (t TensorType) String() string {
	switch t {
	case Float32:
		return "float32"
	case Int32:
		return "int32"
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	}
	return fmt.Sprintf("tensortype(%d)", int8(t))
}

func (t TensorType) size() int {
	switch t {
	case Float32, Int32:
		return 4
	case Uint8, Int8:
		return 1
	}
	return 0
}

// quantizable reports whether tensors of this type carry quantization.
func (t TensorType) quantizable() bool { return t == Int8 || t == Uint8 || t == Int32 }

// Activation is a fused activation function; the values are the schema's.
type Activation int8

// Fused activations.
const (
	ActNone  Activation = 0
	ActRelu  Activation = 1
	ActRelu6 Activation = 3
)

// Padding is how convolutions and pools treat borders.
type Padding int8

// Paddings; the values are the schema's.
const (
	Same  Padding = 0
	Valid Padding = 1
)

// Quant maps stored integers to reals: real = (q - ZeroPoint[c]) * Scale[c].
// One scale means per-tensor; more means per-channel along Axis (the
// schema's quantized_dimension), one per element of that dimension.
type Quant struct {
	Scale     []float32
	ZeroPoint []int64
	Axis      int
}

// PerTensor is a per-tensor quantization.
func PerTensor(scale float32, zeroPoint int64) *Quant {
	return &Quant{Scale: []float32{scale}, ZeroPoint: []int64{zeroPoint}}
}

// Tensor is a handle to a tensor of a Graph.
type Tensor int

// invalid is returned after an error so that later calls fail quietly and
// Encode reports the first cause.
const invalid Tensor = -1

type tensor struct {
	name   string
	typ    TensorType
	shape  []int
	quant  *Quant
	buffer int // index into Graph.buffers; 0 for tensors without data
}

type operator struct {
	code    int32
	version int32
	inputs  []Tensor
	outputs []Tensor
	options options
}

// options writes an operator's builtin options table. kind is the union
// member; kind optNone writes nothing.
type options struct {
	kind  byte
	write func(*encoder) flatbuffers.UOffsetT
}

// Limits keep a mistaken builder from asking for gigabytes; demo and test
// models are far below them.
const (
	maxRank     = 8
	maxElements = 1 << 28
)

// Graph is a single-subgraph TFLite model under construction. It is not safe
// for concurrent use.
type Graph struct {
	description string
	tensors     []tensor
	buffers     [][]byte
	ops         []operator
	inputs      []Tensor
	outputs     []Tensor
	names       map[string]bool
	err         error
}

// New returns an empty graph; description goes into Model.description.
func New(description string) *Graph {
	return &Graph{description: description, buffers: [][]byte{nil}, names: map[string]bool{}}
}

// Err returns the first error met while building, if any.
func (g *Graph) Err() error { return g.err }

func (g *Graph) fail(format string, args ...any) Tensor {
	if g.err == nil {
		g.err = fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
	return invalid
}

// Input adds a graph input. Quantized types need q; float32 must have none.
func (g *Graph) Input(name string, typ TensorType, shape []int, q *Quant) Tensor {
	t := g.addTensor(name, typ, shape, q, nil)
	if t != invalid {
		g.inputs = append(g.inputs, t)
	}
	return t
}

// Output marks t as a graph output, in the order of the calls.
func (g *Graph) Output(t Tensor) {
	if g.check(t, "output") {
		g.outputs = append(g.outputs, t)
	}
}

// Const adds a constant tensor whose data is raw little-endian bytes.
func (g *Graph) Const(name string, typ TensorType, shape []int, q *Quant, data []byte) Tensor {
	if g.err != nil {
		return invalid
	}
	if data == nil {
		data = []byte{}
	}
	return g.addTensor(name, typ, shape, q, data)
}

// ConstInt8 adds an int8 constant, e.g. weights.
func (g *Graph) ConstInt8(name string, shape []int, q *Quant, v []int8) Tensor {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return g.Const(name, Int8, shape, q, b)
}

// ConstInt32 adds an int32 constant, e.g. a bias (with q) or axes (q nil).
func (g *Graph) ConstInt32(name string, shape []int, q *Quant, v []int32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return g.Const(name, Int32, shape, q, b)
}

// ConstFloat32 adds a float32 constant.
func (g *Graph) ConstFloat32(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return g.Const(name, Float32, shape, nil, b)
}

// addTensor checks and records a tensor; data nil means no buffer.
func (g *Graph) addTensor(name string, typ TensorType, shape []int, q *Quant, data []byte) Tensor {
	if g.err != nil {
		return invalid
	}
	if name == "" {
		return g.fail("tensor %d has no name", len(g.tensors))
	}
	if g.names[name] {
		return g.fail("tensor name %q used twice", name)
	}
	if typ.size() == 0 {
		return g.fail("tensor %q: unsupported type %s", name, typ)
	}
	if len(shape) > maxRank {
		return g.fail("tensor %q: rank %d above %d", name, len(shape), maxRank)
	}
	n := 1
	for _, d := range shape {
		if d <= 0 {
			return g.fail("tensor %q: shape %v has a dimension below 1", name, shape)
		}
		if n > maxElements/d {
			return g.fail("tensor %q: shape %v has more than %d elements", name, shape, maxElements)
		}
		n *= d
	}
	if err := checkQuant(typ, shape, q); err != nil {
		return g.fail("tensor %q: %v", name, err)
	}
	buf := 0
	if data != nil {
		if len(data) != n*typ.size() {
			return g.fail("tensor %q: %d bytes of data, shape %v of %s needs %d", name, len(data), shape, typ, n*typ.size())
		}
		buf = len(g.buffers)
		g.buffers = append(g.buffers, append([]byte(nil), data...))
	}
	g.names[name] = true
	g.tensors = append(g.tensors, tensor{name: name, typ: typ, shape: append([]int(nil), shape...), quant: copyQuant(q), buffer: buf})
	return Tensor(len(g.tensors) - 1)
}

func copyQuant(q *Quant) *Quant {
	if q == nil {
		return nil
	}
	return &Quant{Scale: append([]float32(nil), q.Scale...), ZeroPoint: append([]int64(nil), q.ZeroPoint...), Axis: q.Axis}
}

func checkQuant(typ TensorType, shape []int, q *Quant) error {
	if q == nil {
		if typ == Int8 || typ == Uint8 {
			return fmt.Errorf("%s tensor needs quantization", typ)
		}
		return nil
	}
	if !typ.quantizable() {
		return fmt.Errorf("%s tensor cannot be quantized", typ)
	}
	if len(q.Scale) == 0 || len(q.Scale) != len(q.ZeroPoint) {
		return fmt.Errorf("quantization has %d scales and %d zero points, want the same number, at least one", len(q.Scale), len(q.ZeroPoint))
	}
	for i, s := range q.Scale {
		if !(s > 0) || math.IsInf(float64(s), 0) {
			return fmt.Errorf("quantization scale[%d] = %v, want a finite value above 0", i, s)
		}
	}
	lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
	switch typ {
	case Int8:
		lo, hi = -128, 127
	case Uint8:
		lo, hi = 0, 255
	}
	for i, z := range q.ZeroPoint {
		if z < lo || z > hi {
			return fmt.Errorf("zero point[%d] = %d outside %s range [%d, %d]", i, z, typ, lo, hi)
		}
	}
	if len(q.Scale) > 1 {
		if q.Axis < 0 || q.Axis >= len(shape) {
			return fmt.Errorf("per-channel axis %d outside shape %v", q.Axis, shape)
		}
		if shape[q.Axis] != len(q.Scale) {
			return fmt.Errorf("%d per-channel scales for dimension %d of size %d", len(q.Scale), q.Axis, shape[q.Axis])
		}
	} else if q.Axis < 0 || (q.Axis > 0 && q.Axis >= len(shape)) {
		return fmt.Errorf("quantization axis %d outside shape %v", q.Axis, shape)
	}
	return nil
}

// check reports whether t is a tensor of g, failing the graph if not.
func (g *Graph) check(t Tensor, what string) bool {
	if g.err != nil {
		return false
	}
	if t < 0 || int(t) >= len(g.tensors) {
		g.fail("%s: no tensor %d in the graph", what, int(t))
		return false
	}
	return true
}

func (g *Graph) t(id Tensor) *tensor { return &g.tensors[id] }
