package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Element-wise binary operators with NumPy broadcasting: ADD, SUB, MUL,
// DIV, FLOOR_DIV, SQUARED_DIFFERENCE, MAXIMUM, MINIMUM. Quantized ADD and
// SUB follow reference/integer_ops/add.h (inputs scaled to a common 2^20
// fixed point) or, in LiteRT arithmetic, XNNPACK's qs8 vadd.

func init() {
	for _, code := range []int32{opAdd, opSub, opMul, opDiv, opFloorDiv, opSquaredDifference, opMaximum, opMinimum} {
		registerOp(code, prepareBinary)
	}
}

// broadcast walks an output shape with the matching offsets of two inputs.
type broadcast struct {
	shape  []int // output shape, at least rank 1
	sa, sb []int // input strides per output dimension, 0 where broadcast
	same   bool  // both inputs have the output's shape
}

func newBroadcast(a, b []int) (broadcast, error) {
	r := max(len(a), len(b), 1)
	bc := broadcast{shape: make([]int, r), sa: make([]int, r), sb: make([]int, r)}
	pad := func(s []int) []int {
		p := make([]int, r)
		for i := range p {
			p[i] = 1
		}
		copy(p[r-len(s):], s)
		return p
	}
	pa, pb := pad(a), pad(b)
	sa, sb := strides(pa), strides(pb)
	for i := range r {
		switch {
		case pa[i] == pb[i]:
			bc.shape[i] = pa[i]
		case pa[i] == 1:
			bc.shape[i] = pb[i]
		case pb[i] == 1:
			bc.shape[i] = pa[i]
		default:
			return bc, badf("shapes %v and %v do not broadcast", a, b)
		}
		if pa[i] != 1 || bc.shape[i] == 1 {
			bc.sa[i] = sa[i]
		}
		if pb[i] != 1 || bc.shape[i] == 1 {
			bc.sb[i] = sb[i]
		}
	}
	bc.same = equalInts(a, b)
	return bc, nil
}

// checkBroadcastOut accepts an output with the broadcast shape, or one of
// the same size (a rank-0 output of a 1-element result, say).
func checkBroadcastOut(out *tensor, shape []int) error {
	if out.numElements() != runtime.NumElements(shape) {
		return badf("output %q has shape %v, the inputs broadcast to %v", out.name, out.shape, shape)
	}
	return nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// each calls f for every row along the last dimension with the starting
// offsets into a, b and the output, and the row's strides in a and b.
func (bc *broadcast) each(f func(ia, ib, io, n, da, db int)) {
	r := len(bc.shape)
	n := bc.shape[r-1]
	if bc.same {
		f(0, 0, 0, runtime.NumElements(bc.shape), 1, 1)
		return
	}
	total := runtime.NumElements(bc.shape)
	if n == 0 || total == 0 {
		return
	}
	var idx [maxRank]int
	ia, ib := 0, 0
	for io := 0; io < total; io += n {
		f(ia, ib, io, n, bc.sa[r-1], bc.sb[r-1])
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			ia += bc.sa[d]
			ib += bc.sb[d]
			if idx[d] < bc.shape[d] {
				break
			}
			ia -= idx[d] * bc.sa[d]
			ib -= idx[d] * bc.sb[d]
			idx[d] = 0
		}
	}
}

type binaryOp struct {
	code       int32
	a, b, out  int
	bc         broadcast
	dtype      runtime.DType
	flo, fhi   float32
	lo, hi     int32
	za, zb, zo int32
	// Reference ADD/SUB: inputs shifted left 20 and scaled to a common
	// scale, then the sum scaled to the output.
	ra, rb, ro requant
	// XNNPACK ADD/SUB: a single fixed-point affine form.
	xnn      bool
	xbias    int32
	xma, xmb int32
	xshift   uint
	rmul     requant // MUL
	// Reference ADD/SUB: each input's scaled value depends on its 8-bit
	// value alone, so it is tabulated (indexed by the raw byte); SUB
	// stores the second table negated.
	lutA, lutB *[256]int32
}

// Options slot of the fused activation in AddOptions, SubOptions,
// MulOptions and DivOptions.
const binAct = 0

