package tflite

import (
	"fmt"
	"unsafe"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Field slots from tensorflow/compiler/mlir/lite/schema/schema.fbs. A union
// takes two slots: its type byte, then the table.
const (
	modelVersion, modelOpcodes, modelSubgraphs, modelDescription, modelBuffers = 0, 1, 2, 3, 4

	opcodeDeprecated, opcodeCustom, opcodeVersion, opcodeBuiltin = 0, 1, 2, 3

	sgTensors, sgInputs, sgOutputs, sgOperators, sgName = 0, 1, 2, 3, 4

	tensorShape, tensorType, tensorBuffer, tensorName, tensorQuant, tensorIsVariable, tensorSparsity = 0, 1, 2, 3, 4, 5, 6

	quantScale, quantZeroPoint, quantDetailsType, quantDim = 2, 3, 4, 6

	opOpcode, opInputs, opOutputs, opOptionsType, opOptions = 0, 1, 2, 3, 4

	bufData, bufOffset, bufSize = 0, 1, 2

	// placeholderForGreaterOpCodes marks deprecated_builtin_code values that
	// only say "look at builtin_code".
	placeholderForGreaterOpCodes = 127
)

// maxRank bounds tensor ranks; TFLite kernels handle at most 6 dimensions.
const maxRank = 8

// tensor is one tensor of the main subgraph.
type tensor struct {
	name  string
	dtype runtime.DType
	shape []int
	// size is the byte size of shape × dtype.
	size  int
	quant *runtime.Quantization
	// data holds the constant contents, nil for tensors computed at run time.
	data     []byte
	variable bool
}

// numElements is the element count of the tensor.
func (t *tensor) numElements() int { return runtime.NumElements(t.shape) }

// operator is one node of the main subgraph.
type operator struct {
	code    int32
	custom  string
	version int32
	inputs  []int // -1 marks an absent optional input
	outputs []int
	opts    options
	// index is the operator's position in the file, kept for messages when
	// the engine removes operators (see foldPads).
	index int
	// foldedPad is [top, bottom, left, right] padding taken over from a
	// PAD operator that fed this convolution.
	foldedPad *[4]int
}

// graph is the parsed main subgraph.
type graph struct {
	tensors []tensor
	ops     []operator
	inputs  []int
	outputs []int
	// opNames lists each distinct operator of the model, for error messages.
	opNames []string
}

var tensorTypes = map[uint8]runtime.DType{
	0: runtime.Float32, 1: runtime.Float16, 2: runtime.Int32, 3: runtime.Uint8, 4: runtime.Int64,
	6: runtime.Bool, 7: runtime.Int16, 9: runtime.Int8, 10: runtime.Float64, 12: runtime.Uint64,
	15: runtime.Uint32, 16: runtime.Uint16,
}

var tensorTypeNames = map[uint8]string{
	5: "STRING", 8: "COMPLEX64", 11: "COMPLEX128", 13: "RESOURCE", 14: "VARIANT", 17: "INT4",
	18: "BFLOAT16", 19: "INT2", 20: "UINT4", 21: "FLOAT8_E4M3FN", 22: "FLOAT8_E5M2",
}

// parse reads and checks a TFLite flatbuffer. Only the first subgraph runs;
// control-flow ops that call others are not supported.
func parse(b []byte) (g *graph, err error) {
	// The reader checks every offset; this is the last line of defence
	// should a check be missing, so a bad file can never take the agent down.
	defer func() {
		if r := recover(); r != nil {
			g, err = nil, fmt.Errorf("%w: malformed flatbuffer (%v)", errBadModel, r)
		}
	}()
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: file is %d bytes, too short for a TFLite model", errBadModel, len(b))
	}
	if string(b[4:8]) != "TFL3" {
		return nil, fmt.Errorf("%w: file identifier is %q, want \"TFL3\" (not a TFLite model)", errBadModel, b[4:8])
	}
	f := &fbuf{b: b}
	root, err := f.tableAt(int(le32(b)), "model")
	if err != nil {
		return nil, err
	}
	if v, err := f.i32(&root, modelVersion, 0); err != nil {
		return nil, err
	} else if v != 3 {
		return nil, fmt.Errorf("%w: schema version %d, the engine reads version 3", errUnsupported, v)
	}
	codes, err := f.tables(&root, modelOpcodes, "operator_codes")
	if err != nil {
		return nil, err
	}
	subgraphs, err := f.tables(&root, modelSubgraphs, "subgraphs")
	if err != nil {
		return nil, err
	}
	if len(subgraphs) == 0 {
		return nil, fmt.Errorf("%w: model has no subgraph", errBadModel)
	}
	buffers, err := f.tables(&root, modelBuffers, "buffers")
	if err != nil {
		return nil, err
	}
	sg := &subgraphs[0]
	g = &graph{}

	type opcode struct {
		code    int32
		custom  string
		version int32
	}
	ocs := make([]opcode, len(codes))
	for i := range codes {
		c := &codes[i]
		dep, err := f.u8(c, opcodeDeprecated, 0)
		if err != nil {
			return nil, err
		}
		bc, err := f.i32(c, opcodeBuiltin, 0)
		if err != nil {
			return nil, err
		}
		// Old files set only the byte field; new ones set builtin_code and
		// leave 127 in the byte. The real code is the larger of the two
		// (schema_utils.cc GetBuiltinCode).
		code := max(bc, int32(int8(dep)))
		ocs[i].code = code
		if ocs[i].custom, err = f.str(c, opcodeCustom, fmt.Sprintf("operator_codes[%d].custom_code", i)); err != nil {
			return nil, err
		}
		if ocs[i].version, err = f.i32(c, opcodeVersion, 1); err != nil {
			return nil, err
		}
	}

	tts, err := f.tables(sg, sgTensors, "subgraph 0 tensors")
	if err != nil {
		return nil, err
	}
	g.tensors = make([]tensor, len(tts))
	for i := range tts {
		if err := f.readTensor(&tts[i], buffers, &g.tensors[i], i); err != nil {
			return nil, err
		}
	}
	checkIdx := func(idx []int32, what string, optional bool) ([]int, error) {
		out := make([]int, len(idx))
		for j, v := range idx {
			if v == -1 && optional {
				out[j] = -1
				continue
			}
			if v < 0 || int(v) >= len(g.tensors) {
				return nil, fmt.Errorf("%w: %s[%d] is tensor %d, the subgraph has %d tensors", errBadModel, what, j, v, len(g.tensors))
			}
			out[j] = int(v)
		}
		return out, nil
	}
	in, err := f.ints(sg, sgInputs, "subgraph 0 inputs")
	if err != nil {
		return nil, err
	}
	if g.inputs, err = checkIdx(in, "subgraph inputs", false); err != nil {
		return nil, err
	}
	for _, idx := range g.inputs {
		// Run writes inputs into their buffers; an input that also has
		// data in the file gets a buffer of its own so the model's
		// constants stay read-only.
		g.tensors[idx].data = nil
	}
	out, err := f.ints(sg, sgOutputs, "subgraph 0 outputs")
	if err != nil {
		return nil, err
	}
	if g.outputs, err = checkIdx(out, "subgraph outputs", false); err != nil {
		return nil, err
	}

	ots, err := f.tables(sg, sgOperators, "subgraph 0 operators")
	if err != nil {
		return nil, err
	}
	g.ops = make([]operator, len(ots))
	seen := map[string]bool{}
	for i := range ots {
		t := &ots[i]
		op := &g.ops[i]
		oi, err := f.i32(t, opOpcode, 0)
		if err != nil {
			return nil, err
		}
		if oi < 0 || int(oi) >= len(ocs) {
			return nil, fmt.Errorf("%w: operator %d uses opcode_index %d, the model has %d operator codes", errBadModel, i, uint32(oi), len(ocs))
		}
		op.code, op.custom, op.version = ocs[oi].code, ocs[oi].custom, ocs[oi].version
		op.index = i
		what := fmt.Sprintf("operator %d (%s)", i, opName(op.code, op.custom))
		ins, err := f.ints(t, opInputs, what+" inputs")
		if err != nil {
			return nil, err
		}
		if op.inputs, err = checkIdx(ins, what+" inputs", true); err != nil {
			return nil, err
		}
		outs, err := f.ints(t, opOutputs, what+" outputs")
		if err != nil {
			return nil, err
		}
		if op.outputs, err = checkIdx(outs, what+" outputs", false); err != nil {
			return nil, err
		}
		op.opts = options{f: f, what: what + " options"}
		if ot, ok, err := f.subtable(t, opOptions, what+" options"); err != nil {
			return nil, err
		} else if ok {
			op.opts.t, op.opts.ok = ot, true
		}
		if n := opName(op.code, op.custom); !seen[n] {
			seen[n] = true
			g.opNames = append(g.opNames, n)
		}
	}
	return g, nil
}

