// Package quant is the project's own reference for TFLite's integer
// arithmetic: the requantization and the int8 kernels the demo models use
// (fully connected, ReLU, softmax), written from TFLite's reference kernels
// (tensorflow/lite/kernels/internal/reference, gemmlowp fixedpoint.h) and
// kept deliberately plain.
//
// The demo generator computes each model's expected output with it, so the
// expected output comes from code that shares nothing with the agent's
// engine: when the two agree byte for byte, both are right or both repeat
// TFLite. Double rounding (TFLite's and TFLite Micro's default) throughout.
package quant

import (
	"fmt"
	"math"
)

// Multiplier is a real multiplier as TFLite stores it: M·2^Shift/2^31 with M
// in [2^30, 2^31).
type Multiplier struct {
	M     int32
	Shift int
}

// QuantizeMultiplier is TFLite's QuantizeMultiplier: frexp, then the
// significand rounded half away from zero to 31 bits.
func QuantizeMultiplier(real float64) Multiplier {
	if real == 0 {
		return Multiplier{}
	}
	q, shift := math.Frexp(real)
	qFixed := int64(math.Round(q * (1 << 31)))
	if qFixed == 1<<31 {
		qFixed /= 2
		shift++
	}
	if shift < -31 {
		return Multiplier{}
	}
	return Multiplier{M: int32(qFixed), Shift: shift}
}

// SaturatingRoundingDoublingHighMul is gemmlowp's: round(a·b / 2^31) with
// ties away from zero, saturating the one overflowing case.
func SaturatingRoundingDoublingHighMul(a, b int32) int32 {
	if a == b && a == math.MinInt32 {
		return math.MaxInt32
	}
	ab := int64(a) * int64(b)
	nudge := int64(1 << 30)
	if ab < 0 {
		nudge = 1 - 1<<30
	}
	return int32((ab + nudge) / (1 << 31))
}

// RoundingDivideByPOT is gemmlowp's: x / 2^exp rounded half away from zero.
func RoundingDivideByPOT(x int32, exp int) int32 {
	mask := int32(1)<<exp - 1
	rem := x & mask
	threshold := mask >> 1
	if x < 0 {
		threshold++
	}
	r := x >> exp
	if rem > threshold {
		r++
	}
	return r
}

// Apply is TFLite's MultiplyByQuantizedMultiplier (double rounding).
func (m Multiplier) Apply(x int32) int32 {
	left, right := 0, 0
	if m.Shift > 0 {
		left = m.Shift
	} else {
		right = -m.Shift
	}
	return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(int32(uint32(x)<<left), m.M), right)
}

func (m Multiplier) String() string { return fmt.Sprintf("%d·2^%d", m.M, m.Shift) }

// Params are the quantization of one tensor.
type Params struct {
	Scale     float32
	ZeroPoint int32
}

// Quantize maps a real to int8: round half away from zero, then clamp.
func (p Params) Quantize(x float32) int8 {
	return int8(clamp(int32(math.Round(float64(x/p.Scale)))+p.ZeroPoint, -128, 127))
}

// Dequantize maps an int8 to its real value.
func (p Params) Dequantize(q int8) float32 { return float32(int32(q)-p.ZeroPoint) * p.Scale }

func clamp(x, lo, hi int32) int32 {
	return min(max(x, lo), hi)
}
