package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Element-wise unary operators: activations (LOGISTIC, TANH, RELU, RELU6,
// RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH) and math (EXP, LOG, SQRT, RSQRT,
// ABS, NEG, FLOOR). Float tensors compute directly. 8-bit quantized tensors
// go through a 256-entry table built at prepare. For int8 LOGISTIC and TANH
// in the reference arithmetics the table holds TFLite's fixed-point
// reference results; otherwise it comes from the float function:
// dequantize, apply, round, add the output zero point, clamp, as TFLite's
// LUTPopulate does (rounding half away from zero) or, in LiteRT arithmetic,
// as XNNPACK's table builders do (half to even).

func init() {
	for _, code := range []int32{opLogistic, opTanh, opRelu, opRelu6, opReluN1To1, opLeakyRelu, opHardSwish,
		opExp, opLog, opSqrt, opRsqrt, opAbs, opNeg, opFloor} {
		registerOp(code, prepareUnary)
	}
}

const leakyAlpha = 0

type unary struct {
	in, out int
	dtype   runtime.DType
	f       func(float32) float32
	lut     [256]byte
	i32     bool
	neg     bool // int32 NEG (else ABS)
}

// refActivation builds the int8 table of TFLite's fixed-point reference
// LOGISTIC or TANH (reference_integer_ops::Logistic/Tanh as TFLite Micro
// prepares them), which require the spec's fixed output quantization:
// 1/256 and -128 for LOGISTIC, 1/128 and 0 for TANH. ok is false when the
// output does not have it and the float table applies instead.
func refActivation(lut *[256]byte, code int32, si float32, zi int32, so float32, zo int32) bool {
	logistic := code == opLogistic
	if logistic && (so != 1.0/256 || zo != -128) || !logistic && (so != 1.0/128 || zo != 0) {
		return false
	}
	const inputIntegerBits = 4
	q, shift := math.Frexp(float64(si) * float64(int64(1)<<(31-inputIntegerBits)))
	mult := int32(math.Round(q * (1 << 31)))
	if shift < 0 || shift > 30 || q*(1<<31) >= 1<<31-0.5 {
		return false
	}
	radius := int32(math.Floor(float64(int64(1)<<inputIntegerBits-1) * float64(int64(1)<<(31-inputIntegerBits)) / float64(int64(1)<<shift)))
	rq := requant{mult: mult, shift: shift}
	for b := range 256 {
		in := int32(int8(b)) - zi
		var o int32
		switch {
		case in <= -radius:
			o = -128
		case in >= radius:
			o = 127
		case logistic:
			o = min(max(rdbpot(logisticQ4(rq.apply(in)), 31-8)-128, -128), 127)
		default:
			o = min(max(rdbpot(tanhQ4(rq.apply(in)), 31-7), -128), 127)
		}
		lut[b] = byte(int8(o))
	}
	return true
}

func unaryFunc(code int32, alpha float32) func(float32) float32 {
	switch code {
	case opLogistic:
		return func(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }
	case opTanh:
		return func(x float32) float32 { return float32(math.Tanh(float64(x))) }
	case opRelu:
		return func(x float32) float32 { return max(x, 0) }
	case opRelu6:
		return func(x float32) float32 { return min(max(x, 0), 6) }
	case opReluN1To1:
		return func(x float32) float32 { return min(max(x, -1), 1) }
	case opLeakyRelu:
		return func(x float32) float32 {
			if x < 0 {
				return alpha * x
			}
			return x
		}
	case opHardSwish:
		return func(x float32) float32 { return x * min(max(x+3, 0), 6) / 6 }
	case opExp:
		return func(x float32) float32 { return float32(math.Exp(float64(x))) }
	case opLog:
		return func(x float32) float32 { return float32(math.Log(float64(x))) }
	case opSqrt:
		return func(x float32) float32 { return float32(math.Sqrt(float64(x))) }
	case opRsqrt:
		return func(x float32) float32 { return float32(1 / math.Sqrt(float64(x))) }
	case opAbs:
		return func(x float32) float32 { return float32(math.Abs(float64(x))) }
	case opNeg:
		return func(x float32) float32 { return -x }
	case opFloor:
		return func(x float32) float32 { return float32(math.Floor(float64(x))) }
	}
	return nil
}

func prepareUnary(c *prepCtx) (kernel, error) {
	if err := c.counts(1, 1, 1); err != nil {
		return nil, err
	}
	in, ii, err := c.input(0)
	if err != nil {
		return nil, err
	}
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	allowed := q8AndFloat
	if c.op.code == opAbs || c.op.code == opNeg {
		allowed = []runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int32}
	}
	if err := sameType(allowed, in, out); err != nil {
		return nil, err
	}
	if in.numElements() != out.numElements() {
		return nil, badf("input %q shape %v and output %q shape %v differ", in.name, in.shape, out.name, out.shape)
	}
	var alpha float32
	if c.op.code == opLeakyRelu {
		alpha = c.opts().f32(leakyAlpha, 0)
	}
	k := &unary{in: ii, out: oi, dtype: in.dtype, f: unaryFunc(c.op.code, alpha)}
	switch in.dtype {
	case runtime.Float32:
		return k, nil
	case runtime.Int32:
		k.i32, k.neg = true, c.op.code == opNeg
		return k, nil
	}
	si, zi, err := perTensor(in)
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out)
	if err != nil {
		return nil, err
	}
	if c.arith != arithLiteRT && in.dtype == runtime.Int8 && (c.op.code == opLogistic || c.op.code == opTanh) &&
		refActivation(&k.lut, c.op.code, si, zi, so, zo) {
		return k, nil
	}
	buildLUT(&k.lut, in.dtype, out.dtype, si, zi, so, zo, k.f, c.arith == arithLiteRT)
	return k, nil
}

// buildLUT tabulates f over every 8-bit input value.
func buildLUT(lut *[256]byte, din, dout runtime.DType, si float32, zi int32, so float32, zo int32, f func(float32) float32, even bool) {
	lo, hi := qlimits(dout)
	inv := 1 / so
	for b := range 256 {
		v := int32(b)
		if din == runtime.Int8 {
			v = int32(int8(b))
		}
		x := si * float32(v-zi)
		y := f(x) * inv
		var r float64
		if even {
			r = math.RoundToEven(float64(y))
		} else {
			r = math.Round(float64(y))
		}
		if math.IsNaN(r) {
			r = 0
		}
		q := int64(min(max(r, -1e9), 1e9)) + int64(zo)
		lut[b] = byte(min(max(q, int64(lo)), int64(hi)))
	}
}

func (k *unary) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	switch {
	case k.dtype == runtime.Float32:
		x, y := asF32(in), asF32(out)
		y = y[:len(x)]
		for i, v := range x {
			y[i] = k.f(v)
		}
	case k.i32:
		x, y := asI32(in), asI32(out)
		y = y[:len(x)]
		for i, v := range x {
			if k.neg || v < 0 {
				v = -v
			}
			y[i] = v
		}
	default:
		out = out[:len(in)]
		for i, v := range in {
			out[i] = k.lut[v]
		}
	}
	return nil
}