func (f *fbuf) readTensor(t *table, buffers []table, dst *tensor, i int) error {
	name, err := f.str(t, tensorName, fmt.Sprintf("tensor %d name", i))
	if err != nil {
		return err
	}
	dst.name = name
	what := fmt.Sprintf("tensor %d (%q)", i, name)
	shape, err := f.ints(t, tensorShape, what+" shape")
	if err != nil {
		return err
	}
	if len(shape) > maxRank {
		return fmt.Errorf("%w: %s has rank %d, at most %d is supported", errBadModel, what, len(shape), maxRank)
	}
	dst.shape = make([]int, len(shape))
	for j, d := range shape {
		if d < 0 {
			return fmt.Errorf("%w: %s has shape %v with a negative dimension", errBadModel, what, shape)
		}
		dst.shape[j] = int(d)
	}
	tt, err := f.u8(t, tensorType, 0)
	if err != nil {
		return err
	}
	dt, ok := tensorTypes[tt]
	if !ok {
		n := tensorTypeNames[tt]
		if n == "" {
			return fmt.Errorf("%w: %s has unknown tensor type %d", errBadModel, what, tt)
		}
		// Accept the file; an operator using this tensor fails at prepare.
		dt = runtime.Invalid
	}
	dst.dtype = dt
	if dt != runtime.Invalid {
		dst.size = runtime.ByteSize(dt, dst.shape)
		if dst.size < 0 {
			return fmt.Errorf("%w: %s shape %v overflows", errBadModel, what, dst.shape)
		}
	}
	v, err := f.u8(t, tensorIsVariable, 0)
	if err != nil {
		return err
	}
	dst.variable = v != 0
	if _, ok, err := f.subtable(t, tensorSparsity, what+" sparsity"); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("%w: %s is sparse, which the engine does not support", errUnsupported, what)
	}
	if q, ok, err := f.subtable(t, tensorQuant, what+" quantization"); err != nil {
		return err
	} else if ok {
		if dst.quant, err = f.readQuant(&q, dst, what); err != nil {
			return err
		}
	}
	bi, err := f.i32(t, tensorBuffer, 0)
	if err != nil {
		return err
	}
	if bi != 0 {
		if bi < 0 || int(bi) >= len(buffers) {
			return fmt.Errorf("%w: %s uses buffer %d, the model has %d buffers", errBadModel, what, uint32(bi), len(buffers))
		}
		b := &buffers[bi]
		off, err := f.u64(b, bufOffset, 0)
		if err != nil {
			return err
		}
		size, err := f.u64(b, bufSize, 0)
		if err != nil {
			return err
		}
		if off > 1 || size > 0 {
			return fmt.Errorf("%w: %s: %w (buffer %d, offset %d, size %d)", errUnsupported, what, ErrExternalBuffer, bi, off, size)
		}
		data, err := f.bytes(b, bufData, fmt.Sprintf("buffer %d", bi))
		if err != nil {
			return err
		}
		if len(data) > 0 {
			if dt == runtime.Invalid {
				return fmt.Errorf("%w: %s holds constant data of an unsupported type", errUnsupported, what)
			}
			if len(data) != dst.size {
				return fmt.Errorf("%w: %s has shape %v of %s (%d bytes) but buffer %d holds %d bytes", errBadModel, what, dst.shape, dt, dst.size, bi, len(data))
			}
			dst.data = aligned(data)
		}
	}
	return nil
}

