package tflite

import (
	"fmt"
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
}

// store writes one quantized value for channel c.
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

func (c *prepCtx) errf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}
