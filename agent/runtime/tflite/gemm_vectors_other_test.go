//go:build !amd64 || purego

package tflite

func vectorGemms() map[string]func([]int16, int, []int16, int, int, []int32) { return nil }
