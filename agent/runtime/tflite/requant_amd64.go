//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

//go:noescape
func requantFPI8(acc, bias *int32, scale *float32, n int, out *int8, lo, hi float32, zp int32)

//go:noescape
func requantFPU8(acc, bias *int32, scale *float32, n int, out *uint8, lo, hi float32, zp int32)

//go:noescape
func requantRefI8(acc, bias, mult, left, right *int32, n int, out *int8, lo, hi, zp int32)

//go:noescape
func requantRefU8(acc, bias, mult, left, right *int32, n int, out *uint8, lo, hi, zp int32)

var haveRequantAsm = cpu.X86.HasAVX2

// requantRefAsm handles the whole blocks of eight of a row in the
// reference (double-rounding) arithmetic and returns how many it wrote.
func requantRefAsm[T int8 | uint8](o *outStage, acc, bias []int32, ch0 int, out []T) int {
	n := len(out) &^ 7
	if !haveRequantAsm || n == 0 || len(acc) < n || len(bias) < n || len(o.left32) < ch0+n {
		return 0
	}
	m, l, r := &o.mult[ch0], &o.left32[ch0], &o.right32[ch0]
	switch y := any(out).(type) {
	case []int8:
		requantRefI8(&acc[0], &bias[0], m, l, r, n, &y[0], o.lo, o.hi, o.zp)
	case []uint8:
		requantRefU8(&acc[0], &bias[0], m, l, r, n, &y[0], o.lo, o.hi, o.zp)
	}
	return n
}

// requantFPAsm handles the whole blocks of eight of a LiteRT-arithmetic
// row and returns how many elements it wrote.
func requantFPAsm[T int8 | uint8](o *outStage, acc, bias []int32, scale []float32, out []T) int {
	n := len(out) &^ 7
	if !haveRequantAsm || n == 0 || len(acc) < n || len(bias) < n || len(scale) < n {
		return 0
	}
	switch y := any(out).(type) {
	case []int8:
		requantFPI8(&acc[0], &bias[0], &scale[0], n, &y[0], o.flo, o.fhi, o.zp)
	case []uint8:
		requantFPU8(&acc[0], &bias[0], &scale[0], n, &y[0], o.flo, o.fhi, o.zp)
	}
	return n
}
