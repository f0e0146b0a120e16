package tflite

import "math"

// Requantization as TFLite's reference kernels do it
// (tensorflow/lite/kernels/internal/common.{h,cc},
// quantization_util.cc): a real multiplier becomes a Q31 fixed-point
// significand and a power-of-two exponent, applied with gemmlowp's
// saturating rounding doubling high multiply and a rounding right shift.

// quantizeMultiplier splits m into a Q31 significand and an exponent with
// m ≈ q × 2^(shift-31). single selects the clamp of single-rounding builds.
func quantizeMultiplier(m float64, single bool) (int32, int) {
	if m == 0 {
		return 0, 0
	}
	q, shift := math.Frexp(m)
	qf := int64(math.Round(q * (1 << 31)))
	if qf == 1<<31 {
		qf /= 2
		shift++
	}
	if shift < -31 {
		shift, qf = 0, 0
	}
	if single && shift > 30 {
		shift, qf = 30, 1<<31-1
	}
	return int32(qf), shift
}

// srdhm is gemmlowp's SaturatingRoundingDoublingHighMul.
func srdhm(a, b int32) int32 {
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

// rdbpot is gemmlowp's RoundingDivideByPOT: round half away from zero.
func rdbpot(x int32, e int) int32 {
	mask := int32(1)<<e - 1
	rem := x & mask
	thr := mask >> 1
	if x < 0 {
		thr++
	}
	r := x >> e
	if rem > thr {
		r++
	}
	return r
}

// requant is a prepared multiplier: MultiplyByQuantizedMultiplier.
type requant struct {
	mult   int32
	shift  int
	single bool
	// fp selects LiteRT's CPU arithmetic (XNNPACK "fp32" requantization):
	// round-half-to-even of float32(x) × scale, with scale a float32.
	fp    bool
	scale float32
}

// arith selects the integer arithmetic of requantizing kernels.
type arith uint8

const (
	// arithDouble is TFLite's reference arithmetic with double rounding,
	// as TFLite Micro builds it: the default.
	arithDouble arith = iota
	// arithSingle is the reference arithmetic of TFLITE_SINGLE_ROUNDING
	// builds: one rounding shift.
	arithSingle
	// arithLiteRT is what LiteRT runs on CPUs: its default XNNPACK delegate
	// requantizes convolutions in float32 and adds with its own fixed-point
	// form. It reproduces LiteRT's (and TFLite's desktop) outputs byte for
	// byte.
	arithLiteRT
)

// rescale returns the requantization of an accumulator whose real scale is
// a·b to a tensor of scale c, in the selected arithmetic.
func (a arith) rescale(sa, sb, sc float32) requant {
	if a == arithLiteRT {
		return requant{fp: true, scale: float32(float32(sa*sb) / sc)}
	}
	return newRequant(float64(sa)*float64(sb)/float64(sc), a == arithSingle)
}

func newRequant(m float64, single bool) requant {
	q, s := quantizeMultiplier(m, single)
	return requant{mult: q, shift: s, single: single}
}

// apply returns round(x × m) the way TFLite does: by default with two
// roundings (TFLite Micro and the reference kernels), or with one when the
// engine runs in single-rounding mode (TFLITE_SINGLE_ROUNDING builds).
func (r requant) apply(x int32) int32 {
	if r.fp {
		return int32(math.RoundToEven(float64(float32(x) * r.scale)))
	}
	if r.single {
		total := 31 - r.shift
		return int32((int64(x)*int64(r.mult) + int64(1)<<(total-1)) >> total)
	}
	left, right := 0, 0
	if r.shift > 0 {
		left = r.shift
	} else {
		right = -r.shift
	}
	return rdbpot(srdhm(int32(uint32(x)<<left), r.mult), right)
}

// qrange is the clamp range of a quantized output with a fused activation,
// as CalculateActivationRangeQuantized computes it (in float32).
func qrange(act uint8, scale float32, zp int32, qmin, qmax int32) (int32, int32, bool) {
	quantize := func(f float32) int32 { return zp + int32(roundf(f/scale)) }
	lo, hi := qmin, qmax
	switch act {
	case actNone:
	case actRelu:
		lo = max(qmin, quantize(0))
	case actRelu6:
		lo = max(qmin, quantize(0))
		hi = min(qmax, quantize(6))
	case actReluN1To1:
		lo = max(qmin, quantize(-1))
		hi = min(qmax, quantize(1))
	default:
		return 0, 0, false
	}
	return lo, hi, true
}

// frange is the clamp range of a float output with a fused activation.
func frange(act uint8) (float32, float32, bool) {
	switch act {
	case actNone:
		return float32(math.Inf(-1)), float32(math.Inf(1)), true
	case actRelu:
		return 0, float32(math.Inf(1)), true
	case actRelu6:
		return 0, 6, true
	case actReluN1To1:
		return -1, 1, true
	}
	return 0, 0, false
}

// roundf rounds half away from zero, like C's roundf.
func roundf(f float32) float32 { return float32(math.Round(float64(f))) }

// Fused activations (enum ActivationFunctionType).
const (
	actNone      = 0
	actRelu      = 1
	actReluN1To1 = 2
	actRelu6     = 3
	actTanh      = 4
	actSignBit   = 5
)

// Paddings (enum Padding).
const (
	padSame  = 0
	padValid = 1
)
