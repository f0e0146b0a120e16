package tflite

import "math/bits"

// Fixed-point helpers after gemmlowp's fixedpoint.h, for TFLite's
// reference integer softmax. A value in Qm.n has m integer bits and
// n = 31-m fractional bits in an int32; products of Qa and Qb are Q(a+b).

// satShiftLeft is SaturatingRoundingMultiplyByPOT with a positive
// exponent: a left shift that saturates.
func satShiftLeft(x int32, e int) int32 {
	threshold := int32(1)<<(31-e) - 1
	switch {
	case x > threshold:
		return 1<<31 - 1
	case x < -threshold:
		return -1 << 31
	}
	return x << e
}

// roundingHalfSum is (a+b)/2 rounded half away from zero.
func roundingHalfSum(a, b int32) int32 {
	sum := int64(a) + int64(b)
	sign := int64(1)
	if sum < 0 {
		sign = -1
	}
	return int32((sum + sign) / 2)
}

// expOnIntervalNegQuarterTo0 returns exp(a) for a in [-1/4, 0), Q0.31 in
// and out: a Taylor expansion around -1/8.
func expOnIntervalNegQuarterTo0(a int32) int32 {
	const constantTerm = 1895147668 // exp(-1/8)
	const oneThird = 715827883
	x := a + 1<<28 // a + 1/8
	x2 := srdhm(x, x)
	x3 := srdhm(x2, x)
	x4 := srdhm(x2, x2)
	x4Over4 := rdbpot(x4, 2)
	t := rdbpot(srdhm(x4Over4+x3, oneThird)+x2, 1)
	return constantTerm + srdhm(constantTerm, x+t)
}

// expOnNegativeValues returns exp(a) in Q0.31 for a <= 0 in Q5.26: the
// remainder modulo 1/4 by Taylor expansion, the rest by multiplying in
// exp(-2^k) for each set bit.
func expOnNegativeValues(a int32) int32 { return expNeg(a, 5) }

// expNeg is gemmlowp's exp_on_negative_values for a in Q(intBits).(31-intBits),
// intBits at most 5 (the clamp below -32 of wider formats is not needed).
func expNeg(a int32, intBits int) int32 {
	fractionalBits := 31 - intBits
	oneQuarter := int32(1) << (fractionalBits - 2)
	modQuarter := (a & (oneQuarter - 1)) - oneQuarter
	result := expOnIntervalNegQuarterTo0(satShiftLeft(modQuarter, intBits))
	remainder := modQuarter - a
	for _, b := range [...]struct {
		exp  int
		mult int32
	}{{-2, 1672461947}, {-1, 1302514674}, {0, 790015084}, {1, 290630308}, {2, 39332535}, {3, 720401}, {4, 242}} {
		if intBits > b.exp && remainder&(int32(1)<<(fractionalBits+b.exp)) != 0 {
			result = srdhm(result, b.mult)
		}
	}
	if a == 0 {
		result = 1<<31 - 1
	}
	return result
}

// logisticQ4 is gemmlowp::logistic for a in Q4.27, result in Q0.31.
func logisticQ4(a int32) int32 {
	if a == 0 {
		return 1 << 30
	}
	abs := a
	if a < 0 {
		abs = -a
	}
	pos := oneOverOnePlusX(expNeg(-abs, 4))
	if a > 0 {
		return pos
	}
	return 1<<31 - 1 - pos
}

// oneMinusXOverOnePlusX returns (1-a)/(1+a) for a in [0, 1), Q0.31.
func oneMinusXOverOnePlusX(a int32) int32 {
	half := roundingHalfSum(a, 1<<31-1)
	const c48over17, cNeg32over17 = 1515870810, -1010580540
	x := c48over17 + srdhm(half, cNeg32over17)
	for range 3 {
		oneMinus := int32(1<<29) - srdhm(half, x)
		x += satShiftLeft(srdhm(x, oneMinus), 2)
	}
	return satShiftLeft(x-1<<29, 2)
}

// tanhQ4 is gemmlowp::tanh for a in Q4.27, result in Q0.31.
func tanhQ4(a int32) int32 {
	if a == 0 {
		return 0
	}
	n := a
	if a > 0 {
		n = -a
	}
	// neg_tanh_on_negative_values: exp(2n), the doubling exact by reading
	// the Q4 raw value as Q5.
	t := oneMinusXOverOnePlusX(expNeg(n, 5))
	if a < 0 {
		return -t
	}
	return t
}

// oneOverOnePlusX returns 1/(1+a) for a in [0, 1), Q0.31 in and out, by
// three Newton-Raphson steps in Q2.29.
func oneOverOnePlusX(a int32) int32 {
	half := roundingHalfSum(a, 1<<31-1)
	const c48over17, cNeg32over17 = 1515870810, -1010580540
	x := c48over17 + srdhm(half, cNeg32over17)
	for range 3 {
		oneMinus := int32(1<<29) - srdhm(half, x)
		x += satShiftLeft(srdhm(x, oneMinus), 2)
	}
	return satShiftLeft(x, 1)
}

// reciprocal is TFLite's GetReciprocal: 1/x for x in Q(integerBits), as
// a Q0.31 scale and the number of bits x has above one.
func reciprocal(x int32, integerBits int) (int32, int) {
	headroomPlusOne := bits.LeadingZeros32(uint32(x))
	over := integerBits - headroomPlusOne
	shiftedMinusOne := int32((uint32(x) << headroomPlusOne) - (1 << 31))
	return oneOverOnePlusX(shiftedMinusOne), over
}
