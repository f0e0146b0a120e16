package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// perTensor returns a tensor's single scale and zero point.
func perTensor(t *tensor) (float32, int32, error) {
	if t.quant == nil || len(t.quant.Scale) == 0 {
		return 0, 0, badf("tensor %q is %s but has no quantization parameters", t.name, t.dtype)
	}
	if len(t.quant.Scale) != 1 {
		return 0, 0, unsupportedf("tensor %q has %d scales where one per tensor is required", t.name, len(t.quant.Scale))
	}
	s, z := t.quant.Scale[0], t.quant.ZeroPoint[0]
	if !(s > 0) || math.IsInf(float64(s), 0) {
		return 0, 0, badf("tensor %q has scale %v", t.name, s)
	}
	lo, hi := qlimits(t.dtype)
	if z < int64(lo) || z > int64(hi) {
		return 0, 0, badf("tensor %q has zero point %d outside %s", t.name, z, t.dtype)
	}
	return s, int32(z), nil
}

// qlimits is the range of a quantized integer type.
func qlimits(d runtime.DType) (int32, int32) {
	switch d {
	case runtime.Int8:
		return -128, 127
	case runtime.Uint8:
		return 0, 255
	case runtime.Int16:
		return -32768, 32767
	}
	return math.MinInt32, math.MaxInt32
}

func isQ8(d runtime.DType) bool { return d == runtime.Int8 || d == runtime.Uint8 }

// sameType checks that tensors share one dtype from allowed.
func sameType(allowed []runtime.DType, ts ...*tensor) error {
	d := ts[0].dtype
	ok := false
	for _, a := range allowed {
		if d == a {
			ok = true
		}
	}
	if !ok {
		return unsupportedf("tensor %q is %s; supported: %v", ts[0].name, d, allowed)
	}
	for _, t := range ts[1:] {
		if t.dtype != d {
			return badf("tensor %q is %s but %q is %s", t.name, t.dtype, ts[0].name, d)
		}
	}
	return nil
}

var (
	q8AndFloat = []runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8}
	anyNumeric = []runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int16, runtime.Int32, runtime.Int64, runtime.Bool}
)

// checkShape compares a computed output shape with the one in the file;
// kernels rely on it, so a mismatch is a bad model.
func checkShape(t *tensor, want []int) error {
	if len(t.shape) != len(want) {
		return badf("output %q has shape %v, the operator produces %v", t.name, t.shape, want)
	}
	for i := range want {
		if t.shape[i] != want[i] {
			return badf("output %q has shape %v, the operator produces %v", t.name, t.shape, want)
		}
	}
	return nil
}

// sameQuant reports whether two quantized tensors share scale and zero
// point, which many ops require of their input and output.
func sameQuant(a, b *tensor) bool {
	if a.quant == nil || b.quant == nil {
		return a.quant == b.quant
	}
	if len(a.quant.Scale) != 1 || len(b.quant.Scale) != 1 {
		return false
	}
	return a.quant.Scale[0] == b.quant.Scale[0] && a.quant.ZeroPoint[0] == b.quant.ZeroPoint[0]
}

// outStage turns int32 accumulators into quantized outputs: requantize
// (per channel or per tensor), add the output zero point, clamp to the
// fused activation's range.
type outStage struct {
	rq     []requant // one per channel, or one for all
	zp     int32
	lo, hi int32

	// Per-channel tables built by finish for the row loops.
	fp       bool
	fscale   []float32
	flo, fhi float32 // clamp range relative to the zero point (LiteRT)
	mult     []int32
	left     []uint8
	right    []uint8
	left32   []int32
	right32  []int32
	single   bool
	shift    []int8
}

// value requantizes one accumulator of channel c.
func (o *outStage) value(acc int32, c int) int32 {
	var r requant
	if len(o.rq) == 1 {
		r = o.rq[0]
	} else {
		r = o.rq[c]
	}
	v := r.apply(acc) + o.zp
	return min(max(v, o.lo), o.hi)
}

// finish expands the multipliers to one per channel for the row loops.
func (o *outStage) finish(channels int) {
	o.fscale = make([]float32, channels)
	o.mult = make([]int32, channels)
	o.left = make([]uint8, channels)
	o.right = make([]uint8, channels)
	o.shift = make([]int8, channels)
	o.left32 = make([]int32, channels)
	o.right32 = make([]int32, channels)
	for c := range channels {
		r := o.rq[0]
		if len(o.rq) > 1 {
			r = o.rq[c]
		}
		o.fp, o.single = r.fp, r.single
		o.fscale[c] = r.scale
		o.mult[c] = r.mult
		o.shift[c] = int8(r.shift)
		if r.shift > 0 {
			o.left[c] = uint8(r.shift)
		} else {
			o.right[c] = uint8(-r.shift)
		}
		o.left32[c], o.right32[c] = int32(o.left[c]), int32(o.right[c])
	}
	o.flo, o.fhi = float32(o.lo-o.zp), float32(o.hi-o.zp)
}

// requantRow writes out[j] for channels ch0+j from acc[j] + bias[ch0+j].
func requantRow[T int8 | uint8](o *outStage, acc, bias []int32, ch0 int, out []T) {
	n := len(out)
	acc = acc[:n]
	bias = bias[ch0 : ch0+n]
	if o.fp {
		// XNNPACK's fp32 requantization: clamp in float, then round half
		// to even by adding 1.5·2^23 (exact for |v| < 2^22, which the
		// clamp guarantees).
		sc := o.fscale[ch0 : ch0+n]
		j0 := requantFPAsm(o, acc, bias, sc, out)
		for j := j0; j < n; j++ {
			v := float32(acc[j]+bias[j]) * sc[j]
			v = min(max(v, o.flo), o.fhi)
			out[j] = T(int32(math.Float32bits(v+12582912)) - 0x4B400000 + o.zp)
		}
		return
	}
	mult := o.mult[ch0 : ch0+n]
	if o.single {
		sh := o.shift[ch0 : ch0+n]
		for j := range out {
			total := 31 - int(sh[j])
			v := int32((int64(acc[j]+bias[j])*int64(mult[j]) + int64(1)<<(total-1)) >> total)
			out[j] = T(min(max(v+o.zp, o.lo), o.hi))
		}
		return
	}
	left, right := o.left[ch0:ch0+n], o.right[ch0:ch0+n]
	for j := requantRefAsm(o, acc, bias, ch0, out); j < n; j++ {
		x := int32(uint32(acc[j]+bias[j]) << left[j])
		m := mult[j]
		// srdhm; x == m == MinInt32 cannot happen: m is positive.
		ab := int64(x) * int64(m)
		nudge := int64(1 << 30)
		if ab < 0 {
			nudge = 1 - 1<<30
		}
		h := int32((ab + nudge) / (1 << 31))
		v := rdbpot(h, int(right[j])) + o.zp
		out[j] = T(min(max(v, o.lo), o.hi))
	}
}
