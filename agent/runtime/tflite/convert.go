package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Type conversions and PRELU: QUANTIZE (float to 8-bit, or 8-bit
// requantization), DEQUANTIZE, CAST.

func init() {
	registerOp(opQuantize, prepareQuantize)
	registerOp(opDequantize, prepareDequantize)
	registerOp(opCast, prepareCast)
	registerOp(opPrelu, preparePrelu)
}

type quantizeK struct {
	in, out   int
	din, dout runtime.DType
	scale     float32
	zi, zo    int32
	rq        requant
	lo, hi    int32
}

func prepareQuantize(c *prepCtx) (kernel, error) {
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
	if !isQ8(out.dtype) || (in.dtype != runtime.Float32 && !isQ8(in.dtype)) {
		return nil, unsupportedf("QUANTIZE from %s to %s", in.dtype, out.dtype)
	}
	if in.numElements() != out.numElements() {
		return nil, badf("input and output sizes differ")
	}
	so, zo, err := perTensor(out)
	if err != nil {
		return nil, err
	}
	k := &quantizeK{in: ii, out: oi, din: in.dtype, dout: out.dtype, scale: so, zo: zo}
	k.lo, k.hi = qlimits(out.dtype)
	if isQ8(in.dtype) {
		si, zi, err := perTensor(in)
		if err != nil {
			return nil, err
		}
		k.zi = zi
		k.rq = newRequant(float64(si)/float64(so), c.single)
	}
	return k, nil
}

func (k *quantizeK) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	if k.din == runtime.Float32 {
		x := asF32(in)
		out = out[:len(x)]
		for i, v := range x {
			q := int32(roundf(v/k.scale)) + k.zo
			if v != v {
				q = k.zo
			}
			out[i] = byte(min(max(q, k.lo), k.hi))
		}
		return nil
	}
	out = out[:len(in)]
	for i, b := range in {
		v := int32(b)
		if k.din == runtime.Int8 {
			v = int32(int8(b))
		}
		q := k.rq.apply(v-k.zi) + k.zo
		out[i] = byte(min(max(q, k.lo), k.hi))
	}
	return nil
}

type dequantizeK struct {
	in, out int
	din     runtime.DType
	scale   float32
	zp      int32
}

func prepareDequantize(c *prepCtx) (kernel, error) {
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
	if !isQ8(in.dtype) || out.dtype != runtime.Float32 {
		return nil, unsupportedf("DEQUANTIZE from %s to %s", in.dtype, out.dtype)
	}
	if in.numElements() != out.numElements() {
		return nil, badf("input and output sizes differ")
	}
	s, z, err := perTensor(in)
	if err != nil {
		return nil, err
	}
	return &dequantizeK{in: ii, out: oi, din: in.dtype, scale: s, zp: z}, nil
}

func (k *dequantizeK) eval(bufs [][]byte) error {
	in, out := bufs[k.in], asF32(bufs[k.out])
	out = out[:len(in)]
	for i, b := range in {
		v := int32(b)
		if k.din == runtime.Int8 {
			v = int32(int8(b))
		}
		out[i] = float32(v-k.zp) * k.scale
	}
	return nil
}

type castK struct {
	in, out   int
	din, dout runtime.DType
}

var castable = []runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int16, runtime.Int32, runtime.Int64, runtime.Bool}

func prepareCast(c *prepCtx) (kernel, error) {
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
	if err := sameType(castable, in); err != nil {
		return nil, err
	}
	if err := sameType(castable, out); err != nil {
		return nil, err
	}
	if in.numElements() != out.numElements() {
		return nil, badf("input and output sizes differ")
	}
	return &castK{in: ii, out: oi, din: in.dtype, dout: out.dtype}, nil
}

// load reads element i of b as float64 (exact for every castable type
// but int64 beyond 2^53, which CAST to float rounds anyway).
func load(d runtime.DType, b []byte, i int) float64 {
	switch d {
	case runtime.Float32:
		return float64(asF32(b)[i])
	case runtime.Int8:
		return float64(int8(b[i]))
	case runtime.Uint8, runtime.Bool:
		return float64(b[i])
	case runtime.Int16:
		return float64(asI16(b)[i])
	case runtime.Int32:
		return float64(asI32(b)[i])
	case runtime.Int64:
		return float64(asI64(b)[i])
	}
	return 0
}

