package tflite

import (
	"math/rand/v2"
	"testing"
)

// TestGemmPaths checks the selected GEMM (assembly where the CPU has it)
// against the portable Go kernel on random sizes and extreme values.
func TestGemmPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for it := range 200 {
		m, n, k := 1+r.IntN(9), 1+r.IntN(21), alignK(1+r.IntN(100))
		a, b := make([]int16, m*k), make([]int16, n*k)
		for i := range a {
			a[i] = int16(r.IntN(511) - 255)
		}
		for i := range b {
			b[i] = int16(r.IntN(511) - 255)
		}
		if it%10 == 0 {
			for i := range a {
				a[i] = -255
			}
			for i := range b {
				b[i] = -255
			}
		}
		want, got, two := make([]int32, m*n), make([]int32, m*n), make([]int32, m*n)
		gemmI16Plain(a, m, b, n, k, want)
		gemmI16(a, m, b, n, k, got)
		gemmI16Go(a, m, b, n, k, two)
		for i := range want {
			if two[i] != want[i] {
				t.Fatalf("m=%d n=%d k=%d: two-lane kernel gives %d at %d, plain %d", m, n, k, two[i], i, want[i])
			}
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("m=%d n=%d k=%d: element %d is %d, portable kernel gives %d", m, n, k, i, got[i], want[i])
			}
		}
	}
}

func benchGemm(b *testing.B, f func([]int16, int, []int16, int, int, []int32)) {
	m, n, k := 16, 96, 160
	a, w, c := make([]int16, m*k), make([]int16, n*k), make([]int32, m*n)
	for i := range a {
		a[i] = int16(i % 200)
	}
	for i := range w {
		w[i] = int16(i%255 - 127)
	}
	b.SetBytes(int64(2 * m * n * k)) // "bytes" are ops: GOPS = MB/s / 1000
	for b.Loop() {
		f(a, m, w, n, k, c)
	}
}

// BenchmarkGemm compares the portable and selected kernels on one
// pointwise-convolution block (16 pixels, 96 channels, depth 160).
func BenchmarkGemm(b *testing.B) {
	b.Run("portable", func(b *testing.B) { benchGemm(b, gemmI16Go) })
	b.Run("plain", func(b *testing.B) { benchGemm(b, gemmI16Plain) })
	for name, f := range vectorGemms() {
		b.Run(name, func(b *testing.B) { benchGemm(b, f) })
	}
}

// TestGemmVectorKernels checks every vector GEMM this CPU can run, not
// only the one selected, against the portable kernel.
func TestGemmVectorKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for name, f := range vectorGemms() {
		for range 100 {
			m, n, k := 1+r.IntN(17), 1+r.IntN(21), alignK(1+r.IntN(200))
			a, b := make([]int16, m*k), make([]int16, n*k)
			for i := range a {
				a[i] = int16(r.IntN(511) - 255)
			}
			for i := range b {
				b[i] = int16(r.IntN(511) - 255)
			}
			want, got := make([]int32, m*n), make([]int32, m*n)
			gemmI16Go(a, m, b, n, k, want)
			f(a, m, b, n, k, got)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s m=%d n=%d k=%d: element %d is %d, portable kernel gives %d", name, m, n, k, i, got[i], want[i])
				}
			}
		}
	}
}