func prepareBinary(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	a, ai, err := c.input(0)
	if err != nil {
		return nil, err
	}
	b, bi, err := c.input(1)
	if err != nil {
		return nil, err
	}
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	code := c.op.code
	allowed := q8AndFloat
	if code != opSquaredDifference {
		allowed = []runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int32}
	}
	if err := sameType(allowed, a, b, out); err != nil {
		return nil, err
	}
	k := &binaryOp{code: code, a: ai, b: bi, out: oi, dtype: a.dtype}
	if k.bc, err = newBroadcast(a.shape, b.shape); err != nil {
		return nil, err
	}
	if err := checkBroadcastOut(out, k.bc.shape); err != nil {
		return nil, err
	}
	act := uint8(actNone)
	switch code {
	case opAdd, opSub, opMul, opDiv:
		act = c.opts().u8(binAct, 0)
	}
	if err := c.opts().err(); err != nil {
		return nil, err
	}
	switch a.dtype {
	case runtime.Float32:
		var ok bool
		if k.flo, k.fhi, ok = frange(act); !ok {
			return nil, unsupportedf("fused activation %d", act)
		}
		return k, nil
	case runtime.Int32:
		if act != actNone {
			return nil, unsupportedf("fused activation %d on int32", act)
		}
		if code == opSquaredDifference {
			return nil, unsupportedf("int32 %s", c.name)
		}
		return k, nil
	}
	sa, za, err := perTensor(a)
	if err != nil {
		return nil, err
	}
	sb, zb, err := perTensor(b)
	if err != nil {
		return nil, err
	}
	so, zo, err := perTensor(out)
	if err != nil {
		return nil, err
	}
	k.za, k.zb, k.zo = za, zb, zo
	qmin, qmax := qlimits(out.dtype)
	var ok bool
	if k.lo, k.hi, ok = qrange(act, so, zo, qmin, qmax); !ok {
		return nil, unsupportedf("fused activation %d", act)
	}
	switch code {
	case opAdd, opSub:
		if c.arith == arithLiteRT {
			k.xnn = true
			if err := k.xnnAdd(sa, sb, so, code == opSub); err != nil {
				return nil, err
			}
			return k, nil
		}
		twiceMax := float64(2 * max(sa, sb))
		single := c.single
		k.ra = newRequant(float64(sa)/twiceMax, single)
		k.rb = newRequant(float64(sb)/twiceMax, single)
		k.ro = newRequant(twiceMax/float64(float32(1<<20)*so), single)
		k.lutA, k.lutB = new([256]int32), new([256]int32)
		for v := range 256 {
			x := int32(v)
			if a.dtype == runtime.Int8 {
				x = int32(int8(v))
			}
			k.lutA[v] = k.ra.apply((x - k.za) << 20)
			k.lutB[v] = k.rb.apply((x - k.zb) << 20)
			if code == opSub {
				k.lutB[v] = -k.lutB[v]
			}
		}
	case opMul:
		k.rmul = c.arith.rescale(sa, sb, so)
	case opMaximum, opMinimum:
		if !sameQuant(a, out) || !sameQuant(b, out) {
			return nil, unsupportedf("quantized %s needs equal input and output quantization", c.name)
		}
	default:
		return nil, unsupportedf("quantized %s", c.name)
	}
	return k, nil
}

// xnnAdd derives XNNPACK's qs8 add parameters
// (xnn_init_qs8_add_minmax_scalar_params): both inputs' scales relative to
// the output become integer multipliers of at most 21 bits sharing one
// shift, with rounding and zero points folded into a bias.
func (k *binaryOp) xnnAdd(sa, sb, so float32, sub bool) error {
	as := sa / so
	bs := sb / so
	if sub {
		bs = -bs
	}
	absA, absB := float32(math.Abs(float64(as))), float32(math.Abs(float64(bs)))
	mx := max(absA, absB)
	if absA < 0x1p-10 || absB < 0x1p-10 || mx >= 0x1p+8 {
		return unsupportedf("input/output scale ratios %g, %g are outside what LiteRT's add supports", absA, absB)
	}
	exp := int32(math.Float32bits(mx)>>23) - 127
	shift := uint(20 - exp)
	mul := func(s float32) int32 {
		scaled := math.Float32frombits(math.Float32bits(s) + uint32(shift)<<23)
		return int32(math.RoundToEven(float64(scaled)))
	}
	ma, mb := mul(absA), mul(absB)
	if as < 0 {
		ma = -ma
	}
	if bs < 0 {
		mb = -mb
	}
	k.xma, k.xmb, k.xshift = ma, mb, shift
	k.xbias = int32(1)<<(shift-1) - ma*k.za - mb*k.zb
	return nil
}

