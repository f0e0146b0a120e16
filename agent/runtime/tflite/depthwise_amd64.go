//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

//go:noescape
func dwPixelI8(acc *int32, x *int8, w *int32, c int, offs *int32, taps int, izp int32)

//go:noescape
func dwPixelU8(acc *int32, x *uint8, w *int32, c int, offs *int32, taps int, izp int32)

var haveDWAsm = cpu.X86.HasAVX2

// dwPixelAsm computes the accumulators of an interior output pixel with
// the AVX2 kernel when there is one for this layer; it reports false when
// the caller must use the portable loop.
func dwPixelAsm[T int8 | uint8](k *dwQ, acc []int32, x []T) bool {
	if !haveDWAsm || k.mult != 1 || k.g.oc%8 != 0 || len(k.tapOffs) == 0 {
		return false
	}
	// The last tap's channels must lie inside x.
	if k.tapOffs[len(k.tapOffs)-1]+k.g.oc > len(x) || len(acc) < k.g.oc {
		return false
	}
	switch xs := any(x).(type) {
	case []int8:
		dwPixelI8(&acc[0], &xs[0], &k.w[0], k.g.oc, &k.tapOffs32[0], len(k.tapOffs), k.izp)
	case []uint8:
		dwPixelU8(&acc[0], &xs[0], &k.w[0], k.g.oc, &k.tapOffs32[0], len(k.tapOffs), k.izp)
	}
	return true
}
