//go:build amd64 && !purego

#include "textflag.h"

// DWPIXEL computes, for one output pixel whose receptive field lies inside
// the input, acc[ch] = Σ_t (x[offs[t] + ch] - izp) · w[t·c + ch] for
// ch < c (a multiple of 8) over taps t < taps. LOAD widens eight 8-bit
// inputs to int32; VPMULLD multiplies them by int32 weights.
#define DWPIXEL(LOAD) \
	MOVQ acc+0(FP), DI \
	MOVQ x+8(FP), SI \
	MOVQ w+16(FP), BX \
	MOVQ c+24(FP), CX \
	MOVQ offs+32(FP), R9 \
	MOVQ taps+40(FP), R8 \
	VPBROADCASTD izp+48(FP), Y13 \
	MOVQ CX, R12 \
	SHLQ $2, R12 \
	XORQ AX, AX \
chblock: \
	VPXOR Y0, Y0, Y0 \
	VPXOR Y1, Y1, Y1 \
	LEAQ (BX)(AX*4), R13 \
	XORQ R10, R10 \
taploop: \
	MOVLQSX (R9)(R10*4), R11 \
	ADDQ SI, R11 \
	LOAD (R11)(AX*1), Y2 \
	VPSUBD Y13, Y2, Y2 \
	VPMULLD (R13), Y2, Y2 \
	VPADDD Y2, Y0, Y0 \
	ADDQ R12, R13 \
	INCQ R10 \
	CMPQ R10, R8 \
	JLT taploop \
	VMOVDQU Y0, (DI)(AX*4) \
	ADDQ $8, AX \
	CMPQ AX, CX \
	JLT chblock \
	VZEROUPPER \
	RET

// func dwPixelI8(acc *int32, x *int8, w *int32, c int, offs *int32, taps int, izp int32)
TEXT ·dwPixelI8(SB), NOSPLIT, $0-52
	DWPIXEL(VPMOVSXBD)

// func dwPixelU8(acc *int32, x *uint8, w *int32, c int, offs *int32, taps int, izp int32)
TEXT ·dwPixelU8(SB), NOSPLIT, $0-52
	DWPIXEL(VPMOVZXBD)
