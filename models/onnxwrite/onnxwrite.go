// Package onnxwrite writes ONNX models for small networks, encoded by hand
// with protowire from the field numbers of onnx.proto (no generated ONNX
// code), so the ONNX Runtime backend can be tested and benchmarked on the
// same networks the project writes as TFLite.
//
// A Graph is built in execution order: inputs and initializers, then nodes
// that name their inputs and outputs. Mistakes are remembered and returned
// by Encode with the node or tensor at fault, as in models/tflitewrite.
package onnxwrite

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// DType is an ONNX TensorProto.DataType.
type DType int32

// The element types the writer supports; the values are ONNX's.
const (
	Float32 DType = 1
	Uint8   DType = 2
	Int8    DType = 3
	Int32   DType = 6
	Int64   DType = 7
)

func (d DType) size() int {
	switch d {
	case Float32, Int32:
		return 4
	case Uint8, Int8:
		return 1
	case Int64:
		return 8
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// IRVersion is the ONNX IR version written: 8 covers opsets 13 to 17, which
// have every operator the demo networks need (per-axis DequantizeLinear
// since 13) and which ONNX Runtime 1.14 and later load.
const IRVersion = 8

// Opset bounds accepted by New.
const (
	MinOpset = 13
	MaxOpset = 17
)

// Limits on what a builder may ask for.
const (
	maxRank     = 8
	maxElements = 1 << 28
)

// Attribute is a node attribute; make one with Int, Float, Ints or String.
type Attribute struct {
	name  string
	typ   int32
	i     int64
	f     float32
	ints  []int64
	s     string
	valid bool
}

// ONNX AttributeProto.AttributeType values.
const (
	attrFloat  = 1
	attrInt    = 2
	attrString = 3
	attrInts   = 7
)

// Int is an integer attribute.
func Int(name string, v int64) Attribute {
	return Attribute{name: name, typ: attrInt, i: v, valid: true}
}

// Float is a float attribute.
func Float(name string, v float32) Attribute {
	return Attribute{name: name, typ: attrFloat, f: v, valid: true}
}

// Ints is an integer list attribute.
func Ints(name string, v ...int64) Attribute {
	return Attribute{name: name, typ: attrInts, ints: append([]int64(nil), v...), valid: true}
}

// String is a string attribute.
func String(name, v string) Attribute {
	return Attribute{name: name, typ: attrString, s: v, valid: true}
}

type valueInfo struct {
	name  string
	dtype DType
	shape []int
}

type initializer struct {
	valueInfo
	raw []byte
}

type node struct {
	op      string
	name    string
	inputs  []string
	outputs []string
	attrs   []Attribute
}

// Graph is an ONNX model with one graph under construction. It is not safe
// for concurrent use.
type Graph struct {
	name    string
	opset   int
	doc     string
	inputs  []valueInfo
	outputs []valueInfo
	inits   []initializer
	nodes   []node
	defined map[string]DType // every value name produced so far
	meta    [][2]string
	err     error
}

// New returns an empty graph using the default ONNX domain at opset.
func New(name string, opset int) *Graph {
	g := &Graph{name: name, opset: opset, defined: map[string]DType{}}
	if opset < MinOpset || opset > MaxOpset {
		g.fail("opset %d outside the supported %d..%d", opset, MinOpset, MaxOpset)
	}
	return g
}

// Err returns the first error met while building, if any.
func (g *Graph) Err() error { return g.err }

// Doc sets the model's doc_string.
func (g *Graph) Doc(s string) { g.doc = s }

// Metadata adds a metadata_props entry.
func (g *Graph) Metadata(key, value string) { g.meta = append(g.meta, [2]string{key, value}) }

func (g *Graph) fail(format string, args ...any) {
	if g.err == nil {
		g.err = fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
	}
}

func (g *Graph) define(name string, d DType, shape []int, what string) bool {
	if g.err != nil {
		return false
	}
	if name == "" {
		g.fail("%s has an empty name", what)
		return false
	}
	if _, dup := g.defined[name]; dup {
		g.fail("%s %q: name already used", what, name)
		return false
	}
	if d.size() == 0 {
		g.fail("%s %q: unsupported dtype %d", what, name, int32(d))
		return false
	}
	if shape != nil && numElements(shape) < 0 {
		g.fail("%s %q: shape %v must have at most %d dimensions of at least 1 and at most %d elements", what, name, shape, maxRank, maxElements)
		return false
	}
	g.defined[name] = d
	return true
}

// Input declares a graph input.
func (g *Graph) Input(name string, d DType, shape []int) {
	if g.define(name, d, shape, "input") {
		g.inputs = append(g.inputs, valueInfo{name, d, append([]int(nil), shape...)})
	}
}

// Initializer adds a constant tensor of raw little-endian data. An empty
// shape is a scalar.
func (g *Graph) Initializer(name string, d DType, shape []int, raw []byte) {
	if shape == nil {
		shape = []int{}
	}
	if !g.define(name, d, shape, "initializer") {
		return
	}
	if want := numElements(shape) * d.size(); len(raw) != want {
		g.fail("initializer %q: %d bytes, shape %v of %s needs %d", name, len(raw), shape, d, want)
		return
	}
	g.inits = append(g.inits, initializer{valueInfo{name, d, append([]int(nil), shape...)}, append([]byte(nil), raw...)})
}

// Float32s adds a float32 initializer.
func (g *Graph) Float32s(name string, shape []int, v []float32) {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	g.Initializer(name, Float32, shape, b)
}

// Int8s adds an int8 initializer.
func (g *Graph) Int8s(name string, shape []int, v []int8) {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	g.Initializer(name, Int8, shape, b)
}

// Int32s adds an int32 initializer.
func (g *Graph) Int32s(name string, shape []int, v []int32) {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	g.Initializer(name, Int32, shape, b)
}

// Node adds an operator of the default domain. Every input must already be
// defined (an input, an initializer or an earlier node's output); "" skips
// an optional input. Output dtypes are not inferred: name graph outputs
// with Output.
func (g *Graph) Node(op string, inputs, outputs []string, attrs ...Attribute) {
	if g.err != nil {
		return
	}
	what := fmt.Sprintf("node %d (%s)", len(g.nodes), op)
	if op == "" {
		g.fail("%s has no op type", what)
		return
	}
	for _, in := range inputs {
		if _, ok := g.defined[in]; in != "" && !ok {
			g.fail("%s: input %q is not defined before it", what, in)
			return
		}
	}
	if len(outputs) == 0 {
		g.fail("%s has no outputs", what)
		return
	}
	seen := map[string]bool{}
	for _, a := range attrs {
		if !a.valid || a.name == "" {
			g.fail("%s: attribute without a name", what)
			return
		}
		if seen[a.name] {
			g.fail("%s: attribute %q given twice", what, a.name)
			return
		}
		seen[a.name] = true
	}
	for _, out := range outputs {
		if out == "" {
			g.fail("%s: empty output name", what)
			return
		}
		if _, dup := g.defined[out]; dup {
			g.fail("%s: output %q: name already used", what, out)
			return
		}
		g.defined[out] = 0 // dtype unknown until declared
	}
	g.nodes = append(g.nodes, node{op: op, name: fmt.Sprintf("%s_%d", op, len(g.nodes)),
		inputs: append([]string(nil), inputs...), outputs: append([]string(nil), outputs...), attrs: attrs})
}

// Output declares a graph output: a value some node produced.
func (g *Graph) Output(name string, d DType, shape []int) {
	if g.err != nil {
		return
	}
	if _, ok := g.defined[name]; !ok {
		g.fail("output %q is not produced by any node", name)
		return
	}
	if d.size() == 0 || numElements(shape) < 0 {
		g.fail("output %q: dtype %s shape %v", name, d, shape)
		return
	}
	g.outputs = append(g.outputs, valueInfo{name, d, append([]int(nil), shape...)})
}

func numElements(shape []int) int {
	if len(shape) > maxRank {
		return -1
	}
	n := 1
	for _, d := range shape {
		if d < 1 || n > maxElements/d {
			return -1
		}
		n *= d
	}
	return n
}

// Field numbers of onnx.proto.
const (
	modelIRVersion       = 1
	modelProducerName    = 2
	modelProducerVersion = 3
	modelDocString       = 6
	modelGraph           = 7
	modelOpsetImport     = 8
	modelMetadataProps   = 14

	opsetVersion = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphInput       = 11
	graphOutput      = 12

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5

	attrName   = 1
	attrF      = 2
	attrI      = 3
	attrS      = 4
	attrIntsNo = 8
	attrType   = 20

	tensorDims     = 1
	tensorDataType = 2
	tensorName     = 8
	tensorRawData  = 9

	valueName = 1
	valueType = 2

	typeTensor      = 1
	tensorElemType  = 1
	tensorShape     = 2
	shapeDim        = 1
	dimValue        = 1
	stringStringKey = 1
	stringStringVal = 2
	producerName    = "edgefleet models/onnxwrite"
	producerVersion = "1"
)

func appendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (v valueInfo) encode() []byte {
	var shape []byte
	for _, d := range v.shape {
		shape = appendMessage(shape, shapeDim, appendVarint(nil, dimValue, uint64(d)))
	}
	tt := appendVarint(nil, tensorElemType, uint64(v.dtype))
	tt = appendMessage(tt, tensorShape, shape)
	var b []byte
	b = appendString(b, valueName, v.name)
	return appendMessage(b, valueType, appendMessage(nil, typeTensor, tt))
}

func (a Attribute) encode() []byte {
	b := appendString(nil, attrName, a.name)
	switch a.typ {
	case attrFloat:
		b = protowire.AppendTag(b, attrF, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.f))
	case attrInt:
		b = appendVarint(b, attrI, uint64(a.i))
	case attrString:
		b = appendString(b, attrS, a.s)
	case attrInts:
		for _, v := range a.ints {
			b = appendVarint(b, attrIntsNo, uint64(v))
		}
	}
	return appendVarint(b, attrType, uint64(a.typ))
}

// Encode returns the model as .onnx bytes, or the first error met while
// building. The same graph always encodes to the same bytes.
func (g *Graph) Encode() ([]byte, error) {
	if g.err != nil {
		return nil, g.err
	}
	if len(g.inputs) == 0 || len(g.outputs) == 0 || len(g.nodes) == 0 {
		return nil, fmt.Errorf("%w: graph has %d inputs, %d outputs and %d nodes; needs at least one of each", ErrInvalid, len(g.inputs), len(g.outputs), len(g.nodes))
	}
	var graph []byte
	for _, n := range g.nodes {
		var nb []byte
		for _, in := range n.inputs {
			nb = appendString(nb, nodeInput, in)
		}
		for _, out := range n.outputs {
			nb = appendString(nb, nodeOutput, out)
		}
		nb = appendString(nb, nodeName, n.name)
		nb = appendString(nb, nodeOpType, n.op)
		for _, a := range n.attrs {
			nb = appendMessage(nb, nodeAttribute, a.encode())
		}
		graph = appendMessage(graph, graphNode, nb)
	}
	graph = appendString(graph, graphName, g.name)
	for _, in := range g.inits {
		var tb []byte
		for _, d := range in.shape {
			tb = appendVarint(tb, tensorDims, uint64(d))
		}
		tb = appendVarint(tb, tensorDataType, uint64(in.dtype))
		tb = appendString(tb, tensorName, in.name)
		tb = protowire.AppendTag(tb, tensorRawData, protowire.BytesType)
		tb = protowire.AppendBytes(tb, in.raw)
		graph = appendMessage(graph, graphInitializer, tb)
	}
	for _, in := range g.inputs {
		graph = appendMessage(graph, graphInput, in.encode())
	}
	for _, out := range g.outputs {
		graph = appendMessage(graph, graphOutput, out.encode())
	}

	var m []byte
	m = appendVarint(m, modelIRVersion, IRVersion)
	m = appendString(m, modelProducerName, producerName)
	m = appendString(m, modelProducerVersion, producerVersion)
	if g.doc != "" {
		m = appendString(m, modelDocString, g.doc)
	}
	m = appendMessage(m, modelGraph, graph)
	m = appendMessage(m, modelOpsetImport, appendVarint(nil, opsetVersion, uint64(g.opset)))
	for _, kv := range g.meta {
		e := appendString(nil, stringStringKey, kv[0])
		e = appendString(e, stringStringVal, kv[1])
		m = appendMessage(m, modelMetadataProps, e)
	}
	return m, nil
}
