package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// AVERAGE_POOL_2D and MAX_POOL_2D after reference/pooling.h and
// reference/integer_ops/pooling.h. Quantized pooling requires the output
// to share the input's scale and zero point, so it works on raw values; the
// average rounds half away from zero.

func init() {
	registerOp(opAveragePool2d, func(c *prepCtx) (kernel, error) { return preparePool(c, false) })
	registerOp(opMaxPool2d, func(c *prepCtx) (kernel, error) { return preparePool(c, true) })
}

const (
	poolPadding, poolStrideW, poolStrideH, poolFilterW, poolFilterH, poolAct = 0, 1, 2, 3, 4, 5
)

type pool struct {
	g             convGeom
	isMax         bool
	inIdx, outIdx int
	dtype         runtime.DType
	lo, hi        int32
	flo, fhi      float32
}

func preparePool(c *prepCtx, isMax bool) (kernel, error) {
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
	if err := rank4(in, "input"); err != nil {
		return nil, err
	}
	if err := sameType(q8AndFloat, in, out); err != nil {
		return nil, err
	}
	o := c.opts()
	k := &pool{isMax: isMax, inIdx: inIdx, outIdx: outIdx, dtype: in.dtype}
	g := &k.g
	padding := o.u8(poolPadding, 0)
	g.sw, g.sh = o.positive(poolStrideW, 0, "stride_w"), o.positive(poolStrideH, 0, "stride_h")
	g.kw, g.kh = o.positive(poolFilterW, 0, "filter_width"), o.positive(poolFilterH, 0, "filter_height")
	g.dw, g.dh = 1, 1
	act := o.u8(poolAct, 0)
	if err := o.err(); err != nil {
		return nil, err
	}
	g.n, g.ih, g.iw, g.ic = in.shape[0], in.shape[1], in.shape[2], in.shape[3]
	g.oc = g.ic
	if err := g.compute(padding); err != nil {
		return nil, err
	}
	if err := checkShape(out, []int{g.n, g.oh, g.ow, g.oc}); err != nil {
		return nil, err
	}
	var ok bool
	if in.dtype == runtime.Float32 {
		k.flo, k.fhi, ok = frange(act)
	} else {
		if !sameQuant(in, out) {
			return nil, unsupportedf("input and output quantization differ (%q, %q)", in.name, out.name)
		}
		os, ozp, err := perTensor(out)
		if err != nil {
			return nil, err
		}
		lo, hi := qlimits(out.dtype)
		k.lo, k.hi, ok = qrange(act, os, ozp, lo, hi)
	}
	if !ok {
		return nil, unsupportedf("fused activation %d", act)
	}
	return k, nil
}

func (k *pool) eval(bufs [][]byte) error {
	switch k.dtype {
	case runtime.Int8:
		poolQ(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]))
	case runtime.Uint8:
		poolQ(k, bufs[k.inIdx], bufs[k.outIdx])
	default:
		poolF(k, asF32(bufs[k.inIdx]), asF32(bufs[k.outIdx]))
	}
	return nil
}

func poolQ[T int8 | uint8](k *pool, in, out []T) {
	g := &k.g
	for b := range g.n {
		for oy := range g.oh {
			y0 := oy*g.sh - g.ph
			fy0, fy1 := max(0, -y0), min(g.kh, g.ih-y0)
			for ox := range g.ow {
				x0 := ox*g.sw - g.pw
				fx0, fx1 := max(0, -x0), min(g.kw, g.iw-x0)
				o := out[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc]
				for c := range o {
					var acc int32
					if k.isMax {
						acc = math.MinInt32
					}
					count := int32(0)
					for fy := fy0; fy < fy1; fy++ {
						for fx := fx0; fx < fx1; fx++ {
							v := int32(in[((b*g.ih+y0+fy)*g.iw+x0+fx)*g.ic+c])
							if k.isMax {
								acc = max(acc, v)
							} else {
								acc += v
							}
							count++
						}
					}
					if count == 0 {
						// TFLite fails the whole op here; an empty window
						// only arises from padding larger than the filter.
						o[c] = T(min(max(0, k.lo), k.hi))
						continue
					}
					if !k.isMax {
						if acc > 0 {
							acc = (acc + count/2) / count
						} else {
							acc = (acc - count/2) / count
						}
					}
					o[c] = T(min(max(acc, k.lo), k.hi))
				}
			}
		}
	}
}

func poolF(k *pool, in, out []float32) {
	g := &k.g
	for b := range g.n {
		for oy := range g.oh {
			y0 := oy*g.sh - g.ph
			fy0, fy1 := max(0, -y0), min(g.kh, g.ih-y0)
			for ox := range g.ow {
				x0 := ox*g.sw - g.pw
				fx0, fx1 := max(0, -x0), min(g.kw, g.iw-x0)
				o := out[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc]
				for c := range o {
					var acc float32
					if k.isMax {
						acc = float32(math.Inf(-1))
					}
					count := 0
					for fy := fy0; fy < fy1; fy++ {
						for fx := fx0; fx < fx1; fx++ {
							v := in[((b*g.ih+y0+fy)*g.iw+x0+fx)*g.ic+c]
							if k.isMax {
								acc = max(acc, v)
							} else {
								acc += v
							}
							count++
						}
					}
					if !k.isMax && count > 0 {
						acc /= float32(count)
					}
					o[c] = min(max(acc, k.flo), k.fhi)
				}
			}
		}
	}
}
