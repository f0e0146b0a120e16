package quant

import (
	"fmt"
	"math"
)

// Conv2D is TFLite's int8 convolution (reference integer_ops/conv.h and
// depthwise_conv.h): NHWC input, per-channel symmetric weights, int32 bias,
// padding positions skipped (the same as padding with the input zero
// point).
type Conv2D struct {
	// Filter is [out, kh, kw, in] for a convolution, [1, kh, kw, out] for a
	// depthwise one.
	Filter      []int8
	FilterShape [4]int
	Depthwise   bool
	// Multiplier is the depthwise depth multiplier (out = in · Multiplier).
	Multiplier       int
	WeightScale      []float32 // one per output channel, or one
	Bias             []int32   // one per output channel, or nil
	StrideH, StrideW int
	DilH, DilW       int
	Same             bool
	In, Out          Params
	// ActMin and ActMax are the real bounds of a fused activation:
	// 0, +Inf for RELU; 0, 6 for RELU6; -Inf, +Inf for none.
	ActMin, ActMax float32
}

// OutSize is TFLite's output size and leading padding along one dimension.
func OutSize(in, k, stride, dilation int, same bool) (out, pad int) {
	eff := (k-1)*dilation + 1
	if same {
		out = (in + stride - 1) / stride
		return out, max((out-1)*stride+eff-in, 0) / 2
	}
	return (in-eff)/stride + 1, 0
}

// ActivationRange is TFLite's CalculateActivationRangeQuantized for int8:
// the bounds quantized in float32 with rounding half away from zero.
func ActivationRange(lo, hi float32, q Params) (int32, int32) {
	// Clamped in float64 first, so a huge bound cannot overflow int32.
	bound := func(x float32) int32 {
		return int32(min(max(math.Round(float64(x/q.Scale))+float64(q.ZeroPoint), -128), 127))
	}
	qmin, qmax := int32(-128), int32(127)
	if !math.IsInf(float64(lo), -1) {
		qmin = bound(lo)
	}
	if !math.IsInf(float64(hi), 1) {
		qmax = bound(hi)
	}
	return qmin, qmax
}

// Run convolves in, of NHWC shape inShape, and returns the output and its
// shape.
func (c *Conv2D) Run(in []int8, inShape [4]int) ([]int8, [4]int, error) {
	n, h, w, ch := inShape[0], inShape[1], inShape[2], inShape[3]
	kh, kw := c.FilterShape[1], c.FilterShape[2]
	oc := c.FilterShape[0]
	if c.Depthwise {
		oc = c.FilterShape[3]
		if c.FilterShape[0] != 1 || oc != ch*c.Multiplier {
			return nil, [4]int{}, fmt.Errorf("depthwise filter %v for %d channels × %d", c.FilterShape, ch, c.Multiplier)
		}
	} else if c.FilterShape[3] != ch {
		return nil, [4]int{}, fmt.Errorf("filter %v for %d input channels", c.FilterShape, ch)
	}
	if len(in) != n*h*w*ch {
		return nil, [4]int{}, fmt.Errorf("input has %d values, shape %v", len(in), inShape)
	}
	oh, padT := OutSize(h, kh, c.StrideH, c.DilH, c.Same)
	ow, padL := OutSize(w, kw, c.StrideW, c.DilW, c.Same)
	mult := make([]Multiplier, oc)
	for o := range mult {
		ws := c.WeightScale[min(o, len(c.WeightScale)-1)]
		mult[o] = QuantizeMultiplier(float64(c.In.Scale) * float64(ws) / float64(c.Out.Scale))
	}
	actMin, actMax := ActivationRange(c.ActMin, c.ActMax, c.Out)
	out := make([]int8, 0, n*oh*ow*oc)
	for b := range n {
		for oy := range oh {
			for ox := range ow {
				for o := range oc {
					var acc int32
					for ky := range kh {
						for kx := range kw {
							iy, ix := oy*c.StrideH-padT+ky*c.DilH, ox*c.StrideW-padL+kx*c.DilW
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							px := in[((b*h+iy)*w+ix)*ch:]
							if c.Depthwise {
								acc += int32(c.Filter[(ky*kw+kx)*oc+o]) * (int32(px[o/c.Multiplier]) - c.In.ZeroPoint)
								continue
							}
							f := c.Filter[((o*kh+ky)*kw+kx)*ch:]
							for ic := range ch {
								acc += int32(f[ic]) * (int32(px[ic]) - c.In.ZeroPoint)
							}
						}
					}
					if c.Bias != nil {
						acc += c.Bias[o]
					}
					out = append(out, int8(clamp(mult[o].Apply(acc)+c.Out.ZeroPoint, actMin, actMax)))
				}
			}
		}
	}
	return out, [4]int{n, oh, ow, oc}, nil
}

