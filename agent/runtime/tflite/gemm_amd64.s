//go:build amd64 && !purego

#include "textflag.h"

// func gemm2x4AVX2(a0, a1, b *int16, nblk, kp int, c0, c1 *int32)
//
// For each of nblk blocks of four weight rows (rows of kp int16 at b, row
// stride kp), computes the four dot products with activation rows a0 and
// a1 and stores them at c0 and c1, which advance by four per block. kp is a
// positive multiple of 16. VPMADDWD multiplies int16 pairs and adds each
// pair into an int32 exactly; VPADDD accumulates.
TEXT ·gemm2x4AVX2(SB), NOSPLIT, $0-56
	MOVQ a0+0(FP), SI
	MOVQ a1+8(FP), DI
	MOVQ b+16(FP), BX
	MOVQ nblk+24(FP), CX
	MOVQ kp+32(FP), R10
	MOVQ c0+40(FP), R8
	MOVQ c1+48(FP), R9
	SHLQ $1, R10             // row stride in bytes
	MOVQ R10, DX
	SHLQ $2, DX              // four rows
	TESTQ CX, CX
	JZ   done

block:
	LEAQ (BX)(R10*1), R12    // b1
	LEAQ (BX)(R10*2), R13    // b2
	LEAQ (R12)(R10*2), R11   // b3
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	VPXOR Y12, Y12, Y12
	VPXOR Y13, Y13, Y13
	VPXOR Y14, Y14, Y14
	VPXOR Y15, Y15, Y15
	XORQ AX, AX

kloop:
	VMOVDQU (SI)(AX*1), Y0
	VMOVDQU (DI)(AX*1), Y1
	VMOVDQU (BX)(AX*1), Y2
	VPMADDWD Y2, Y0, Y3
	VPMADDWD Y2, Y1, Y4
	VPADDD Y3, Y8, Y8
	VPADDD Y4, Y12, Y12
	VMOVDQU (R12)(AX*1), Y2
	VPMADDWD Y2, Y0, Y5
	VPMADDWD Y2, Y1, Y6
	VPADDD Y5, Y9, Y9
	VPADDD Y6, Y13, Y13
	VMOVDQU (R13)(AX*1), Y2
	VPMADDWD Y2, Y0, Y3
	VPMADDWD Y2, Y1, Y4
	VPADDD Y3, Y10, Y10
	VPADDD Y4, Y14, Y14
	VMOVDQU (R11)(AX*1), Y2
	VPMADDWD Y2, Y0, Y5
	VPMADDWD Y2, Y1, Y6
	VPADDD Y5, Y11, Y11
	VPADDD Y6, Y15, Y15
	ADDQ $32, AX
	CMPQ AX, R10
	JLT  kloop

	// Horizontal sums: four accumulators of eight lanes to four int32.
	VPHADDD Y9, Y8, Y8
	VPHADDD Y11, Y10, Y10
	VPHADDD Y10, Y8, Y8
	VEXTRACTI128 $1, Y8, X9
	VPADDD X9, X8, X8
	VMOVDQU X8, (R8)
	VPHADDD Y13, Y12, Y12
	VPHADDD Y15, Y14, Y14
	VPHADDD Y14, Y12, Y12
	VEXTRACTI128 $1, Y12, X13
	VPADDD X13, X12, X12
	VMOVDQU X12, (R9)

	ADDQ $16, R8
	ADDQ $16, R9
	ADDQ DX, BX
	DECQ CX
	JNZ  block

done:
	VZEROUPPER
	RET
