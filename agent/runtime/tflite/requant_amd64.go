//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

//go:noescape
func requantFPI8(acc, bias *int32, scale *float32, n int, out *int8, lo, hi float32, zp int32)

//go:noescape
func requantFPU8(acc, bias *int32, scale *float32, n int, out *uint8, lo, hi float32, zp int32)

var haveRequantAsm = cpu.X86.HasAVX2

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