// Pool is TFLite's int8 average or max pool (reference
// integer_ops/pooling.h); input and output share their quantization.
type Pool struct {
	FilterH, FilterW int
	StrideH, StrideW int
	Same             bool
	Max              bool
}

// Run pools in, of NHWC shape inShape.
func (p *Pool) Run(in []int8, inShape [4]int) ([]int8, [4]int) {
	n, h, w, ch := inShape[0], inShape[1], inShape[2], inShape[3]
	oh, padT := OutSize(h, p.FilterH, p.StrideH, 1, p.Same)
	ow, padL := OutSize(w, p.FilterW, p.StrideW, 1, p.Same)
	out := make([]int8, 0, n*oh*ow*ch)
	for b := range n {
		for oy := range oh {
			for ox := range ow {
				for c := range ch {
					var acc, count int32
					mx := int32(-128)
					for ky := range p.FilterH {
						for kx := range p.FilterW {
							iy, ix := oy*p.StrideH-padT+ky, ox*p.StrideW-padL+kx
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							v := int32(in[((b*h+iy)*w+ix)*ch+c])
							acc += v
							count++
							mx = max(mx, v)
						}
					}
					if p.Max {
						out = append(out, int8(mx))
						continue
					}
					// Rounded to the nearest, halves away from zero.
					if acc > 0 {
						acc = (acc + count/2) / count
					} else {
						acc = (acc - count/2) / count
					}
					out = append(out, int8(clamp(acc, -128, 127)))
				}
			}
		}
	}
	return out, [4]int{n, oh, ow, ch}
}

// Add is TFLite's int8 ADD of two tensors of the same shape (reference
// integer_ops/add.h with the parameters of kernels/add.cc): both inputs
// shifted left by 20 bits, rescaled to twice the larger input scale,
// summed, and rescaled to the output.
type Add struct {
	In1, In2, Out  Params
	ActMin, ActMax float32
}

// Run adds a and b into a new slice.
func (p *Add) Run(a, b []int8) ([]int8, error) {
	if len(a) != len(b) {
		return nil, fmt.Errorf("add of %d and %d values", len(a), len(b))
	}
	const leftShift = 20
	twiceMax := 2 * float64(max(p.In1.Scale, p.In2.Scale))
	m1 := QuantizeMultiplier(float64(p.In1.Scale) / twiceMax)
	m2 := QuantizeMultiplier(float64(p.In2.Scale) / twiceMax)
	mo := QuantizeMultiplier(twiceMax / (float64(int64(1)<<leftShift) * float64(p.Out.Scale)))
	lo, hi := ActivationRange(p.ActMin, p.ActMax, p.Out)
	out := make([]int8, len(a))
	for i := range a {
		x := m1.Apply((int32(a[i]) - p.In1.ZeroPoint) * (1 << leftShift))
		y := m2.Apply((int32(b[i]) - p.In2.ZeroPoint) * (1 << leftShift))
		out[i] = int8(clamp(mo.Apply(x+y)+p.Out.ZeroPoint, lo, hi))
	}
	return out, nil
}
