package onnxwrite

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// fields decodes one protobuf message into its fields by number, each
// value as raw bytes (length-delimited) or as an integer, so tests read the
// encoding through protowire rather than through the writer.
type fields map[protowire.Number][]any

func decode(t *testing.T, b []byte) fields {
	t.Helper()
	f := fields{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatalf("bad varint in field %d", num)
			}
			f[num] = append(f[num], v)
			b = b[n:]
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				t.Fatalf("bad fixed32 in field %d", num)
			}
			f[num] = append(f[num], uint64(v))
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				t.Fatalf("bad bytes in field %d", num)
			}
			f[num] = append(f[num], v)
			b = b[n:]
		default:
			t.Fatalf("unexpected wire type %d in field %d", typ, num)
		}
	}
	return f
}

func (f fields) str(num protowire.Number) string {
	if v, ok := f[num]; ok {
		return string(v[0].([]byte))
	}
	return ""
}

func (f fields) msgs(t *testing.T, num protowire.Number) []fields {
	var out []fields
	for _, v := range f[num] {
		out = append(out, decode(t, v.([]byte)))
	}
	return out
}

func (f fields) uint(num protowire.Number) uint64 {
	if v, ok := f[num]; ok {
		return v[0].(uint64)
	}
	return 0
}

func small(t testing.TB) *Graph {
	g := New("tiny", 13)
	g.Doc("two layers")
	g.Metadata("version", "1.0.0")
	g.Input("x", Float32, []int{1, 3})
	g.Float32s("w", []int{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	g.Float32s("b", []int{2}, []float32{0.5, -0.5})
	g.Node("Gemm", []string{"x", "w", "b"}, []string{"h"}, Int("transB", 1), Float("alpha", 1))
	g.Node("Relu", []string{"h"}, []string{"r"})
	g.Node("Softmax", []string{"r"}, []string{"y"}, Int("axis", -1))
	g.Output("y", Float32, []int{1, 2})
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestEncodeDecodes(t *testing.T) {
	b, err := small(t).Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, b)
	if m.uint(modelIRVersion) != IRVersion || m.str(modelProducerName) != producerName || m.str(modelDocString) != "two layers" {
		t.Errorf("model header: ir %d producer %q doc %q", m.uint(modelIRVersion), m.str(modelProducerName), m.str(modelDocString))
	}
	if ops := m.msgs(t, modelOpsetImport); len(ops) != 1 || ops[0].uint(opsetVersion) != 13 || ops[0].str(1) != "" {
		t.Errorf("opset_import %v", ops)
	}
	if kv := m.msgs(t, modelMetadataProps); len(kv) != 1 || kv[0].str(1) != "version" || kv[0].str(2) != "1.0.0" {
		t.Errorf("metadata_props %v", kv)
	}
	graphs := m.msgs(t, modelGraph)
	if len(graphs) != 1 {
		t.Fatalf("%d graphs", len(graphs))
	}
	g := graphs[0]
	if g.str(graphName) != "tiny" {
		t.Errorf("graph name %q", g.str(graphName))
	}
	var ops []string
	for _, n := range g.msgs(t, graphNode) {
		ops = append(ops, n.str(nodeOpType))
	}
	if !slices.Equal(ops, []string{"Gemm", "Relu", "Softmax"}) {
		t.Errorf("nodes %v", ops)
	}
	gemm := g.msgs(t, graphNode)[0]
	var ins []string
	for _, v := range gemm[nodeInput] {
		ins = append(ins, string(v.([]byte)))
	}
	if !slices.Equal(ins, []string{"x", "w", "b"}) || string(gemm[nodeOutput][0].([]byte)) != "h" {
		t.Errorf("Gemm inputs %v outputs %v", ins, gemm[nodeOutput])
	}
	attrs := gemm.msgs(t, nodeAttribute)
	if len(attrs) != 2 || attrs[0].str(attrName) != "transB" || attrs[0].uint(attrI) != 1 || attrs[0].uint(attrType) != attrInt ||
		math.Float32frombits(uint32(attrs[1].uint(attrF))) != 1 || attrs[1].uint(attrType) != attrFloat {
		t.Errorf("Gemm attributes %v", attrs)
	}
	sm := g.msgs(t, graphNode)[2].msgs(t, nodeAttribute)[0]
	if int64(sm.uint(attrI)) != -1 {
		t.Errorf("Softmax axis %d, want -1", int64(sm.uint(attrI)))
	}
	inits := g.msgs(t, graphInitializer)
	if len(inits) != 2 || inits[0].str(tensorName) != "w" || inits[0].uint(tensorDataType) != uint64(Float32) {
		t.Fatalf("initializers %v", inits)
	}
	var dims []uint64
	for _, d := range inits[0][tensorDims] {
		dims = append(dims, d.(uint64))
	}
	raw := inits[0][tensorRawData][0].([]byte)
	if !slices.Equal(dims, []uint64{2, 3}) || len(raw) != 24 || math.Float32frombits(uint32(raw[20])|uint32(raw[21])<<8|uint32(raw[22])<<16|uint32(raw[23])<<24) != 6 {
		t.Errorf("initializer w: dims %v, %d raw bytes", dims, len(raw))
	}
	in := g.msgs(t, graphInput)[0]
	tt := in.msgs(t, valueType)[0].msgs(t, typeTensor)[0]
	var shape []uint64
	for _, d := range tt.msgs(t, tensorShape)[0].msgs(t, shapeDim) {
		shape = append(shape, d.uint(dimValue))
	}
	if in.str(valueName) != "x" || tt.uint(tensorElemType) != uint64(Float32) || !slices.Equal(shape, []uint64{1, 3}) {
		t.Errorf("input %q type %d shape %v", in.str(valueName), tt.uint(tensorElemType), shape)
	}
	if out := g.msgs(t, graphOutput); len(out) != 1 || out[0].str(valueName) != "y" {
		t.Errorf("outputs %v", out)
	}
}

func TestEncodeDeterministic(t *testing.T) {
	a, _ := small(t).Encode()
	b, _ := small(t).Encode()
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same graph differ")
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name  string
		build func(g *Graph)
		want  string
	}{
		{"undefined input", func(g *Graph) { g.Node("Relu", []string{"nope"}, []string{"y"}) }, `"nope" is not defined`},
		{"duplicate name", func(g *Graph) { g.Input("x", Float32, []int{1}); g.Float32s("x", []int{1}, []float32{1}) }, "already used"},
		{"output reused", func(g *Graph) {
			g.Input("x", Float32, []int{1})
			g.Node("Relu", []string{"x"}, []string{"x"})
		}, "already used"},
		{"raw size", func(g *Graph) { g.Float32s("w", []int{2, 2}, []float32{1}) }, "needs 16"},
		{"zero dim", func(g *Graph) { g.Input("x", Float32, []int{0}) }, "at least 1"},
		{"bad dtype", func(g *Graph) { g.Input("x", DType(99), []int{1}) }, "unsupported dtype"},
		{"no op", func(g *Graph) { g.Input("x", Float32, []int{1}); g.Node("", []string{"x"}, []string{"y"}) }, "no op type"},
		{"attr twice", func(g *Graph) {
			g.Input("x", Float32, []int{1})
			g.Node("Softmax", []string{"x"}, []string{"y"}, Int("axis", 1), Int("axis", 0))
		}, "given twice"},
		{"unproduced output", func(g *Graph) { g.Output("y", Float32, []int{1}) }, "not produced"},
		{"empty graph", func(g *Graph) {}, "needs at least one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := New("bad", 13)
			c.build(g)
			b, err := g.Encode()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Encode = %d bytes, %v; want ErrInvalid mentioning %q", len(b), err, c.want)
			}
		})
	}
	if _, err := New("x", 9).Encode(); err == nil || !strings.Contains(err.Error(), "opset 9") {
		t.Errorf("opset 9 accepted: %v", err)
	}
}
