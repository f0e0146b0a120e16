//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

func vectorGemms() map[string]func([]int16, int, []int16, int, int, []int32) {
	m := map[string]func([]int16, int, []int16, int, int, []int32){}
	if cpu.X86.HasAVX2 {
		m["avx2"] = gemmI16AVX2
	}
	if haveVNNI {
		m["avx512vnni"] = gemmI16VNNI
	}
	return m
}
