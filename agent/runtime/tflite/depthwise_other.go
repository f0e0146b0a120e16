//go:build !amd64 || purego

package tflite

var haveDWAsm = false

func dwPixelAsm[T int8 | uint8](k *dwQ, acc []int32, x []T, oy, ox int) bool { return false }
