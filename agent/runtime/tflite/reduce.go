package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Reductions over constant axes: MEAN, SUM, REDUCE_MAX, REDUCE_MIN.
// Quantized MEAN sums values minus the input zero point and rescales to
// the output (reference: integer_ops/mean.h, rounding half away from zero;
// LiteRT: XNNPACK's float32 scaling, rounding half to even).

func init() {
	for _, code := range []int32{opMean, opSum, opReduceMax, opReduceMin} {
		registerOp(code, prepareReduce)
	}
}

const reduceKeepDims = 0

type reduce struct {
	code     int32
	in, out  int
	dtype    runtime.DType
	inShape  []int
	outIndex []int // per input dimension, the output stride (0 if reduced)
	count    int   // input elements per output element
	accBuf   int
	za, zo   int32
	rq       requant
	litert   bool
	fscale   float32
	lo, hi   int32
}

func prepareReduce(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	in, ii, err := c.input(0)
	if err != nil {
		return nil, err
	}
	at, _, err := c.input(1)
	if err != nil {
		return nil, err
	}
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	axes, err := constInts(at)
	if err != nil {
		return nil, err
	}
	keep := c.opts().bool(reduceKeepDims, false)
	if err := c.opts().err(); err != nil {
		return nil, err
	}
	if err := sameType([]runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int32}, in, out); err != nil {
		return nil, err
	}
	r := len(in.shape)
	reduced := make([]bool, r)
	for _, a := range axes {
		ax, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		reduced[ax] = true
	}
	var want []int
	k := &reduce{code: c.op.code, in: ii, out: oi, dtype: in.dtype, inShape: in.shape, outIndex: make([]int, r), count: 1}
	for d := range r {
		if reduced[d] {
			k.count *= in.shape[d]
			if keep {
				want = append(want, 1)
			}
		} else {
			want = append(want, in.shape[d])
		}
	}
	if err := checkShape(out, want); err != nil {
		if out.numElements() != runtime.NumElements(want) {
			return nil, err
		}
	}
	acc := 1
	for d := r - 1; d >= 0; d-- {
		if !reduced[d] {
			k.outIndex[d] = acc
			acc *= in.shape[d]
		}
	}
	k.accBuf = c.addScratch(out.numElements() * 8)
	if isQ8(in.dtype) {
		si, zi, err := perTensor(in)
		if err != nil {
			return nil, err
		}
		so, zo, err := perTensor(out)
		if err != nil {
			return nil, err
		}
		k.za, k.zo = zi, zo
		k.lo, k.hi = qlimits(out.dtype)
		switch k.code {
		case opMean, opSum:
			if k.count == 0 {
				return nil, badf("reduces over zero elements")
			}
			if c.arith == arithLiteRT && k.code == opMean {
				k.litert = true
				k.fscale = si / so / float32(k.count)
			}
			k.rq = newRequant(float64(si)/float64(so), c.single)
		default:
			if !sameQuant(in, out) {
				return nil, unsupportedf("quantized %s needs equal input and output quantization", c.name)
			}
		}
	}
	return k, nil
}

func (k *reduce) eval(bufs [][]byte) error {
	switch k.dtype {
	case runtime.Float32:
		reduceRun(k, asF32(bufs[k.in]), asF32(bufs[k.out]), asF32(bufs[k.accBuf]))
	case runtime.Int32:
		reduceRun(k, asI32(bufs[k.in]), asI32(bufs[k.out]), asI32(bufs[k.accBuf]))
	case runtime.Int8:
		reduceQ(k, asI8(bufs[k.in]), asI8(bufs[k.out]), asI32(bufs[k.accBuf]))
	case runtime.Uint8:
		reduceQ(k, bufs[k.in], bufs[k.out], asI32(bufs[k.accBuf]))
	}
	return nil
}

// walk calls f(inputIndex, outputIndex) for every input element.
func (k *reduce) walk(n int, f func(i, o int)) {
	r := len(k.inShape)
	if r == 0 {
		f(0, 0)
		return
	}
	var idx [maxRank]int
	o := 0
	for i := range n {
		f(i, o)
		for d := r - 1; d >= 0; d-- {
			idx[d]++
			o += k.outIndex[d]
			if idx[d] < k.inShape[d] {
				break
			}
			o -= idx[d] * k.outIndex[d]
			idx[d] = 0
		}
	}
}

func reduceRun[T float32 | int32](k *reduce, in, out, acc []T) {
	acc = acc[:len(out)]
	switch k.code {
	case opMean, opSum:
		clear(acc)
	case opReduceMax:
		for i := range acc {
			acc[i] = minOf[T]()
		}
	case opReduceMin:
		for i := range acc {
			acc[i] = maxOf[T]()
		}
	}
	k.walk(len(in), func(i, o int) {
		v := in[i]
		switch k.code {
		case opMean, opSum:
			acc[o] += v
		case opReduceMax:
			acc[o] = max(acc[o], v)
		case opReduceMin:
			acc[o] = min(acc[o], v)
		}
	})
	for i := range out {
		if k.code == opMean && k.count > 0 {
			out[i] = acc[i] / T(k.count)
		} else {
			out[i] = acc[i]
		}
	}
}

func minOf[T float32 | int32]() T {
	var z T
	switch any(z).(type) {
	case float32:
		return T(math.Inf(-1))
	}
	return T(math.MinInt32)
}

func maxOf[T float32 | int32]() T {
	var z T
	switch any(z).(type) {
	case float32:
		return T(math.Inf(1))
	}
	return T(math.MaxInt32)
}

func reduceQ[T int8 | uint8](k *reduce, in, out []T, acc []int32) {
	acc = acc[:len(out)]
	switch k.code {
	case opMean, opSum:
		clear(acc)
	case opReduceMax:
		for i := range acc {
			acc[i] = math.MinInt32
		}
	case opReduceMin:
		for i := range acc {
			acc[i] = math.MaxInt32
		}
	}
	k.walk(len(in), func(i, o int) {
		v := int32(in[i])
		switch k.code {
		case opMean, opSum:
			acc[o] += v - k.za
		case opReduceMax:
			acc[o] = max(acc[o], v)
		case opReduceMin:
			acc[o] = min(acc[o], v)
		}
	})
	n := int32(k.count)
	for i := range out {
		v := acc[i]
		switch {
		case k.litert:
			v = int32(math.RoundToEven(float64(float32(v)*k.fscale))) + k.zo
		case k.code == opMean:
			v = k.rq.apply(v)
			if v > 0 {
				v = (v + n/2) / n
			} else {
				v = (v - n/2) / n
			}
			v += k.zo
		case k.code == opSum:
			v = k.rq.apply(v) + k.zo
		}
		out[i] = T(min(max(v, k.lo), k.hi))
	}
}
