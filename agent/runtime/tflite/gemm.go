package tflite

// kAlign pads the reduction length of packed operands so vector kernels can
// run whole blocks; the padding is zero in both operands and adds nothing.
const kAlign = 16

func alignK(k int) int { return (k + kAlign - 1) &^ (kAlign - 1) }

// gemmI16 computes c[i*n+j] = Σ_k a[i*k+kk] × b[j*k+kk] for i < m, j < n:
// m rows of activations against n rows of weights, both with the
// reduction dimension contiguous. Operands are int16 so products of
// offset 8-bit values (at most 255 × 255) and their pair sums stay exact.
var gemmI16 = gemmI16Go

// wordIs64 selects the two-lane kernel on 64-bit machines, where one
// 64-bit multiply does two 32-bit multiply-adds.
const wordIs64 = ^uint(0)>>63 == 1

// swarMaxK bounds the depth at which two int32 sums share an int64:
// 255·255·k must stay below 2^31 so the low lane never carries.
const swarMaxK = (1<<31 - 1) / (255 * 255)

// gemmI16Go is the portable kernel. On 64-bit machines it packs two
// activation rows into the halves of an int64, so one multiply by a weight
// yields both rows' products: acc = Σ a0·w + 2^32·Σ a1·w, from which the
// low half is the first sum and the rest, shifted down, the second.
func gemmI16Go(a []int16, m int, b []int16, n, k int, c []int32) {
	if !wordIs64 || k > swarMaxK {
		gemmI16Plain(a, m, b, n, k, c)
		return
	}
	i := 0
	for ; i+2 <= m; i += 2 {
		a0 := a[i*k : i*k+k]
		a1 := a[(i+1)*k : (i+1)*k+k]
		a1 = a1[:len(a0)]
		c0 := c[i*n : i*n+n]
		c1 := c[(i+1)*n : (i+1)*n+n]
		j := 0
		for ; j+4 <= n; j += 4 {
			b0 := b[j*k : j*k+k]
			b1 := b[(j+1)*k : (j+1)*k+k]
			b2 := b[(j+2)*k : (j+2)*k+k]
			b3 := b[(j+3)*k : (j+3)*k+k]
			b0, b1, b2, b3 = b0[:len(a0)], b1[:len(a0)], b2[:len(a0)], b3[:len(a0)]
			var s0, s1, s2, s3 int64
			for kk, av := range a0 {
				x := int64(av) + int64(a1[kk])<<32
				s0 += x * int64(b0[kk])
				s1 += x * int64(b1[kk])
				s2 += x * int64(b2[kk])
				s3 += x * int64(b3[kk])
			}
			c0[j], c1[j] = unpair(s0)
			c0[j+1], c1[j+1] = unpair(s1)
			c0[j+2], c1[j+2] = unpair(s2)
			c0[j+3], c1[j+3] = unpair(s3)
		}
		for ; j < n; j++ {
			bj := b[j*k : j*k+k]
			bj = bj[:len(a0)]
			var s int64
			for kk, av := range a0 {
				s += (int64(av) + int64(a1[kk])<<32) * int64(bj[kk])
			}
			c0[j], c1[j] = unpair(s)
		}
	}
	if i < m {
		gemmI16Plain(a[i*k:], m-i, b, n, k, c[i*n:])
	}
}

// unpair splits a two-lane sum into its low and high int32 sums.
func unpair(s int64) (int32, int32) {
	lo := int32(s)
	return lo, int32((s - int64(lo)) >> 32)
}

// gemmI16Plain is the one-product-per-multiply kernel, for 32-bit machines
// and depths too large for two lanes.
func gemmI16Plain(a []int16, m int, b []int16, n, k int, c []int32) {
	i := 0
	for ; i+2 <= m; i += 2 {
		a0 := a[i*k : i*k+k]
		a1 := a[(i+1)*k : (i+1)*k+k]
		c0 := c[i*n : i*n+n]
		c1 := c[(i+1)*n : (i+1)*n+n]
		j := 0
		for ; j+4 <= n; j += 4 {
			b0 := b[j*k : j*k+k]
			b1 := b[(j+1)*k : (j+1)*k+k]
			b2 := b[(j+2)*k : (j+2)*k+k]
			b3 := b[(j+3)*k : (j+3)*k+k]
			var s00, s01, s02, s03, s10, s11, s12, s13 int32
			b0, b1, b2, b3, a1 = b0[:len(a0)], b1[:len(a0)], b2[:len(a0)], b3[:len(a0)], a1[:len(a0)]
			for kk, av := range a0 {
				x0, x1 := int32(av), int32(a1[kk])
				w0, w1, w2, w3 := int32(b0[kk]), int32(b1[kk]), int32(b2[kk]), int32(b3[kk])
				s00 += x0 * w0
				s01 += x0 * w1
				s02 += x0 * w2
				s03 += x0 * w3
				s10 += x1 * w0
				s11 += x1 * w1
				s12 += x1 * w2
				s13 += x1 * w3
			}
			c0[j], c0[j+1], c0[j+2], c0[j+3] = s00, s01, s02, s03
			c1[j], c1[j+1], c1[j+2], c1[j+3] = s10, s11, s12, s13
		}
		for ; j < n; j++ {
			bj := b[j*k : j*k+k]
			bj, a1 = bj[:len(a0)], a1[:len(a0)]
			var s0, s1 int32
			for kk, av := range a0 {
				w := int32(bj[kk])
				s0 += int32(av) * w
				s1 += int32(a1[kk]) * w
			}
			c0[j], c1[j] = s0, s1
		}
	}
	for ; i < m; i++ {
		ai := a[i*k : i*k+k]
		ci := c[i*n : i*n+n]
		for j := range ci {
			bj := b[j*k : j*k+k]
			bj = bj[:len(ai)]
			var s int32
			for kk, av := range ai {
				s += int32(av) * int32(bj[kk])
			}
			ci[j] = s
		}
	}
}

// gemmF32 is gemmI16 for float32.
func gemmF32(a []float32, m int, b []float32, n, k int, c []float32) {
	i := 0
	for ; i+2 <= m; i += 2 {
		a0 := a[i*k : i*k+k]
		a1 := a[(i+1)*k : (i+1)*k+k]
		c0 := c[i*n : i*n+n]
		c1 := c[(i+1)*n : (i+1)*n+n]
		for j := range c0 {
			bj := b[j*k : j*k+k]
			bj, a1 = bj[:len(a0)], a1[:len(a0)]
			var s0, s1 float32
			for kk, av := range a0 {
				w := bj[kk]
				s0 += av * w
				s1 += a1[kk] * w
			}
			c0[j], c1[j] = s0, s1
		}
	}
	for ; i < m; i++ {
		ai := a[i*k : i*k+k]
		ci := c[i*n : i*n+n]
		for j := range ci {
			bj := b[j*k : j*k+k]
			bj = bj[:len(ai)]
			var s float32
			for kk, av := range ai {
				s += av * bj[kk]
			}
			ci[j] = s
		}
	}
}