func store(d runtime.DType, b []byte, i int, v float64) {
	if d != runtime.Float32 && d != runtime.Bool {
		v = math.Trunc(v)
		if v != v {
			v = 0
		}
	}
	switch d {
	case runtime.Float32:
		asF32(b)[i] = float32(v)
	case runtime.Int8:
		b[i] = byte(int8(int64(v)))
	case runtime.Uint8:
		b[i] = byte(int64(v))
	case runtime.Bool:
		if v != 0 {
			b[i] = 1
		} else {
			b[i] = 0
		}
	case runtime.Int16:
		asI16(b)[i] = int16(int64(v))
	case runtime.Int32:
		asI32(b)[i] = int32(int64(v))
	case runtime.Int64:
		asI64(b)[i] = int64(v)
	}
}

func (k *castK) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	n := len(in) / k.din.Size()
	if k.din == runtime.Int64 && k.dout == runtime.Int32 {
		x, y := asI64(in), asI32(out)
		for i := range n {
			y[i] = int32(x[i])
		}
		return nil
	}
	for i := range n {
		store(k.dout, out, i, load(k.din, in, i))
	}
	return nil
}

type preluK struct {
	x, alpha, out int
	bc            broadcast
	dtype         runtime.DType
	zx, za, zo    int32
	rpos, rneg    requant
	lo, hi        int32
}

func preparePrelu(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	x, xi, err := c.input(0)
	if err != nil {
		return nil, err
	}
	a, ai, err := c.input(1)
	if err != nil {
		return nil, err
	}
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := sameType(q8AndFloat, x, a, out); err != nil {
		return nil, err
	}
	k := &preluK{x: xi, alpha: ai, out: oi, dtype: x.dtype}
	if k.bc, err = newBroadcast(x.shape, a.shape); err != nil {
		return nil, err
	}
	if err := checkBroadcastOut(out, k.bc.shape); err != nil {
		return nil, err
	}
	if x.dtype == runtime.Float32 {
		return k, nil
	}
	sx, zx, err := perTensor(x)
	if err != nil {
		return nil, err
	}
	sa, za, err := perTensor(a)
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out)
	if err != nil {
		return nil, err
	}
	k.zx, k.za, k.zo = zx, za, zo
	k.lo, k.hi = qlimits(out.dtype)
	// reference_ops::BroadcastPrelu4DSlow: identity and alpha multipliers.
	k.rpos = newRequant(float64(sx)/float64(so), c.single)
	k.rneg = newRequant(float64(sx)*float64(sa)/float64(so), c.single)
	return k, nil
}

func (k *preluK) eval(bufs [][]byte) error {
	x, a, o := bufs[k.x], bufs[k.alpha], bufs[k.out]
	switch k.dtype {
	case runtime.Float32:
		xf, af, of := asF32(x), asF32(a), asF32(o)
		k.bc.each(func(ix, ia, io, n, dx, da int) {
			for i := range n {
				v := xf[ix+i*dx]
				if v < 0 {
					v *= af[ia+i*da]
				}
				of[io+i] = v
			}
		})
	case runtime.Int8:
		preluQ(k, asI8(x), asI8(a), asI8(o))
	case runtime.Uint8:
		preluQ(k, x, a, o)
	}
	return nil
}

func preluQ[T int8 | uint8](k *preluK, x, a, o []T) {
	k.bc.each(func(ix, ia, io, n, dx, da int) {
		for i := range n {
			v := int32(x[ix+i*dx]) - k.zx
			var r int32
			if v >= 0 {
				r = k.rpos.apply(v)
			} else {
				r = k.rneg.apply(v * (int32(a[ia+i*da]) - k.za))
			}
			o[io+i] = T(min(max(r+k.zo, k.lo), k.hi))
		}
	})
}
