package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR on NHWC tensors, after
// reference_ops::ResizeNearestNeighbor and ResizeBilinear (float) /
// ResizeBilinearInteger (8-bit: 10-bit fixed-point weights, rounded).

func init() {
	registerOp(opResizeNearestNeighbor, func(c *prepCtx) (kernel, error) { return prepareResize(c, false) })
	registerOp(opResizeBilinear, func(c *prepCtx) (kernel, error) { return prepareResize(c, true) })
}

type resizeK struct {
	in, out            int
	bilinear           bool
	dtype              runtime.DType
	n, ih, iw, c       int
	oh, ow             int
	alignCorners       bool
	halfPixel          bool
	scaleH, scaleW     float32
	scale10H, scale10W int32
}

func prepareResize(c *prepCtx, bilinear bool) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	in, ii, _ := c.input(0)
	st, _, _ := c.input(1)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := rank4(in, "input"); err != nil {
		return nil, err
	}
	if err := c.sameElems(in, out); err != nil {
		return nil, err
	}
	if err := sameType(q8AndFloat, in); err != nil {
		return nil, err
	}
	size, err := constInts(st)
	if err != nil {
		return nil, err
	}
	if len(size) != 2 || size[0] <= 0 || size[1] <= 0 {
		return nil, badf("size %v must be two positive values", size)
	}
	k := &resizeK{in: ii, out: oi, bilinear: bilinear, dtype: in.dtype, n: in.shape[0], ih: in.shape[1], iw: in.shape[2], c: in.shape[3], oh: size[0], ow: size[1]}
	if err := checkShape(out, []int{k.n, k.oh, k.ow, k.c}); err != nil {
		return nil, err
	}
	// ResizeBilinearOptions: align_corners 2, half_pixel_centers 3;
	// ResizeNearestNeighborOptions: 0, 1.
	o := c.opts()
	if bilinear {
		k.alignCorners, k.halfPixel = o.bool(2, false), o.bool(3, false)
	} else {
		k.alignCorners, k.halfPixel = o.bool(0, false), o.bool(1, false)
	}
	scale := func(in, out int) float32 {
		if k.alignCorners && out > 1 {
			return float32(in-1) / float32(out-1)
		}
		return float32(in) / float32(out)
	}
	k.scaleH, k.scaleW = scale(k.ih, k.oh), scale(k.iw, k.ow)
	k.scale10H = int32(math.Round(float64(k.scaleH) * 1024))
	k.scale10W = int32(math.Round(float64(k.scaleW) * 1024))
	return k, nil
}

// nearest maps an output coordinate to an input one
// (reference_ops::ResizeNearestNeighbor).
func (k *resizeK) nearest(v int, scale float32, inSize int) int {
	offset := float32(0)
	if k.halfPixel {
		offset = 0.5
	}
	f := (float32(v) + offset) * scale
	var r int
	if k.alignCorners {
		r = int(roundf(f))
	} else {
		r = int(float32(math.Floor(float64(f))))
	}
	return min(max(r, 0), inSize-1)
}

func (k *resizeK) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	es := k.dtype.Size()
	if !k.bilinear {
		row := k.c * es
		for b := range k.n {
			for y := range k.oh {
				iy := k.nearest(y, k.scaleH, k.ih)
				for x := range k.ow {
					ix := k.nearest(x, k.scaleW, k.iw)
					src := ((b*k.ih+iy)*k.iw + ix) * row
					dst := ((b*k.oh+y)*k.ow + x) * row
					copy(out[dst:dst+row], in[src:src+row])
				}
			}
		}
		return nil
	}
	switch k.dtype {
	case runtime.Float32:
		k.bilinearF(asF32(in), asF32(out))
	case runtime.Int8:
		bilinearQ(k, asI8(in), asI8(out))
	case runtime.Uint8:
		bilinearQ(k, in, out)
	}
	return nil
}

func (k *resizeK) coord(v int, scale float32, inSize int) (float32, int, int) {
	var f float32
	if k.halfPixel {
		f = (float32(v)+0.5)*scale - 0.5
	} else {
		f = float32(v) * scale
	}
	lo := max(int(float32(math.Floor(float64(f)))), 0)
	hi := min(int(float32(math.Ceil(float64(f)))), inSize-1)
	return f, lo, hi
}

func (k *resizeK) bilinearF(in, out []float32) {
	for b := range k.n {
		for y := range k.oh {
			fy, y0, y1 := k.coord(y, k.scaleH, k.ih)
			for x := range k.ow {
				fx, x0, x1 := k.coord(x, k.scaleW, k.iw)
				for c := range k.c {
					at := func(yy, xx int) float32 { return in[((b*k.ih+yy)*k.iw+xx)*k.c+c] }
					v := at(y0, x0)*(1-(fy-float32(y0)))*(1-(fx-float32(x0))) +
						at(y1, x0)*(fy-float32(y0))*(1-(fx-float32(x0))) +
						at(y0, x1)*(1-(fy-float32(y0)))*(fx-float32(x0)) +
						at(y1, x1)*(fy-float32(y0))*(fx-float32(x0))
					out[((b*k.oh+y)*k.ow+x)*k.c+c] = v
				}
			}
		}
	}
}

// coord10 is ComputeInterpolationValuesInteger: positions in 1/1024ths.
func (k *resizeK) coord10(v int, scale10 int32, inSize int) (int32, int, int) {
	var s int32
	if k.halfPixel {
		s = int32(v)*scale10 + scale10/2 - 1<<9
	} else {
		s = int32(v) * scale10
	}
	lo := max(int(s/1024), 0)
	hi := min(int((s+1023)/1024), inSize-1)
	return s, lo, hi
}

func bilinearQ[T int8 | uint8](k *resizeK, in, out []T) {
	for b := range k.n {
		for y := range k.oh {
			sy, y0, y1 := k.coord10(y, k.scale10H, k.ih)
			wy := int64(sy) - 1024*int64(y0)
			for x := range k.ow {
				sx, x0, x1 := k.coord10(x, k.scale10W, k.iw)
				wx := int64(sx) - 1024*int64(x0)
				for c := range k.c {
					at := func(yy, xx int) int64 { return int64(in[((b*k.ih+yy)*k.iw+xx)*k.c+c]) }
					v := at(y0, x0)*(1024-wy)*(1024-wx) +
						at(y1, x0)*wy*(1024-wx) +
						at(y0, x1)*(1024-wy)*wx +
						at(y1, x1)*wy*wx
					round := int64(1 << 19)
					if v < 0 {
						round = -round
					}
					out[((b*k.oh+y)*k.ow+x)*k.c+c] = T((v + round) / (1 << 20))
				}
			}
		}
	}
}
