package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// SOFTMAX. In LiteRT arithmetic quantized softmax follows TFLite's default
// (optimized) kernel, the one LiteRT runs: a float32 table of
// exp(-scale·beta·d) for every distance d from the row maximum, a float32
// sum, and a rounded quantized probability (optimized_ops::Softmax with
// PopulateSoftmaxLookupTable). In the reference arithmetics it is
// reference_ops::Softmax, as TFLite Micro runs it: input differences scaled
// to Q5.26, gemmlowp's fixed-point exp, a Q12.19 sum and its fixed-point
// reciprocal; the output assumes scale 1/256 (zero point -128 for int8).

func init() { registerOp(opSoftmax, prepareSoftmax) }

const softmaxBeta = 0

type softmax struct {
	inIdx, outIdx int
	rows, depth   int
	dtype         runtime.DType
	beta          float32
	table         [256]float32
	outScale      float32
	outZP         int32
	// Reference (fixed-point) kernel.
	ref     bool
	inMult  int32
	inShift int
	diffMin int32
}

func prepareSoftmax(c *prepCtx) (kernel, error) {
	if err := c.counts(1, 1, 1); err != nil {
		return nil, err
	}
	in, inIdx, err := c.input(0)
	if err != nil {
		return nil, err
	}
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := sameType(q8AndFloat, in, out); err != nil {
		return nil, err
	}
	if err := checkShape(out, in.shape); err != nil {
		return nil, err
	}
	if len(in.shape) == 0 {
		return nil, badf("input %q is a scalar", in.name)
	}
	o := c.opts()
	k := &softmax{inIdx: inIdx, outIdx: outIdx, dtype: in.dtype, beta: o.f32(softmaxBeta, 1)}
	k.depth = in.shape[len(in.shape)-1]
	if k.depth > 0 {
		k.rows = in.numElements() / k.depth
	}
	if in.dtype != runtime.Float32 {
		is, _, err := perTensor(in)
		if err != nil {
			return nil, err
		}
		if k.outScale, k.outZP, err = perTensor(out); err != nil {
			return nil, err
		}
		scale := -is * k.beta
		for v := range 256 {
			k.table[255-v] = float32(math.Exp(float64(scale * float32(v))))
		}
		if c.arith != arithLiteRT {
			k.ref = true
			// PreprocessSoftmaxScaling with 5 integer bits for the scaled
			// differences, and CalculateInputRadius.
			const diffIntegerBits = 5
			m := min(float64(k.beta)*float64(is)*float64(int64(1)<<(31-diffIntegerBits)), float64(int64(1)<<31-1))
			if !(m > 1) {
				return nil, unsupportedf("softmax with beta·input_scale %g: the reference kernel needs a multiplier above 1", float64(k.beta)*float64(is))
			}
			var shift int
			k.inMult, shift = quantizeMultiplier(m, false)
			if shift < 0 || shift > 30 {
				return nil, unsupportedf("softmax input scale %g out of range", is)
			}
			k.inShift = shift
			radius := math.Floor(float64(int64(1)<<diffIntegerBits-1) * float64(int64(1)<<(31-diffIntegerBits)) / float64(int64(1)<<shift))
			k.diffMin = -int32(radius)
		}
	}
	return k, nil
}

func (k *softmax) eval(bufs [][]byte) error {
	switch {
	case k.ref && k.dtype == runtime.Int8:
		softmaxRef(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]), -128, 127)
		return nil
	case k.ref:
		softmaxRef(k, bufs[k.inIdx], bufs[k.outIdx], 0, 255)
		return nil
	}
	switch k.dtype {
	case runtime.Int8:
		softmaxQ(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]), -128, 127, false)
	case runtime.Uint8:
		softmaxQ(k, bufs[k.inIdx], bufs[k.outIdx], 0, 255, true)
	default:
		softmaxF(k, asF32(bufs[k.inIdx]), asF32(bufs[k.outIdx]))
	}
	return nil
}

func softmaxQ[T int8 | uint8](k *softmax, in, out []T, qmin, qmax int32, u8 bool) {
	for r := range k.rows {
		x := in[r*k.depth : (r+1)*k.depth]
		y := out[r*k.depth : (r+1)*k.depth]
		mx := int32(x[0])
		for _, v := range x {
			mx = max(mx, int32(v))
		}
		// table[255-(mx-v)] = exp(-scale·beta·(mx-v)).
		base := 255 - mx
		var sum float32
		for _, v := range x {
			sum += k.table[base+int32(v)]
		}
		inv := 1 / (sum * k.outScale)
		for j, v := range x {
			p := k.table[base+int32(v)] * inv
			var q int32
			if u8 {
				// TFLite truncates p+0.5 for uint8 off aarch64, ignoring the
				// zero point (0 for uint8 softmax outputs).
				q = int32(p + 0.5)
			} else {
				q = int32(roundf(p)) + k.outZP
			}
			y[j] = T(min(max(q, qmin), qmax))
		}
	}
}

func softmaxF(k *softmax, in, out []float32) {
	for r := range k.rows {
		x := in[r*k.depth : (r+1)*k.depth]
		y := out[r*k.depth : (r+1)*k.depth]
		mx := x[0]
		for _, v := range x {
			mx = max(mx, v)
		}
		var sum float32
		for j, v := range x {
			e := float32(math.Exp(float64((v - mx) * k.beta)))
			y[j] = e
			sum += e
		}
		for j := range y {
			y[j] /= sum
		}
	}
}

// softmaxRef is reference_ops::Softmax for 8-bit tensors.
func softmaxRef[T int8 | uint8](k *softmax, in, out []T, qmin, qmax int32) {
	for r := range k.rows {
		x := in[r*k.depth : (r+1)*k.depth]
		y := out[r*k.depth : (r+1)*k.depth]
		mx := int32(x[0])
		for _, v := range x {
			mx = max(mx, int32(v))
		}
		var sum int32 // Q12.19
		for _, v := range x {
			if d := int32(v) - mx; d >= k.diffMin {
				e := expOnNegativeValues(srdhm(d<<k.inShift, k.inMult))
				sum += rdbpot(e, 12)
			}
		}
		scale, over := reciprocal(sum, 12)
		for j, v := range x {
			d := int32(v) - mx
			if d < k.diffMin {
				y[j] = T(qmin)
				continue
			}
			e := expOnNegativeValues(srdhm(d<<k.inShift, k.inMult))
			o := rdbpot(srdhm(scale, e), over+31-8) + qmin
			y[j] = T(min(max(o, qmin), qmax))
		}
	}
}
