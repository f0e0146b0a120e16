package tflitewrite

import (
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
)

// A reader for what the writer writes, on the flatbuffers runtime's Table,
// so the tests check the bytes through the library rather than through the
// writer's own idea of them. Panics from a malformed buffer are recovered by
// parseModel and reported as errors.

type fbTable struct{ flatbuffers.Table }

func slotOffset(slot int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*slot) }

func (t fbTable) has(slot int) bool { return t.Offset(slotOffset(slot)) != 0 }

func (t fbTable) int32(slot int, def int32) int32 {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return t.GetInt32(flatbuffers.UOffsetT(o) + t.Pos)
	}
	return def
}

func (t fbTable) uint32(slot int, def uint32) uint32 {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return t.GetUint32(flatbuffers.UOffsetT(o) + t.Pos)
	}
	return def
}

func (t fbTable) int8(slot int, def int8) int8 {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return t.GetInt8(flatbuffers.UOffsetT(o) + t.Pos)
	}
	return def
}

func (t fbTable) float32(slot int, def float32) float32 {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return t.GetFloat32(flatbuffers.UOffsetT(o) + t.Pos)
	}
	return def
}

func (t fbTable) bool(slot int) bool {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return t.GetBool(flatbuffers.UOffsetT(o) + t.Pos)
	}
	return false
}

func (t fbTable) str(slot int) string {
	if o := t.Offset(slotOffset(slot)); o != 0 {
		return string(t.ByteVector(flatbuffers.UOffsetT(o) + t.Pos))
	}
	return ""
}

// vec returns the position of a vector's first element and its length.
func (t fbTable) vec(slot int) (flatbuffers.UOffsetT, int) {
	o := t.Offset(slotOffset(slot))
	if o == 0 {
		return 0, 0
	}
	return t.Vector(flatbuffers.UOffsetT(o)), t.VectorLen(flatbuffers.UOffsetT(o))
}

func (t fbTable) int32s(slot int) []int32 {
	start, n := t.vec(slot)
	out := make([]int32, n)
	for i := range out {
		out[i] = t.GetInt32(start + flatbuffers.UOffsetT(4*i))
	}
	return out
}

func (t fbTable) table(slot int) (fbTable, bool) {
	o := t.Offset(slotOffset(slot))
	if o == 0 {
		return fbTable{}, false
	}
	return fbTable{flatbuffers.Table{Bytes: t.Bytes, Pos: t.Indirect(flatbuffers.UOffsetT(o) + t.Pos)}}, true
}

func (t fbTable) tables(slot int) []fbTable {
	start, n := t.vec(slot)
	out := make([]fbTable, n)
	for i := range out {
		p := start + flatbuffers.UOffsetT(4*i)
		out[i] = fbTable{flatbuffers.Table{Bytes: t.Bytes, Pos: t.Indirect(p)}}
	}
	return out
}

type parsedTensor struct {
	Name      string
	Type      TensorType
	Shape     []int32
	Buffer    uint32
	Scale     []float32
	ZeroPoint []int64
	Axis      int32
}

type parsedOp struct {
	Code        int32
	Deprecated  int8
	Version     int32
	Inputs      []int32
	Outputs     []int32
	OptionsType byte
	Options     fbTable
}

type parsedModel struct {
	Identifier  string
	Version     uint32
	Description string
	Buffers     [][]byte
	BufferPos   []int // file offset of each non-empty buffer's data
	Tensors     []parsedTensor
	Ops         []parsedOp
	Inputs      []int32
	Outputs     []int32
}

func parseModel(buf []byte) (m parsedModel, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed flatbuffer: %v", r)
		}
	}()
	if len(buf) < 8 {
		return m, fmt.Errorf("%d bytes", len(buf))
	}
	m.Identifier = string(buf[4:8])
	root := fbTable{flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}}
	m.Version = root.uint32(modelVersion, 0)
	m.Description = root.str(modelDescription)
	for _, bt := range root.tables(modelBuffers) {
		start, n := bt.vec(bufferData)
		m.Buffers = append(m.Buffers, buf[start:int(start)+n])
		m.BufferPos = append(m.BufferPos, int(start))
	}
	codes := root.tables(modelOperatorCodes)
	sgs := root.tables(modelSubgraphs)
	if len(sgs) != 1 {
		return m, fmt.Errorf("%d subgraphs", len(sgs))
	}
	sg := sgs[0]
	m.Inputs, m.Outputs = sg.int32s(subgraphInputs), sg.int32s(subgraphOutputs)
	for _, tt := range sg.tables(subgraphTensors) {
		pt := parsedTensor{
			Name: tt.str(tensorName), Type: TensorType(tt.int8(tensorType, 0)),
			Shape: tt.int32s(tensorShape), Buffer: tt.uint32(tensorBuffer, 0),
		}
		if q, ok := tt.table(tensorQuantization); ok {
			start, n := q.vec(quantScale)
			for i := range n {
				pt.Scale = append(pt.Scale, q.GetFloat32(start+flatbuffers.UOffsetT(4*i)))
			}
			start, n = q.vec(quantZeroPoint)
			for i := range n {
				pt.ZeroPoint = append(pt.ZeroPoint, q.GetInt64(start+flatbuffers.UOffsetT(8*i)))
			}
			pt.Axis = q.int32(quantQuantizedDimension, 0)
		}
		m.Tensors = append(m.Tensors, pt)
	}
	for _, ot := range sg.tables(subgraphOperators) {
		idx := ot.uint32(operatorOpcodeIndex, 0)
		if int(idx) >= len(codes) {
			return m, fmt.Errorf("opcode index %d of %d", idx, len(codes))
		}
		c := codes[idx]
		op := parsedOp{
			Code: c.int32(opcodeBuiltinCode, 0), Deprecated: c.int8(opcodeDeprecatedBuiltinCode, 0),
			Version: c.int32(opcodeVersion, 1),
			Inputs:  ot.int32s(operatorInputs), Outputs: ot.int32s(operatorOutputs),
			OptionsType: byte(ot.int8(operatorBuiltinOptionsType, 0)),
		}
		if o, ok := ot.table(operatorBuiltinOptions); ok {
			op.Options = o
		}
		m.Ops = append(m.Ops, op)
	}
	return m, nil
}
