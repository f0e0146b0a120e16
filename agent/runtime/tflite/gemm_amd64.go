//go:build amd64 && !purego

package tflite

import "golang.org/x/sys/cpu"

// The amd64 fast path: an AVX2 micro-kernel for the int16 GEMM behind
// CONV_2D and FULLY_CONNECTED. The portable Go kernel is always built and
// is what tests compare this one against.

//go:noescape
func gemm2x4AVX2(a0, a1, b *int16, nblk, kp int, c0, c1 *int32)

//go:noescape
func gemm4x4VNNI(a, b *int16, nblk, kp int, c *int32, ldc int)

// haveVNNI reports AVX-512 with VNNI (VPDPWSSD) and byte/word masks.
var haveVNNI = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

func init() {
	switch {
	case haveVNNI:
		gemmI16 = gemmI16VNNI
	case cpu.X86.HasAVX2:
		gemmI16 = gemmI16AVX2
	}
}

// gemmI16VNNI runs whole groups of four activation rows through the
// AVX-512 VNNI kernel and leaves the rest to the AVX2 path.
func gemmI16VNNI(a []int16, m int, b []int16, n, k int, c []int32) {
	if m < 4 || n < 4 || k == 0 || k%kAlign != 0 || len(a) < m*k || len(b) < n*k || len(c) < m*n {
		gemmI16AVX2(a, m, b, n, k, c)
		return
	}
	nb := n / 4
	i := 0
	for ; i+4 <= m; i += 4 {
		gemm4x4VNNI(&a[i*k], &b[0], nb, k, &c[i*n], n)
		for j := nb * 4; j < n; j++ {
			bj := b[j*k : j*k+k]
			for r := i; r < i+4; r++ {
				ar := a[r*k : r*k+k]
				var s int32
				for kk, w := range bj {
					s += int32(ar[kk]) * int32(w)
				}
				c[r*n+j] = s
			}
		}
	}
	if i < m {
		gemmI16AVX2(a[i*k:], m-i, b, n, k, c[i*n:])
	}
}

// gemmI16AVX2 is gemmI16 with k a multiple of kAlign. The assembly kernel
// takes whole blocks of four weight rows and two activation rows; Go
// handles the remainders.
func gemmI16AVX2(a []int16, m int, b []int16, n, k int, c []int32) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || k%kAlign != 0 || len(a) < m*k || len(b) < n*k || len(c) < m*n {
		gemmI16Go(a, m, b, n, k, c)
		return
	}
	nb := n / 4
	for i := 0; i < m; i += 2 {
		i1 := min(i+1, m-1) // an odd last row is computed twice
		if nb > 0 {
			gemm2x4AVX2(&a[i*k], &a[i1*k], &b[0], nb, k, &c[i*n], &c[i1*n])
		}
		for j := nb * 4; j < n; j++ {
			bj := b[j*k : j*k+k]
			a0, a1 := a[i*k:i*k+k], a[i1*k:i1*k+k]
			var s0, s1 int32
			for kk, w := range bj {
				s0 += int32(a0[kk]) * int32(w)
				s1 += int32(a1[kk]) * int32(w)
			}
			c[i*n+j], c[i1*n+j] = s0, s1
		}
	}
}
