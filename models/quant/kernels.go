package quant

import (
	"fmt"
	"math"
)

// FullyConnected is an int8 fully connected layer as TFLite stores it:
// weights [units][depth] symmetric int8, one scale per unit (per-channel)
// or one for all, int32 bias with scale input·weight.
type FullyConnected struct {
	Units, Depth int
	Weights      []int8    // Units×Depth, row-major
	WeightScale  []float32 // 1 or Units
	Bias         []int32   // Units, or nil
	In, Out      Params
	// Relu fuses a ReLU: the output is clamped at the zero point.
	Relu bool
	// LiteRT requantizes as LiteRT does on CPUs by default (its XNNPACK
	// delegate): the int32 accumulator times a float32 scale, rounded half
	// to even, instead of TFLite's fixed-point multiplier. The two agree
	// except near ties.
	LiteRT bool
}

// Run computes out (len Units) from in (len Depth) with TFLite's reference
// per-channel kernel: acc = Σ w·(x - zp_in) + bias, requantized per unit.
func (l *FullyConnected) Run(in, out []int8) error {
	if len(in) != l.Depth || len(out) != l.Units || len(l.Weights) != l.Units*l.Depth {
		return fmt.Errorf("fully connected %dx%d: input %d, output %d, weights %d", l.Units, l.Depth, len(in), len(out), len(l.Weights))
	}
	actMin := int32(-128)
	if l.Relu {
		actMin = max(actMin, l.Out.ZeroPoint)
	}
	for u := range l.Units {
		ws := l.WeightScale[0]
		if len(l.WeightScale) > 1 {
			ws = l.WeightScale[u]
		}
		var acc int32
		row := l.Weights[u*l.Depth : (u+1)*l.Depth]
		for d, w := range row {
			acc += int32(w) * (int32(in[d]) - l.In.ZeroPoint)
		}
		if l.Bias != nil {
			acc += l.Bias[u]
		}
		var v int32
		if l.LiteRT {
			v = FP32Requantize(acc, l.In.Scale, ws, l.Out.Scale)
		} else {
			// TFLite derives the multiplier in double from float32 scales.
			v = QuantizeMultiplier(float64(l.In.Scale) * float64(ws) / float64(l.Out.Scale)).Apply(acc)
		}
		out[u] = int8(clamp(v+l.Out.ZeroPoint, actMin, 127))
	}
	return nil
}

// FP32Requantize is XNNPACK's "fp32" requantization, which LiteRT runs by
// default on CPUs: acc × (in·weight/out) with the scale computed and applied
// in float32, rounded half to even.
func FP32Requantize(acc int32, in, weight, out float32) int32 {
	scale := float32(in*weight) / out
	return int32(math.RoundToEven(float64(float32(acc) * scale)))
}

// Relu is TFLite's quantized ReLU (ReluX with no upper bound): rescale from
// the input's quantization to the output's, clamp below at zero.
func Relu(in []int8, inQ Params, out []int8, outQ Params) {
	m := QuantizeMultiplier(float64(inQ.Scale) / float64(outQ.Scale))
	lo := max(-128, outQ.ZeroPoint+int32(roundFloat32(0/outQ.Scale)))
	for i, x := range in {
		v := outQ.ZeroPoint + m.Apply(int32(x)-inQ.ZeroPoint)
		out[i] = int8(clamp(v, lo, 127))
	}
}

func roundFloat32(x float32) float32 { return float32(math.Round(float64(x))) }

// SoftmaxOut is the output quantization TFLite requires of int8 softmax.
var SoftmaxOut = Params{Scale: 1.0 / 256, ZeroPoint: -128}

const (
	scaledDiffIntegerBits   = 5
	accumulationIntegerBits = 12
)

// Softmax is the int8 softmax of TFLite's default kernel, the one LiteRT
// runs (optimized_ops::Softmax with PopulateSoftmaxLookupTable): a float32
// table of exp(-scale·beta·d) for each distance d from the row maximum, a
// float32 sum in input order, and a probability rounded half away from zero
// to steps of 1/256 (output zero point -128).
func Softmax(in []int8, inScale float32, beta float32, out []int8) {
	var table [256]float32
	scale := -inScale * beta
	for v := range 256 {
		table[255-v] = float32(math.Exp(float64(scale * float32(v))))
	}
	maxIn := int32(math.MinInt8)
	for _, x := range in {
		maxIn = max(maxIn, int32(x))
	}
	base := 255 - maxIn
	var sum float32
	for _, x := range in {
		sum += table[base+int32(x)]
	}
	inv := 1 / (sum * SoftmaxOut.Scale)
	for i, x := range in {
		p := table[base+int32(x)] * inv
		out[i] = int8(clamp(int32(math.Round(float64(p)))+SoftmaxOut.ZeroPoint, -128, 127))
	}
}

