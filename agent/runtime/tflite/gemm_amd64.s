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

// func gemm4x4VNNI(a, b *int16, nblk, kp int, c *int32, ldc int)
//
// The AVX-512 VNNI kernel: four activation rows (at a, stride kp) against
// nblk blocks of four weight rows (at b, stride kp), sums stored to four
// rows of c (stride ldc int32s), four columns per block. VPDPWSSD does
// VPMADDWD and VPADDD in one instruction, 32 int16 products per zmm. kp is
// a positive multiple of 16; a last half block of 16 is loaded masked.
TEXT ·gemm4x4VNNI(SB), NOSPLIT, $0-48
	MOVQ b+8(FP), BX
	MOVQ nblk+16(FP), CX
	MOVQ kp+24(FP), R10
	MOVQ c+32(FP), DX
	SHLQ $1, R10             // row stride in bytes
	MOVL $0xffff, AX
	KMOVD AX, K1             // low 16 words of a zmm
	TESTQ CX, CX
	JZ   vdone

vblock:
	MOVQ a+0(FP), SI
	LEAQ (SI)(R10*1), DI
	LEAQ (SI)(R10*2), R8
	LEAQ (DI)(R10*2), R9
	LEAQ (BX)(R10*1), R11
	LEAQ (BX)(R10*2), R12
	LEAQ (R11)(R10*2), R13
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	MOVQ R10, AX             // bytes left in each row
	CMPQ AX, $64
	JLT  vtail

vkloop:
	VMOVDQU64 (SI), Z0
	VMOVDQU64 (DI), Z1
	VMOVDQU64 (R8), Z2
	VMOVDQU64 (R9), Z3
	VMOVDQU64 (BX), Z4
	VPDPWSSD Z4, Z0, Z16
	VPDPWSSD Z4, Z1, Z20
	VPDPWSSD Z4, Z2, Z24
	VPDPWSSD Z4, Z3, Z28
	VMOVDQU64 (R11), Z5
	VPDPWSSD Z5, Z0, Z17
	VPDPWSSD Z5, Z1, Z21
	VPDPWSSD Z5, Z2, Z25
	VPDPWSSD Z5, Z3, Z29
	VMOVDQU64 (R12), Z6
	VPDPWSSD Z6, Z0, Z18
	VPDPWSSD Z6, Z1, Z22
	VPDPWSSD Z6, Z2, Z26
	VPDPWSSD Z6, Z3, Z30
	VMOVDQU64 (R13), Z7
	VPDPWSSD Z7, Z0, Z19
	VPDPWSSD Z7, Z1, Z23
	VPDPWSSD Z7, Z2, Z27
	VPDPWSSD Z7, Z3, Z31
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, BX
	ADDQ $64, R11
	ADDQ $64, R12
	ADDQ $64, R13
	SUBQ $64, AX
	CMPQ AX, $64
	JGE  vkloop

vtail:
	TESTQ AX, AX
	JZ   vreduce
	VMOVDQU16.Z (SI), K1, Z0
	VMOVDQU16.Z (DI), K1, Z1
	VMOVDQU16.Z (R8), K1, Z2
	VMOVDQU16.Z (R9), K1, Z3
	VMOVDQU16.Z (BX), K1, Z4
	VPDPWSSD Z4, Z0, Z16
	VPDPWSSD Z4, Z1, Z20
	VPDPWSSD Z4, Z2, Z24
	VPDPWSSD Z4, Z3, Z28
	VMOVDQU16.Z (R11), K1, Z5
	VPDPWSSD Z5, Z0, Z17
	VPDPWSSD Z5, Z1, Z21
	VPDPWSSD Z5, Z2, Z25
	VPDPWSSD Z5, Z3, Z29
	VMOVDQU16.Z (R12), K1, Z6
	VPDPWSSD Z6, Z0, Z18
	VPDPWSSD Z6, Z1, Z22
	VPDPWSSD Z6, Z2, Z26
	VPDPWSSD Z6, Z3, Z30
	VMOVDQU16.Z (R13), K1, Z7
	VPDPWSSD Z7, Z0, Z19
	VPDPWSSD Z7, Z1, Z23
	VPDPWSSD Z7, Z2, Z27
	VPDPWSSD Z7, Z3, Z31
	ADDQ AX, BX              // BX to the end of weight row 0

vreduce:
	// BX is at the end of weight row 0, i.e. row 1; the next block
	// starts three rows further.
	LEAQ (BX)(R10*2), BX
	ADDQ R10, BX
	MOVQ ldc+40(FP), AX
	SHLQ $2, AX              // output row stride in bytes
	MOVQ DX, SI

#define ROWSUM(ZA, ZB, ZC, ZD, YA, YB, YC, YD, DST) \
	VEXTRACTI64X4 $1, ZA, Y0 \
	VPADDD YA, Y0, Y0 \
	VEXTRACTI64X4 $1, ZB, Y1 \
	VPADDD YB, Y1, Y1 \
	VEXTRACTI64X4 $1, ZC, Y2 \
	VPADDD YC, Y2, Y2 \
	VEXTRACTI64X4 $1, ZD, Y3 \
	VPADDD YD, Y3, Y3 \
	VPHADDD Y1, Y0, Y0 \
	VPHADDD Y3, Y2, Y2 \
	VPHADDD Y2, Y0, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPADDD X1, X0, X0 \
	VMOVDQU X0, DST

	ROWSUM(Z16, Z17, Z18, Z19, Y16, Y17, Y18, Y19, (SI))
	ADDQ AX, SI
	ROWSUM(Z20, Z21, Z22, Z23, Y20, Y21, Y22, Y23, (SI))
	ADDQ AX, SI
	ROWSUM(Z24, Z25, Z26, Z27, Y24, Y25, Y26, Y27, (SI))
	ADDQ AX, SI
	ROWSUM(Z28, Z29, Z30, Z31, Y28, Y29, Y30, Y31, (SI))

	ADDQ $16, DX
	DECQ CX
	JNZ  vblock

vdone:
	VZEROUPPER
	RET
