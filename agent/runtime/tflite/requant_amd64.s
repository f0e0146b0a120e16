//go:build amd64 && !purego

#include "textflag.h"

// REQUANT8 is LiteRT's (XNNPACK's) fp32 requantization of n int32
// accumulators (n a positive multiple of 8): out = round_even(clamp(
// float(acc + bias) · scale, lo, hi)) + zp, packed to 8 bits by PACK.
// VCVTPS2DQ rounds half to even under Go's default MXCSR.
#define REQUANT8(PACK) \
	MOVQ acc+0(FP), SI \
	MOVQ bias+8(FP), BX \
	MOVQ scale+16(FP), DX \
	MOVQ n+24(FP), CX \
	MOVQ out+32(FP), DI \
	VBROADCASTSS lo+40(FP), Y13 \
	VBROADCASTSS hi+44(FP), Y12 \
	VPBROADCASTD zp+48(FP), Y11 \
loop: \
	VMOVDQU (SI), Y0 \
	VPADDD (BX), Y0, Y0 \
	VCVTDQ2PS Y0, Y0 \
	VMULPS (DX), Y0, Y0 \
	VMAXPS Y13, Y0, Y0 \
	VMINPS Y12, Y0, Y0 \
	VCVTPS2DQ Y0, Y0 \
	VPADDD Y11, Y0, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPACKSSDW X1, X0, X0 \
	PACK X0, X0, X0 \
	VMOVQ X0, (DI) \
	ADDQ $32, SI \
	ADDQ $32, BX \
	ADDQ $32, DX \
	ADDQ $8, DI \
	SUBQ $8, CX \
	JNZ loop \
	VZEROUPPER \
	RET

// REQUANTREF is TFLite's reference requantization with double rounding,
// eight lanes at a time: h = SaturatingRoundingDoublingHighMul((acc +
// bias) << left, mult) via two VPMULDQ (even and odd lanes), then
// RoundingDivideByPOT(h, right) (half away from zero), + zp, clamp, pack.
// The saturating case (both operands INT32_MIN) cannot occur: mult > 0.
#define REQUANTREF(PACK) \
	MOVQ acc+0(FP), SI \
	MOVQ bias+8(FP), BX \
	MOVQ mult+16(FP), DX \
	MOVQ left+24(FP), R8 \
	MOVQ right+32(FP), R9 \
	MOVQ n+40(FP), CX \
	MOVQ out+48(FP), DI \
	VPBROADCASTD lo+56(FP), Y13 \
	VPBROADCASTD hi+60(FP), Y12 \
	VPBROADCASTD zp+64(FP), Y11 \
	MOVQ $0x40000000, AX \
	VMOVQ AX, X6 \
	VPBROADCASTQ X6, Y6 \
	MOVQ $-2147483647, AX \
	VMOVQ AX, X7 \
	VPBROADCASTQ X7, Y7 \
	MOVQ $0x7fffffff, AX \
	VMOVQ AX, X8 \
	VPBROADCASTQ X8, Y8 \
	VPXOR Y9, Y9, Y9 \
	MOVL $1, AX \
	VMOVD AX, X10 \
	VPBROADCASTD X10, Y10 \
loop: \
	VMOVDQU (SI), Y0 \
	VPADDD (BX), Y0, Y0 \
	VPSLLVD (R8), Y0, Y0 \
	VMOVDQU (DX), Y1 \
	VPMULDQ Y1, Y0, Y2 \
	VPSRLQ $32, Y0, Y3 \
	VPSRLQ $32, Y1, Y4 \
	VPMULDQ Y4, Y3, Y3 \
	VPCMPGTQ Y2, Y9, Y5 \
	VPAND Y7, Y5, Y5 \
	VPADDQ Y6, Y5, Y5 \
	VPADDQ Y5, Y2, Y2 \
	VPCMPGTQ Y2, Y9, Y5 \
	VPAND Y8, Y5, Y5 \
	VPADDQ Y5, Y2, Y2 \
	VPSRLQ $31, Y2, Y2 \
	VPCMPGTQ Y3, Y9, Y4 \
	VPAND Y7, Y4, Y4 \
	VPADDQ Y6, Y4, Y4 \
	VPADDQ Y4, Y3, Y3 \
	VPCMPGTQ Y3, Y9, Y4 \
	VPAND Y8, Y4, Y4 \
	VPADDQ Y4, Y3, Y3 \
	VPSRLQ $31, Y3, Y3 \
	VPSLLQ $32, Y3, Y3 \
	VPBLENDD $0xAA, Y3, Y2, Y2 \
	VMOVDQU (R9), Y14 \
	VPSLLVD Y14, Y10, Y4 \
	VPSUBD Y10, Y4, Y4 \
	VPAND Y4, Y2, Y5 \
	VPSRLD $1, Y4, Y4 \
	VPCMPGTD Y2, Y9, Y3 \
	VPSUBD Y3, Y4, Y4 \
	VPSRAVD Y14, Y2, Y2 \
	VPCMPGTD Y4, Y5, Y3 \
	VPSUBD Y3, Y2, Y2 \
	VPADDD Y11, Y2, Y2 \
	VPMAXSD Y13, Y2, Y2 \
	VPMINSD Y12, Y2, Y2 \
	VEXTRACTI128 $1, Y2, X1 \
	VPACKSSDW X1, X2, X2 \
	PACK X2, X2, X2 \
	VMOVQ X2, (DI) \
	ADDQ $32, SI \
	ADDQ $32, BX \
	ADDQ $32, DX \
	ADDQ $32, R8 \
	ADDQ $32, R9 \
	ADDQ $8, DI \
	SUBQ $8, CX \
	JNZ loop \
	VZEROUPPER \
	RET

// func requantFPI8(acc, bias *int32, scale *float32, n int, out *int8, lo, hi float32, zp int32)
TEXT ·requantFPI8(SB), NOSPLIT, $0-52
	REQUANT8(VPACKSSWB)

// func requantFPU8(acc, bias *int32, scale *float32, n int, out *uint8, lo, hi float32, zp int32)
TEXT ·requantFPU8(SB), NOSPLIT, $0-52
	REQUANT8(VPACKUSWB)

// func requantRefI8(acc, bias, mult, left, right *int32, n int, out *int8, lo, hi, zp int32)
TEXT ·requantRefI8(SB), NOSPLIT, $0-68
	REQUANTREF(VPACKSSWB)

// func requantRefU8(acc, bias, mult, left, right *int32, n int, out *uint8, lo, hi, zp int32)
TEXT ·requantRefU8(SB), NOSPLIT, $0-68
	REQUANTREF(VPACKUSWB)