// SoftmaxFixedPoint is TFLite's reference int8 softmax (the gemmlowp
// fixed-point version TFLite Micro runs), with output scale 1/256 and zero
// point -128. It can differ from Softmax by one step; the demo generator
// uses samples on which the two agree.
func SoftmaxFixedPoint(in []int8, inScale float32, beta float32, out []int8) {
	// PreprocessSoftmaxScaling and CalculateInputRadius.
	real := min(float64(beta)*float64(inScale)*float64(int64(1)<<(31-scaledDiffIntegerBits)), float64(int64(1)<<31)-1)
	mult := QuantizeMultiplier(real)
	leftShift := mult.Shift
	maxRescaled := float64((int64(1)<<scaledDiffIntegerBits)-1) * float64(int64(1)<<(31-scaledDiffIntegerBits)) / float64(int64(1)<<leftShift)
	diffMin := -int32(math.Floor(maxRescaled))

	maxIn := int32(math.MinInt8)
	for _, x := range in {
		maxIn = max(maxIn, int32(x))
	}
	scaled := func(x int8) int32 {
		// MultiplyByQuantizedMultiplierGreaterThanOne.
		return SaturatingRoundingDoublingHighMul((int32(x)-maxIn)*(1<<leftShift), mult.M)
	}
	var sum int32 // Q12.19
	for _, x := range in {
		if int32(x)-maxIn >= diffMin {
			sum += RoundingDivideByPOT(expOnNegativeValues(scaled(x)), accumulationIntegerBits)
		}
	}
	recip, bitsOverUnit := reciprocal(sum, accumulationIntegerBits)
	exponent := bitsOverUnit + 31 - 8
	for i, x := range in {
		if int32(x)-maxIn < diffMin {
			out[i] = -128
			continue
		}
		e := expOnNegativeValues(scaled(x))
		v := RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(recip, e), exponent) - 128
		out[i] = int8(clamp(v, -128, 127))
	}
}

// saturatingMulByPOT is gemmlowp's SaturatingRoundingMultiplyByPOT.
func saturatingMulByPOT(x int32, exp int) int32 {
	if exp < 0 {
		return RoundingDivideByPOT(x, -exp)
	}
	if exp == 0 {
		return x
	}
	threshold := int32(1)<<(31-exp) - 1
	switch {
	case x > threshold:
		return math.MaxInt32
	case x < -threshold:
		return math.MinInt32
	}
	return int32(uint32(x) << exp)
}

// expOnNegativeValues is gemmlowp's exp_on_negative_values for a Q5.26
// input a ≤ 0, giving a Q0.31 result.
func expOnNegativeValues(a int32) int32 {
	const fracBits = 31 - scaledDiffIntegerBits
	const quarter = int32(1) << (fracBits - 2)
	aModQuarterMinusQuarter := (a & (quarter - 1)) - quarter
	result := expOnInterval(saturatingMulByPOT(aModQuarterMinusQuarter, scaledDiffIntegerBits))
	remainder := aModQuarterMinusQuarter - a
	barrel := []struct {
		exp int
		mul int32
	}{{-2, 1672461947}, {-1, 1302514674}, {0, 790015084}, {1, 290630308}, {2, 39332535}, {3, 720401}, {4, 242}}
	for _, b := range barrel {
		if scaledDiffIntegerBits > b.exp && remainder&(1<<(fracBits+b.exp)) != 0 {
			result = SaturatingRoundingDoublingHighMul(result, b.mul)
		}
	}
	if a == 0 {
		return math.MaxInt32
	}
	return result
}

// expOnInterval is gemmlowp's exp_on_interval_between_negative_one_quarter_and_0_excl
// in Q0.31.
func expOnInterval(a int32) int32 {
	const constantTerm = 1895147668 // exp(-1/8)
	const oneThird = 715827883
	x := a + 1<<28
	x2 := SaturatingRoundingDoublingHighMul(x, x)
	x3 := SaturatingRoundingDoublingHighMul(x2, x)
	x4 := SaturatingRoundingDoublingHighMul(x2, x2)
	x4Over4 := saturatingMulByPOT(x4, -2)
	poly := saturatingMulByPOT(SaturatingRoundingDoublingHighMul(x4Over4+x3, oneThird)+x2, -1)
	return constantTerm + SaturatingRoundingDoublingHighMul(constantTerm, x+poly)
}

// reciprocal is TFLite's GetReciprocal: 1/x for x in Q(intBits), returned
// as a Q0.31 value and the number of bits x has above 1.0.
func reciprocal(x int32, intBits int) (int32, int) {
	headroomPlusOne := 0
	for u := uint32(x); u&(1<<31) == 0 && headroomPlusOne < 32; u <<= 1 {
		headroomPlusOne++
	}
	bitsOverUnit := intBits - headroomPlusOne
	shiftedMinusOne := int32((uint32(x) << headroomPlusOne) - (1 << 31))
	return oneOverOnePlusX(shiftedMinusOne), bitsOverUnit
}

// oneOverOnePlusX is gemmlowp's one_over_one_plus_x_for_x_in_0_1: Newton-
// Raphson in Q2.29 on a Q0.31 input.
func oneOverOnePlusX(a int32) int32 {
	halfDenominator := roundingHalfSum(a, math.MaxInt32)
	const c48over17 = 1515870810
	const cNeg32over17 = -1010580540
	x := c48over17 + SaturatingRoundingDoublingHighMul(halfDenominator, cNeg32over17)
	const oneQ2 = int32(1) << 29
	for range 3 {
		hdx := SaturatingRoundingDoublingHighMul(halfDenominator, x)
		oneMinus := oneQ2 - hdx
		x += saturatingMulByPOT(SaturatingRoundingDoublingHighMul(x, oneMinus), 2)
	}
	// ExactMulByPot<-1> reinterprets Q2.29 as Q1.30; Rescale<0> shifts by 1.
	return saturatingMulByPOT(x, 1)
}

func roundingHalfSum(a, b int32) int32 {
	sum := int64(a) + int64(b)
	sign := int64(1)
	if sum < 0 {
		sign = -1
	}
	return int32((sum + sign) / 2)
}
