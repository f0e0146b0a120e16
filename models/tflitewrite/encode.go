package tflitewrite

import (
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
)

type encoder struct {
	b *flatbuffers.Builder
}

func (e *encoder) int32s(v []int32) flatbuffers.UOffsetT {
	e.b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		e.b.PrependInt32(v[i])
	}
	return e.b.EndVector(len(v))
}

func (e *encoder) ints(v []int) flatbuffers.UOffsetT {
	e.b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		e.b.PrependInt32(int32(v[i]))
	}
	return e.b.EndVector(len(v))
}

func (e *encoder) tensorIndices(v []Tensor) flatbuffers.UOffsetT {
	e.b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		t := int32(v[i])
		if v[i] == NoTensor {
			t = -1
		}
		e.b.PrependInt32(t)
	}
	return e.b.EndVector(len(v))
}

func (e *encoder) tables(v []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	e.b.StartVector(4, len(v), 4)
	for i := len(v) - 1; i >= 0; i-- {
		e.b.PrependUOffsetT(v[i])
	}
	return e.b.EndVector(len(v))
}

// alignedBytes writes a ubyte vector whose data starts on an align-byte
// boundary of the finished file.
func (e *encoder) alignedBytes(data []byte, align int) flatbuffers.UOffsetT {
	e.b.StartVector(1, len(data), align)
	for i := len(data) - 1; i >= 0; i-- {
		e.b.PlaceByte(data[i])
	}
	return e.b.EndVector(len(data))
}

