package tflite

import (
	"encoding/binary"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"
)

// testModel builds small TFLite files for tests, including ones the
// project's writer would refuse (unknown operators, external buffers,
// broken indices). Only the fields the engine reads are written.
type testModel struct {
	tensors []testTensor
	ops     []testOp
	inputs  []int32
	outputs []int32
	// extBuffer marks buffer 1 as stored outside the file.
	extBuffer bool
}

// TensorType codes of schema.fbs used by tests.
const (
	ttFloat32 int8 = 0
	ttInt32   int8 = 2
	ttUint8   int8 = 3
	ttInt8    int8 = 9
)

type testTensor struct {
	name  string
	typ   int8
	shape []int32
	data  []byte
	scale []float32
	zp    []int64
	qdim  int32
}

type testOp struct {
	code          int32
	inputs        []int32
	outputs       []int32
	optsType      uint8
	opts          []optField
	deprecatedOld bool // write the code only in deprecated_builtin_code
}

// optField is one field of an options table.
type optField struct {
	slot int
	kind byte // 'i' int32, 'b' byte, 'f' float32, 'v' int32 vector
	i    int32
	f    float32
	v    []int32
}

func oi(slot int, v int32) optField   { return optField{slot: slot, kind: 'i', i: v} }
func ob(slot int, v int32) optField   { return optField{slot: slot, kind: 'b', i: v} }
func of(slot int, v float32) optField { return optField{slot: slot, kind: 'f', f: v} }

func (m *testModel) add(t testTensor) int32 {
	m.tensors = append(m.tensors, t)
	return int32(len(m.tensors) - 1)
}

func (m *testModel) encode() []byte {
	b := flatbuffers.NewBuilder(1024)
	i32s := func(v []int32) flatbuffers.UOffsetT {
		b.StartVector(4, len(v), 4)
		for i := len(v) - 1; i >= 0; i-- {
			b.PrependInt32(v[i])
		}
		return b.EndVector(len(v))
	}
	tables := func(v []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
		b.StartVector(4, len(v), 4)
		for i := len(v) - 1; i >= 0; i-- {
			b.PrependUOffsetT(v[i])
		}
		return b.EndVector(len(v))
	}
	// Buffers: 0 is the empty sentinel, then one per constant tensor.
	var bufs []flatbuffers.UOffsetT
	b.StartObject(3)
	bufs = append(bufs, b.EndObject())
	bufIdx := make([]uint32, len(m.tensors))
	for i, t := range m.tensors {
		if t.data == nil {
			continue
		}
		b.StartVector(1, len(t.data), 16)
		for j := len(t.data) - 1; j >= 0; j-- {
			b.PrependByte(t.data[j])
		}
		d := b.EndVector(len(t.data))
		b.StartObject(3)
		b.PrependUOffsetTSlot(0, d, 0)
		if m.extBuffer && len(bufs) == 1 {
			b.PrependUint64Slot(1, 4096, 0)
			b.PrependUint64Slot(2, uint64(len(t.data)), 0)
		}
		bufIdx[i] = uint32(len(bufs))
		bufs = append(bufs, b.EndObject())
	}
	var tens []flatbuffers.UOffsetT
	for i, t := range m.tensors {
		name := b.CreateString(t.name)
		shape := i32s(t.shape)
		var q flatbuffers.UOffsetT
		if len(t.scale) > 0 {
			b.StartVector(4, len(t.scale), 4)
			for j := len(t.scale) - 1; j >= 0; j-- {
				b.PrependFloat32(t.scale[j])
			}
			sc := b.EndVector(len(t.scale))
			b.StartVector(8, len(t.zp), 8)
			for j := len(t.zp) - 1; j >= 0; j-- {
				b.PrependInt64(t.zp[j])
			}
			zp := b.EndVector(len(t.zp))
			b.StartObject(7)
			b.PrependUOffsetTSlot(2, sc, 0)
			b.PrependUOffsetTSlot(3, zp, 0)
			b.PrependInt32Slot(6, t.qdim, 0)
			q = b.EndObject()
		}
		b.StartObject(8)
		b.PrependUOffsetTSlot(0, shape, 0)
		b.PrependInt8Slot(1, t.typ, 0)
		b.PrependUint32Slot(2, bufIdx[i], 0)
		b.PrependUOffsetTSlot(3, name, 0)
		if q != 0 {
			b.PrependUOffsetTSlot(4, q, 0)
		}
		tens = append(tens, b.EndObject())
	}
	var codes, ops []flatbuffers.UOffsetT
	for i, op := range m.ops {
		b.StartObject(4)
		if op.deprecatedOld {
			b.PrependInt8Slot(0, int8(op.code), 0)
		} else {
			b.PrependInt8Slot(0, int8(min(op.code, placeholderForGreaterOpCodes)), 0)
			b.PrependInt32Slot(3, op.code, 0)
		}
		b.PrependInt32Slot(2, 1, 1)
		codes = append(codes, b.EndObject())
		var optTable flatbuffers.UOffsetT
		if len(op.opts) > 0 {
			vecs := map[int]flatbuffers.UOffsetT{}
			nslots := 0
			for _, f := range op.opts {
				nslots = max(nslots, f.slot+1)
				if f.kind == 'v' {
					vecs[f.slot] = i32s(f.v)
				}
			}
			b.StartObject(nslots)
			for _, f := range op.opts {
				switch f.kind {
				case 'i':
					b.PrependInt32Slot(f.slot, f.i, math.MinInt32)
				case 'b':
					b.PrependByteSlot(f.slot, byte(f.i), 255)
				case 'f':
					b.PrependFloat32Slot(f.slot, f.f, float32(math.NaN()))
				case 'v':
					b.PrependUOffsetTSlot(f.slot, vecs[f.slot], 0)
				}
			}
			optTable = b.EndObject()
		}
		in, out := i32s(op.inputs), i32s(op.outputs)
		b.StartObject(5)
		b.PrependUint32Slot(0, uint32(i), 0)
		b.PrependUOffsetTSlot(1, in, 0)
		b.PrependUOffsetTSlot(2, out, 0)
		if optTable != 0 {
			b.PrependByteSlot(3, op.optsType, 0)
			b.PrependUOffsetTSlot(4, optTable, 0)
		}
		ops = append(ops, b.EndObject())
	}
	tv, iv, ov, opv := tables(tens), i32s(m.inputs), i32s(m.outputs), tables(ops)
	b.StartObject(5)
	b.PrependUOffsetTSlot(0, tv, 0)
	b.PrependUOffsetTSlot(1, iv, 0)
	b.PrependUOffsetTSlot(2, ov, 0)
	b.PrependUOffsetTSlot(3, opv, 0)
	sg := b.EndObject()
	cv, sv, bv := tables(codes), tables([]flatbuffers.UOffsetT{sg}), tables(bufs)
	b.StartObject(5)
	b.PrependUint32Slot(0, 3, 0)
	b.PrependUOffsetTSlot(1, cv, 0)
	b.PrependUOffsetTSlot(2, sv, 0)
	b.PrependUOffsetTSlot(4, bv, 0)
	root := b.EndObject()
	b.FinishWithFileIdentifier(root, []byte("TFL3"))
	return b.FinishedBytes()
}

func i8bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func i32bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
