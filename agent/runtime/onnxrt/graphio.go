package onnxrt

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// graphIO reads the names, element types and shapes of a model's graph
// inputs (less those that are initializers, as ONNX Runtime counts them)
// and outputs straight from the ONNX protobuf. onnxruntime_go only offers
// them by building a throwaway session, which parses and optimises the
// model a second time: for silero VAD that doubled the load time.
//
// It reads only what it needs and gives up (errNoGraphIO) on anything it
// cannot describe exactly: a non-tensor value, a tensor without a shape.
// The caller then asks ONNX Runtime instead, so a surprise here costs time,
// never correctness.

// ioDesc is one graph input or output as declared.
type ioDesc struct {
	name string
	elem int32   // ONNX TensorProto.DataType
	dims []int64 // -1 for a symbolic or unknown dimension
}

// Bounds on what a hostile file can make this allocate; real models stay far
// below them.
const (
	maxGraphIO = 4096
	maxRank    = 64
)

// Field numbers from onnx.proto.
const (
	fModelGraph       = 7
	fGraphInitializer = 5
	fGraphInput       = 11
	fGraphOutput      = 12
	fGraphSparseInit  = 15
	fTensorName       = 8
	fSparseValues     = 1
	fValueInfoName    = 1
	fValueInfoType    = 2
	fTypeTensor       = 1
	fTensorTypeElem   = 1
	fTensorTypeShape  = 2
	fShapeDim         = 1
	fDimValue         = 1
	fDimParam         = 2
)

func graphIO(model []byte) (inputs, outputs []ioDesc, err error) {
	var graph []byte
	err = fields(model, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == fModelGraph && typ == protowire.BytesType {
			// Repeated occurrences of a message field merge; a model with
			// two is odd enough to leave to ONNX Runtime.
			if graph != nil {
				return fmt.Errorf("%w: two graph fields", errNoGraphIO)
			}
			graph = v
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if graph == nil {
		return nil, nil, fmt.Errorf("%w: no graph", errNoGraphIO)
	}

	initializers := map[string]bool{}
	var ins []ioDesc
	err = fields(graph, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fGraphInitializer:
			name, err := stringField(v, fTensorName)
			if err != nil {
				return err
			}
			initializers[name] = true
		case fGraphSparseInit:
			var name string
			err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == fSparseValues && typ == protowire.BytesType {
					n, err := stringField(v, fTensorName)
					name = n
					return err
				}
				return nil
			})
			if err != nil {
				return err
			}
			initializers[name] = true
		case fGraphInput, fGraphOutput:
			if len(ins)+len(outputs) >= maxGraphIO {
				return fmt.Errorf("%w: more than %d inputs and outputs", errNoGraphIO, maxGraphIO)
			}
			d, err := valueInfo(v)
			if err != nil {
				return err
			}
			if num == fGraphInput {
				ins = append(ins, d)
			} else {
				outputs = append(outputs, d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, d := range ins {
		if !initializers[d.name] {
			inputs = append(inputs, d)
		}
	}
	return inputs, outputs, nil
}

func valueInfo(b []byte) (ioDesc, error) {
	var d ioDesc
	var typ []byte
	err := fields(b, func(num protowire.Number, wt protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == fValueInfoName && wt == protowire.BytesType:
			d.name = string(v)
		case num == fValueInfoType && wt == protowire.BytesType:
			if typ != nil {
				return fmt.Errorf("%w: %q has two types", errNoGraphIO, d.name)
			}
			typ = v
		}
		return nil
	})
	if err != nil {
		return d, err
	}
	var tensor []byte
	err = fields(typ, func(num protowire.Number, wt protowire.Type, v []byte, _ uint64) error {
		if num == fTypeTensor && wt == protowire.BytesType {
			tensor = v
			return nil
		}
		if wt == protowire.BytesType {
			return fmt.Errorf("%w: %q is not a tensor (type field %d)", errNoGraphIO, d.name, num)
		}
		return nil
	})
	if err != nil {
		return d, err
	}
	if tensor == nil {
		return d, fmt.Errorf("%w: %q is not a tensor", errNoGraphIO, d.name)
	}
	var shape []byte
	hasShape := false
	err = fields(tensor, func(num protowire.Number, wt protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fTensorTypeElem && wt == protowire.VarintType:
			d.elem = int32(x)
		case num == fTensorTypeShape && wt == protowire.BytesType:
			if hasShape {
				return fmt.Errorf("%w: %q has two shapes", errNoGraphIO, d.name)
			}
			shape, hasShape = v, true
		}
		return nil
	})
	if err != nil {
		return d, err
	}
	if !hasShape {
		// Unknown rank: ONNX Runtime may still know it after inference.
		return d, fmt.Errorf("%w: %q has no shape", errNoGraphIO, d.name)
	}
	d.dims = []int64{}
	err = fields(shape, func(num protowire.Number, wt protowire.Type, v []byte, _ uint64) error {
		if num != fShapeDim || wt != protowire.BytesType {
			return nil
		}
		if len(d.dims) >= maxRank {
			return fmt.Errorf("%w: %q has more than %d dimensions", errNoGraphIO, d.name, maxRank)
		}
		dim := int64(-1)
		err := fields(v, func(num protowire.Number, wt protowire.Type, _ []byte, x uint64) error {
			if num == fDimValue && wt == protowire.VarintType && int64(x) >= 0 {
				dim = int64(x)
			}
			return nil
		})
		d.dims = append(d.dims, dim)
		return err
	})
	return d, err
}

// stringField returns the last occurrence of a bytes field, as protobuf
// reads a repeated scalar.
func stringField(b []byte, want protowire.Number) (string, error) {
	var s string
	err := fields(b, func(num protowire.Number, wt protowire.Type, v []byte, _ uint64) error {
		if num == want && wt == protowire.BytesType {
			s = string(v)
		}
		return nil
	})
	return s, err
}

// fields calls f for each field of a protobuf message: v holds the bytes of
// a length-delimited field, x the value of a varint or fixed one.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: bad protobuf tag: %w", errNoGraphIO, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: bad protobuf field %d: %w", errNoGraphIO, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