// Encode returns the model as a .tflite file, or the first error met while
// building (wrapping ErrInvalid). The same graph always encodes to the same
// bytes.
func (g *Graph) Encode() ([]byte, error) {
	if g.err != nil {
		return nil, g.err
	}
	if len(g.inputs) == 0 || len(g.outputs) == 0 {
		return nil, fmt.Errorf("%w: graph has %d inputs and %d outputs, needs at least one of each", ErrInvalid, len(g.inputs), len(g.outputs))
	}
	if len(g.ops) == 0 {
		return nil, fmt.Errorf("%w: graph has no operators", ErrInvalid)
	}
	size := 1024
	for _, b := range g.buffers {
		size += len(b) + bufferAlign
	}
	e := &encoder{b: flatbuffers.NewBuilder(size)}
	b := e.b

	// Operator codes in order of first use, one per (code, version).
	type key struct{ code, version int32 }
	codeIndex := map[key]uint32{}
	var codes []key
	opIndex := make([]uint32, len(g.ops))
	for i, op := range g.ops {
		k := key{op.code, op.version}
		idx, ok := codeIndex[k]
		if !ok {
			idx = uint32(len(codes))
			codeIndex[k] = idx
			codes = append(codes, k)
		}
		opIndex[i] = idx
	}

	// Children before parents: flatbuffers are built back to front.
	bufs := make([]flatbuffers.UOffsetT, len(g.buffers))
	for i := len(g.buffers) - 1; i >= 0; i-- {
		var data flatbuffers.UOffsetT
		if len(g.buffers[i]) > 0 {
			data = e.alignedBytes(g.buffers[i], bufferAlign)
		}
		b.StartObject(bufferNumFields)
		if data != 0 {
			b.PrependUOffsetTSlot(bufferData, data, 0)
		}
		bufs[i] = b.EndObject()
	}
	buffersVec := e.tables(bufs)

	tensors := make([]flatbuffers.UOffsetT, len(g.tensors))
	for i := len(g.tensors) - 1; i >= 0; i-- {
		t := &g.tensors[i]
		var quant flatbuffers.UOffsetT
		if t.quant != nil {
			b.StartVector(8, len(t.quant.ZeroPoint), 8)
			for j := len(t.quant.ZeroPoint) - 1; j >= 0; j-- {
				b.PrependInt64(t.quant.ZeroPoint[j])
			}
			zp := b.EndVector(len(t.quant.ZeroPoint))
			b.StartVector(4, len(t.quant.Scale), 4)
			for j := len(t.quant.Scale) - 1; j >= 0; j-- {
				b.PrependFloat32(t.quant.Scale[j])
			}
			sc := b.EndVector(len(t.quant.Scale))
			b.StartObject(quantNumFields)
			b.PrependInt32Slot(quantQuantizedDimension, int32(t.quant.Axis), 0)
			b.PrependUOffsetTSlot(quantZeroPoint, zp, 0)
			b.PrependUOffsetTSlot(quantScale, sc, 0)
			quant = b.EndObject()
		}
		name := b.CreateString(t.name)
		shape := e.ints(t.shape)
		b.StartObject(tensorNumFields)
		if quant != 0 {
			b.PrependUOffsetTSlot(tensorQuantization, quant, 0)
		}
		b.PrependUOffsetTSlot(tensorName, name, 0)
		b.PrependUint32Slot(tensorBuffer, uint32(t.buffer), 0)
		b.PrependUOffsetTSlot(tensorShape, shape, 0)
		b.PrependInt8Slot(tensorType, int8(t.typ), 0)
		tensors[i] = b.EndObject()
	}
	tensorsVec := e.tables(tensors)

	ops := make([]flatbuffers.UOffsetT, len(g.ops))
	for i := len(g.ops) - 1; i >= 0; i-- {
		op := &g.ops[i]
		var opts flatbuffers.UOffsetT
		if op.options.kind != optNone {
			opts = op.options.write(e)
		}
		outs := e.tensorIndices(op.outputs)
		ins := e.tensorIndices(op.inputs)
		b.StartObject(operatorNumFields)
		if opts != 0 {
			b.PrependUOffsetTSlot(operatorBuiltinOptions, opts, 0)
		}
		b.PrependUOffsetTSlot(operatorOutputs, outs, 0)
		b.PrependUOffsetTSlot(operatorInputs, ins, 0)
		b.PrependUint32Slot(operatorOpcodeIndex, opIndex[i], 0)
		if opts != 0 {
			b.PrependByteSlot(operatorBuiltinOptionsType, op.options.kind, 0)
		}
		ops[i] = b.EndObject()
	}
	opsVec := e.tables(ops)

	sgName := b.CreateString("main")
	outsVec := e.tensorIndices(g.outputs)
	insVec := e.tensorIndices(g.inputs)
	b.StartObject(subgraphNumFields)
	b.PrependUOffsetTSlot(subgraphName, sgName, 0)
	b.PrependUOffsetTSlot(subgraphOperators, opsVec, 0)
	b.PrependUOffsetTSlot(subgraphOutputs, outsVec, 0)
	b.PrependUOffsetTSlot(subgraphInputs, insVec, 0)
	b.PrependUOffsetTSlot(subgraphTensors, tensorsVec, 0)
	subgraph := b.EndObject()
	subgraphsVec := e.tables([]flatbuffers.UOffsetT{subgraph})

	opcodes := make([]flatbuffers.UOffsetT, len(codes))
	for i := len(codes) - 1; i >= 0; i-- {
		dep := codes[i].code
		if dep > opPlaceholderForGreaterOpCodes {
			dep = opPlaceholderForGreaterOpCodes
		}
		b.StartObject(opcodeNumFields)
		// Written even when zero (ADD): readers take max(builtin_code,
		// deprecated_builtin_code), and old ones only know the byte.
		b.PrependInt32(codes[i].code)
		b.Slot(opcodeBuiltinCode)
		b.PrependInt32Slot(opcodeVersion, codes[i].version, 1)
		b.PrependInt8(int8(dep))
		b.Slot(opcodeDeprecatedBuiltinCode)
		opcodes[i] = b.EndObject()
	}
	opcodesVec := e.tables(opcodes)

	desc := b.CreateString(g.description)
	b.StartObject(modelNumFields)
	b.PrependUOffsetTSlot(modelBuffers, buffersVec, 0)
	b.PrependUOffsetTSlot(modelDescription, desc, 0)
	b.PrependUOffsetTSlot(modelSubgraphs, subgraphsVec, 0)
	b.PrependUOffsetTSlot(modelOperatorCodes, opcodesVec, 0)
	b.PrependUint32Slot(modelVersion, schemaVersion, 0)
	model := b.EndObject()
	b.FinishWithFileIdentifier(model, []byte(fileIdentifier))
	return append([]byte(nil), b.FinishedBytes()...), nil
}
