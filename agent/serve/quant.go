package serve

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// prepareInputs checks inputs, in model order, against v's inputs and
// quantizes float32 ones for quantized inputs when asked. The error names
// the input and what the model expects.
func prepareInputs(v *version, inputs []runtime.Tensor, quantize bool) ([]runtime.Tensor, error) {
	if len(inputs) != len(v.inputs) {
		return nil, fmt.Errorf("%w: %w: model %s@%s takes %d inputs, got %d", ErrBadInput, ErrInputName, v.model, v.name, len(v.inputs), len(inputs))
	}
	out := inputs
	for i, info := range v.inputs {
		t := inputs[i]
		if quantize && t.DType == runtime.Float32 && info.DType != runtime.Float32 {
			if err := checkShape(info, t); err != nil {
				return nil, err
			}
			q, err := quantizeTensor(info, t)
			if err != nil {
				return nil, err
			}
			if &out[0] == &inputs[0] {
				out = append([]runtime.Tensor(nil), inputs...)
			}
			out[i], t = q, q
		}
		if err := checkInput(info, t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkRequest checks inputs, in model order, against m without changing
// them; float32 inputs for quantized inputs pass when quantize is set.
func checkRequest(m ModelInfo, inputs []runtime.Tensor, quantize bool) error {
	if len(inputs) != len(m.Inputs) {
		return fmt.Errorf("%w: %w: model %s@%s takes %d inputs, got %d", ErrBadInput, ErrInputName, m.Name, m.Version, len(m.Inputs), len(inputs))
	}
	for i, info := range m.Inputs {
		t := inputs[i]
		if quantize && t.DType == runtime.Float32 && info.DType != runtime.Float32 {
			if _, _, ok := intRange(info.DType); !ok || info.Quant == nil || len(info.Quant.Scale) == 0 {
				return fmt.Errorf("%w: %w: input %q is %s without quantization parameters", ErrBadInput, ErrQuantize, info.Name, info.DType)
			}
			if err := checkShape(info, t); err != nil {
				return err
			}
			if want := runtime.ByteSize(t.DType, t.Shape); want < 0 || len(t.Data) != want {
				return fmt.Errorf("%w: %w: input %q has %d bytes, shape %v of float32 needs %d", ErrBadInput, ErrInputSize, info.Name, len(t.Data), t.Shape, want)
			}
			continue
		}
		if err := checkInput(info, t); err != nil {
			return err
		}
	}
	return nil
}

// checkInput is runtime.CheckInput with errors that say which kind of
// mismatch it was.
func checkInput(info runtime.TensorInfo, t runtime.Tensor) error {
	if t.DType != info.DType {
		hint := ""
		if info.Quant != nil && t.DType == runtime.Float32 {
			hint = ` (send "quantize": true to have float32 quantized with the model's parameters)`
		}
		return fmt.Errorf("%w: %w: input %q is %s, model expects %s%s", ErrBadInput, ErrInputDType, info.Name, t.DType, info.DType, hint)
	}
	if err := checkShape(info, t); err != nil {
		return err
	}
	if want := runtime.ByteSize(t.DType, t.Shape); want < 0 || len(t.Data) != want {
		return fmt.Errorf("%w: %w: input %q has %d bytes, shape %v of %s needs %d", ErrBadInput, ErrInputSize, info.Name, len(t.Data), t.Shape, t.DType, want)
	}
	return nil
}

func checkShape(info runtime.TensorInfo, t runtime.Tensor) error {
	bad := len(t.Shape) != len(info.Shape)
	for i := 0; !bad && i < len(info.Shape); i++ {
		bad = t.Shape[i] < 0 || (info.Shape[i] >= 0 && t.Shape[i] != info.Shape[i])
	}
	if bad {
		return fmt.Errorf("%w: %w: input %q has shape %v, model expects %v (-1: any size)", ErrBadInput, ErrInputShape, info.Name, t.Shape, info.Shape)
	}
	return nil
}

// quantizeTensor maps float32 t to info's integer dtype:
// q = clamp(round(x/scale) + zero_point), rounding half away from zero as
// TFLite's reference quantize does.
func quantizeTensor(info runtime.TensorInfo, t runtime.Tensor) (runtime.Tensor, error) {
	q := info.Quant
	lo, hi, ok := intRange(info.DType)
	if q == nil || len(q.Scale) == 0 || !ok {
		return t, fmt.Errorf("%w: %w: input %q is %s without quantization parameters", ErrBadInput, ErrQuantize, info.Name, info.DType)
	}
	n := runtime.NumElements(t.Shape)
	if n < 0 || len(t.Data) != 4*n {
		return t, fmt.Errorf("%w: %w: input %q has %d bytes, shape %v of float32 needs %d", ErrBadInput, ErrInputSize, info.Name, len(t.Data), t.Shape, 4*n)
	}
	ch, err := channelOf(info.Name, q, t.Shape)
	if err != nil {
		return t, err
	}
	size := info.DType.Size()
	out := runtime.Tensor{DType: info.DType, Shape: t.Shape, Data: make([]byte, n*size)}
	for i := range n {
		c := ch(i)
		x := float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		if math.IsNaN(x) {
			return t, fmt.Errorf("%w: %w: input %q element %d is NaN", ErrBadInput, ErrQuantize, info.Name, i)
		}
		v := math.Round(x/float64(q.Scale[c])) + float64(zeroPoint(q, c))
		v = math.Max(float64(lo), math.Min(float64(hi), v))
		putInt(out.Data[i*size:], size, int64(v))
	}
	return out, nil
}

// dequantizeOutputs turns quantized outputs into float32:
// x = (q - zero_point) * scale. Others pass through.
func dequantizeOutputs(outs []runtime.Tensor, infos []runtime.TensorInfo) ([]runtime.Tensor, []runtime.TensorInfo) {
	rOuts := make([]runtime.Tensor, len(outs))
	rInfos := make([]runtime.TensorInfo, len(infos))
	copy(rOuts, outs)
	copy(rInfos, infos)
	for i, info := range infos {
		if i >= len(outs) {
			break
		}
		t := outs[i]
		q := info.Quant
		size := t.DType.Size()
		if _, _, ok := intRange(t.DType); !ok || q == nil || len(q.Scale) == 0 {
			continue
		}
		n := len(t.Data) / size
		ch, err := channelOf(info.Name, q, t.Shape)
		if err != nil {
			continue
		}
		data := make([]byte, 4*n)
		for j := range n {
			c := ch(j)
			x := float32(float64(getInt(t.Data[j*size:], size)-zeroPoint(q, c)) * float64(q.Scale[c]))
			binary.LittleEndian.PutUint32(data[4*j:], math.Float32bits(x))
		}
		rOuts[i] = runtime.Tensor{DType: runtime.Float32, Shape: t.Shape, Data: data}
		rInfos[i].DType, rInfos[i].Quant = runtime.Float32, nil
	}
	return rOuts, rInfos
}

// channelOf returns, for an element index, the index of its scale and zero
// point: always 0 per-tensor, the coordinate along Axis per-channel.
func channelOf(name string, q *runtime.Quantization, shape []int) (func(int) int, error) {
	if len(q.Scale) == 1 {
		return func(int) int { return 0 }, nil
	}
	if q.Axis < 0 || q.Axis >= len(shape) || shape[q.Axis] != len(q.Scale) {
		return nil, fmt.Errorf("%w: %w: tensor %q has %d scales along axis %d of shape %v", ErrBadInput, ErrQuantize, name, len(q.Scale), q.Axis, shape)
	}
	stride := 1
	for _, d := range shape[q.Axis+1:] {
		stride *= d
	}
	dim := shape[q.Axis]
	return func(i int) int { return (i / stride) % dim }, nil
}

func zeroPoint(q *runtime.Quantization, c int) int64 {
	switch {
	case len(q.ZeroPoint) == 0:
		return 0
	case len(q.ZeroPoint) == 1:
		return q.ZeroPoint[0]
	default:
		return q.ZeroPoint[c]
	}
}

func intRange(dt runtime.DType) (lo, hi int64, ok bool) {
	switch dt {
	case runtime.Int8:
		return math.MinInt8, math.MaxInt8, true
	case runtime.Uint8:
		return 0, math.MaxUint8, true
	case runtime.Int16:
		return math.MinInt16, math.MaxInt16, true
	case runtime.Uint16:
		return 0, math.MaxUint16, true
	case runtime.Int32:
		return math.MinInt32, math.MaxInt32, true
	}
	return 0, 0, false
}

func putInt(b []byte, size int, v int64) {
	switch size {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(v))
	default:
		binary.LittleEndian.PutUint32(b, uint32(v))
	}
}

func getInt(b []byte, size int) int64 {
	switch size {
	case 1:
		return int64(int8(b[0]))
	case 2:
		return int64(int16(binary.LittleEndian.Uint16(b)))
	default:
		return int64(int32(binary.LittleEndian.Uint32(b)))
	}
}