func (f *fbuf) readQuant(q *table, t *tensor, what string) (*runtime.Quantization, error) {
	if dt, err := f.u8(q, quantDetailsType, 0); err != nil {
		return nil, err
	} else if dt != 0 {
		return nil, fmt.Errorf("%w: %s uses custom quantization details (type %d)", errUnsupported, what, dt)
	}
	start, n, err := f.vector(q, quantScale, 4, what+" scale")
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	zs, zn, err := f.vector(q, quantZeroPoint, 8, what+" zero_point")
	if err != nil {
		return nil, err
	}
	if zn != n && zn != 0 {
		return nil, fmt.Errorf("%w: %s has %d scales but %d zero points", errBadModel, what, n, zn)
	}
	axis, err := f.i32(q, quantDim, 0)
	if err != nil {
		return nil, err
	}
	qp := &runtime.Quantization{Scale: make([]float32, n), ZeroPoint: make([]int64, n)}
	for i := range n {
		qp.Scale[i] = float32frombits(le32(f.b[start+4*i:]))
		if zn > 0 {
			qp.ZeroPoint[i] = int64(le64(f.b[zs+8*i:]))
		}
	}
	if len(t.shape) == 1 {
		// A rank-1 tensor has one axis whatever the file says; real files
		// carry quantized_dimension 3 on biases (person_detect), and
		// TFLite accepts them.
		axis = 0
	}
	if n > 1 {
		// Per-channel: the axis must exist and have one scale per index.
		if axis < 0 || int(axis) >= len(t.shape) || t.shape[axis] != n {
			return nil, fmt.Errorf("%w: %s has %d scales along quantized_dimension %d of shape %v", errBadModel, what, n, axis, t.shape)
		}
		qp.Axis = int(axis)
	}
	return qp, nil
}

// aligned returns b, or a copy of it when b does not start on an 8-byte
// boundary, so kernels can view constant data as []int32 or []float32.
func aligned(b []byte) []byte {
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 == 0 {
		return b
	}
	c := make([]byte, len(b), len(b)+8)
	copy(c, b)
	if uintptr(unsafe.Pointer(unsafe.SliceData(c)))%8 == 0 {
		return c
	}
	w := make([]uint64, (len(b)+7)/8)
	c = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*8)[:len(b)]
	copy(c, b)
	return c
}
