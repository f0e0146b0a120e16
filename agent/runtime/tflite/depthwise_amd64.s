//go:build amd64 && !purego

#include "textflag.h"

// DWPIXEL computes the accumulators of one depthwise output pixel:
// acc[ch] = Σ_t (x[xoffs[t] + ch] - izp) · w[woffs[t]/4 + ch] for ch < c
// (a multiple of 8), over taps t < taps (at least one), the filter taps
// whose input lies inside the image. LOAD widens eight 8-bit inputs to
// int32; VPMULLD multiplies them by the int32 weights.
#define DWPIXEL(LOAD) \
	MOVQ acc+0(FP), DI \
	MOVQ x+8(FP), SI \
	MOVQ w+16(FP), BX \
	MOVQ c+24(FP), CX \
	MOVQ xoffs+32(FP), R9 \
	MOVQ woffs+40(FP), R12 \
	MOVQ taps+48(FP), R8 \
	VPBROADCASTD izp+56(FP), Y13 \
	XORQ AX, AX \
chblock: \
	VPXOR Y0, Y0, Y0 \
	XORQ R10, R10 \
taploop: \
	MOVLQSX (R9)(R10*4), R11 \
	ADDQ SI, R11 \
	LOAD (R11)(AX*1), Y2 \
	VPSUBD Y13, Y2, Y2 \
	MOVLQSX (R12)(R10*4), R13 \
	ADDQ BX, R13 \
	VPMULLD (R13)(AX*4), Y2, Y2 \
	VPADDD Y2, Y0, Y0 \
	INCQ R10 \
	CMPQ R10, R8 \
	JLT taploop \
	VMOVDQU Y0, (DI)(AX*4) \
	ADDQ $8, AX \
	CMPQ AX, CX \
	JLT chblock \
	VZEROUPPER \
	RET

// func dwPixelI8(acc *int32, x *int8, w *int32, c int, xoffs, woffs *int32, taps int, izp int32)
TEXT ·dwPixelI8(SB), NOSPLIT, $0-60
	DWPIXEL(VPMOVSXBD)

// func dwPixelU8(acc *int32, x *uint8, w *int32, c int, xoffs, woffs *int32, taps int, izp int32)
TEXT ·dwPixelU8(SB), NOSPLIT, $0-60
	DWPIXEL(VPMOVZXBD)
