//go:build !amd64 || purego

package tflite

var haveRequantAsm = false

func requantFPAsm[T int8 | uint8](o *outStage, acc, bias []int32, scale []float32, out []T) int {
	return 0
}

func requantRefAsm[T int8 | uint8](o *outStage, acc, bias []int32, ch0 int, out []T) int {
	return 0
}