func (k *binaryOp) eval(bufs [][]byte) error {
	a, b, o := bufs[k.a], bufs[k.b], bufs[k.out]
	switch k.dtype {
	case runtime.Float32:
		binaryF(k, asF32(a), asF32(b), asF32(o))
	case runtime.Int32:
		binaryI32(k, asI32(a), asI32(b), asI32(o))
	case runtime.Int8:
		binaryQ(k, asI8(a), asI8(b), asI8(o))
	case runtime.Uint8:
		binaryQ(k, a, b, o)
	}
	return nil
}

func binaryQ[T int8 | uint8](k *binaryOp, a, b, o []T) {
	if k.bc.same && (k.code == opAdd || k.code == opSub) {
		addSame(k, a, b, o)
		return
	}
	k.bc.each(func(ia, ib, io, n, da, db int) {
		out := o[io : io+n]
		for i := range out {
			x := int32(a[ia+i*da])
			y := int32(b[ib+i*db])
			var v int32
			switch {
			case k.xnn:
				v = (k.xbias+x*k.xma+y*k.xmb)>>k.xshift + k.zo
			case k.code == opAdd || k.code == opSub:
				v = k.ro.apply(k.lutA[uint8(x)]+k.lutB[uint8(y)]) + k.zo
			case k.code == opMul:
				v = k.rmul.apply((x-k.za)*(y-k.zb)) + k.zo
			case k.code == opMaximum:
				v = max(x, y)
			case k.code == opMinimum:
				v = min(x, y)
			}
			out[i] = T(min(max(v, k.lo), k.hi))
		}
	})
}

// addSame is ADD/SUB of equal shapes (residual connections), without the
// broadcast walk and with the arithmetic chosen once.
func addSame[T int8 | uint8](k *binaryOp, a, b, o []T) {
	b, o = b[:len(a)], o[:len(a)]
	if k.xnn {
		for i, x := range a {
			v := (k.xbias+int32(x)*k.xma+int32(b[i])*k.xmb)>>k.xshift + k.zo
			o[i] = T(min(max(v, k.lo), k.hi))
		}
		return
	}
	la, lb := k.lutA, k.lutB
	for i, x := range a {
		v := k.ro.apply(la[uint8(x)]+lb[uint8(b[i])]) + k.zo
		o[i] = T(min(max(v, k.lo), k.hi))
	}
}

func binaryF(k *binaryOp, a, b, o []float32) {
	k.bc.each(func(ia, ib, io, n, da, db int) {
		out := o[io : io+n]
		for i := range out {
			x, y := a[ia+i*da], b[ib+i*db]
			var v float32
			switch k.code {
			case opAdd:
				v = x + y
			case opSub:
				v = x - y
			case opMul:
				v = x * y
			case opDiv:
				v = x / y
			case opFloorDiv:
				v = float32(math.Floor(float64(x / y)))
			case opSquaredDifference:
				v = (x - y) * (x - y)
			case opMaximum:
				v = max(x, y)
			case opMinimum:
				v = min(x, y)
			}
			out[i] = min(max(v, k.flo), k.fhi)
		}
	})
}

func binaryI32(k *binaryOp, a, b, o []int32) {
	k.bc.each(func(ia, ib, io, n, da, db int) {
		out := o[io : io+n]
		for i := range out {
			x, y := a[ia+i*da], b[ib+i*db]
			var v int32
			switch k.code {
			case opAdd:
				v = x + y
			case opSub:
				v = x - y
			case opMul:
				v = x * y
			case opDiv, opFloorDiv:
				if y == 0 {
					v = 0 // TFLite leaves this undefined; never trap.
					break
				}
				v = x / y
				if k.code == opFloorDiv && (x%y != 0) && ((x < 0) != (y < 0)) {
					v--
				}
			case opMaximum:
				v = max(x, y)
			case opMinimum:
				v = min(x, y)
			}
			out[i] = v
		}
	})
}
