//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

//go:noescape
func dwPixelI8(acc *int32, x *int8, w *int32, c int, xoffs, woffs *int32, taps int, izp int32)

//go:noescape
func dwPixelU8(acc *int32, x *uint8, w *int32, c int, xoffs, woffs *int32, taps int, izp int32)

var haveDWAsm = cpu.X86.HasAVX2

// maxDWTaps bounds the filter size the vector depthwise path takes; the
// tap lists live on the stack.
const maxDWTaps = 64

// dwPixelAsm computes the accumulators of output pixel (oy, ox) of image
// x with the AVX2 kernel, skipping taps that fall into the padding. It
// reports false when the caller must use the portable loop.
func dwPixelAsm[T int8 | uint8](k *dwQ, acc []int32, x []T, oy, ox int) bool {
	g := &k.g
	if !haveDWAsm || k.mult != 1 || g.oc%8 != 0 || g.kh*g.kw > maxDWTaps || len(acc) < g.oc {
		return false
	}
	var xoffs, woffs [maxDWTaps]int32
	n := 0
	iy0, ix0 := oy*g.sh-g.ph, ox*g.sw-g.pw
	for ky := range g.kh {
		iy := iy0 + ky*g.dh
		if iy < 0 || iy >= g.ih {
			continue
		}
		for kx := range g.kw {
			ix := ix0 + kx*g.dw
			if ix < 0 || ix >= g.iw {
				continue
			}
			xoffs[n] = int32((iy*g.iw + ix) * g.ic)
			woffs[n] = int32((ky*g.kw + kx) * g.oc * 4)
			n++
		}
	}
	if n == 0 {
		clear(acc[:g.oc])
		return true
	}
	if len(x) < g.ih*g.iw*g.ic || len(k.w) < g.kh*g.kw*g.oc {
		return false
	}
	switch xs := any(x).(type) {
	case []int8:
		dwPixelI8(&acc[0], &xs[0], &k.w[0], g.oc, &xoffs[0], &woffs[0], n, k.izp)
	case []uint8:
		dwPixelU8(&acc[0], &xs[0], &k.w[0], g.oc, &xoffs[0], &woffs[0], n, k.izp)
	}
	return true
}
