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

// func requantFPI8(acc, bias *int32, scale *float32, n int, out *int8, lo, hi float32, zp int32)
TEXT ·requantFPI8(SB), NOSPLIT, $0-52
	REQUANT8(VPACKSSWB)

// func requantFPU8(acc, bias *int32, scale *float32, n int, out *uint8, lo, hi float32, zp int32)
TEXT ·requantFPU8(SB), NOSPLIT, $0-52
	REQUANT8(VPACKUSWB)
