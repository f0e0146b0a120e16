package tflite

import (
	"math"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Operators that move data without arithmetic: RESHAPE, SQUEEZE,
// EXPAND_DIMS, PAD, PADV2, TRANSPOSE, CONCATENATION, SPLIT, SPLIT_V. They
// work on bytes, so every element type is supported.

func init() {
	registerOp(opReshape, prepareReshape)
	registerOp(opSqueeze, prepareReshape)
	registerOp(opExpandDims, prepareReshape)
	registerOp(opPad, preparePad)
	registerOp(opPadv2, preparePad)
	registerOp(opTranspose, prepareTranspose)
	registerOp(opConcatenation, prepareConcat)
	registerOp(opSplit, func(c *prepCtx) (kernel, error) { return prepareSplit(c, false) })
	registerOp(opSplitV, func(c *prepCtx) (kernel, error) { return prepareSplit(c, true) })
}

type copyKernel struct{ in, out int }

func (k *copyKernel) eval(bufs [][]byte) error {
	copy(bufs[k.out], bufs[k.in])
	return nil
}

// prepareReshape serves every op that only changes the shape: the output
// shape in the file is authoritative and must hold the same elements.
func prepareReshape(c *prepCtx) (kernel, error) {
	if len(c.op.inputs) < 1 || len(c.op.outputs) != 1 {
		return nil, badf("has %d inputs and %d outputs, want at least 1 and 1", len(c.op.inputs), len(c.op.outputs))
	}
	in, inIdx, err := c.input(0)
	if err != nil {
		return nil, err
	}
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if in.dtype != out.dtype || in.dtype == runtime.Invalid {
		return nil, badf("input %q is %s, output %q is %s", in.name, in.dtype, out.name, out.dtype)
	}
	if in.numElements() != out.numElements() {
		return nil, badf("input %q shape %v and output %q shape %v differ in size", in.name, in.shape, out.name, out.shape)
	}
	if in.dtype != runtime.Float32 && in.quant != nil && !sameQuant(in, out) && len(in.quant.Scale) == 1 {
		return nil, unsupportedf("input and output quantization differ (%q, %q)", in.name, out.name)
	}
	return &copyKernel{in: inIdx, out: outIdx}, nil
}

// constInts reads a constant int32 or int64 tensor.
func constInts(t *tensor) ([]int, error) {
	if t.data == nil {
		return nil, unsupportedf("tensor %q is computed at run time; the engine needs it constant", t.name)
	}
	n := t.numElements()
	out := make([]int, n)
	switch t.dtype {
	case runtime.Int32:
		for i, v := range asI32(t.data)[:n] {
			out[i] = int(v)
		}
	case runtime.Int64:
		for i, v := range asI64(t.data)[:n] {
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, badf("tensor %q holds %d, out of range", t.name, v)
			}
			out[i] = int(v)
		}
	default:
		return nil, badf("tensor %q is %s, want int32 or int64", t.name, t.dtype)
	}
	return out, nil
}

// strides returns row-major element strides of shape.
func strides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

type padKernel struct {
	in, out   int
	inShape   []int
	outStride []int
	before    []int
	esize     int
	fill      []byte // one element of the pad value
	// lastPadded is the last dimension with padding (0 when none).
	lastPadded int
}

func preparePad(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 3, 1); err != nil {
		return nil, err
	}
	in, inIdx, err := c.input(0)
	if err != nil {
		return nil, err
	}
	pt, _, err := c.input(1)
	if err != nil {
		return nil, err
	}
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if in.dtype != out.dtype || in.dtype.Size() == 0 {
		return nil, badf("input %q is %s, output %q is %s", in.name, in.dtype, out.name, out.dtype)
	}
	pads, err := constInts(pt)
	if err != nil {
		return nil, err
	}
	r := len(in.shape)
	if len(pads) != 2*r {
		return nil, badf("paddings %q has %d values for rank %d", pt.name, len(pads), r)
	}
	want := make([]int, r)
	before := make([]int, r)
	for i := range r {
		if pads[2*i] < 0 || pads[2*i+1] < 0 {
			return nil, badf("negative padding %v", pads)
		}
		before[i] = pads[2*i]
		want[i] = in.shape[i] + pads[2*i] + pads[2*i+1]
	}
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	k := &padKernel{in: inIdx, out: outIdx, inShape: in.shape, outStride: strides(want), before: before, esize: in.dtype.Size()}
	for d := range r {
		if pads[2*d] != 0 || pads[2*d+1] != 0 {
			k.lastPadded = d
		}
	}
	k.fill = make([]byte, k.esize)
	if isQ8(in.dtype) {
		if !sameQuant(in, out) {
			return nil, unsupportedf("input and output quantization differ (%q, %q)", in.name, out.name)
		}
		_, zp, err := perTensor(out)
		if err != nil {
			return nil, err
		}
		k.fill[0] = byte(zp)
	}
	if cv, _ := c.optInput(2); cv != nil {
		if cv.dtype != in.dtype || cv.numElements() != 1 || cv.data == nil {
			return nil, unsupportedf("constant_values %q must be one constant %s", cv.name, in.dtype)
		}
		copy(k.fill, cv.data)
	}
	return k, nil
}

func (k *padKernel) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	if allZero(k.fill) {
		clear(out)
	} else {
		fillPattern(out, k.fill)
	}
	r := len(k.inShape)
	if r == 0 {
		copy(out, in)
		return nil
	}
	// Dimensions after the last padded one are copied as one block.
	d0 := k.lastPadded
	block := k.esize
	for d := d0; d < r; d++ {
		block *= k.inShape[d]
	}
	if block == 0 {
		return nil
	}
	var idx [maxRank]int
	for src := 0; src < len(in); src += block {
		off := 0
		for d := 0; d < d0; d++ {
			off += (idx[d] + k.before[d]) * k.outStride[d]
		}
		off += k.before[d0] * k.outStride[d0]
		off *= k.esize
		copy(out[off:off+block], in[src:src+block])
		for d := d0 - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < k.inShape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return nil
}

// fillPattern repeats pattern over b, doubling the filled prefix.
func fillPattern(b, pattern []byte) {
	if len(b) == 0 {
		return
	}
	n := copy(b, pattern)
	for n < len(b) {
		n += copy(b[n:], b[:n])
	}
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

type transposeKernel struct {
	in, out  int
	outShape []int
	// inStride[d] is the input stride of output dimension d.
	inStride []int
	esize    int
}

func prepareTranspose(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	in, inIdx, err := c.input(0)
	if err != nil {
		return nil, err
	}
	pt, _, err := c.input(1)
	if err != nil {
		return nil, err
	}
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if in.dtype != out.dtype || in.dtype.Size() == 0 {
		return nil, badf("input %q is %s, output %q is %s", in.name, in.dtype, out.name, out.dtype)
	}
	perm, err := constInts(pt)
	if err != nil {
		return nil, err
	}
	r := len(in.shape)
	if len(perm) != r || r == 0 {
		return nil, badf("perm %v does not fit rank %d", perm, r)
	}
	seen := make([]bool, r)
	want := make([]int, r)
	is := strides(in.shape)
	k := &transposeKernel{in: inIdx, out: outIdx, inStride: make([]int, r), esize: in.dtype.Size()}
	for d, p := range perm {
		if p < 0 {
			p += r
		}
		if p < 0 || p >= r || seen[p] {
			return nil, badf("perm %v is not a permutation of %d dimensions", perm, r)
		}
		seen[p] = true
		want[d] = in.shape[p]
		k.inStride[d] = is[p]
	}
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	k.outShape = want
	return k, nil
}

func (k *transposeKernel) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	es := k.esize
	r := len(k.outShape)
	n := len(out) / es
	var idx [maxRank]int
	src := 0
	last := k.outShape[r-1]
	lastStride := k.inStride[r-1] * es
	for o := 0; o < n; o += last {
		s := src * es
		dst := out[o*es : (o+last)*es]
		if es == 1 {
			for i := range dst {
				dst[i] = in[s]
				s += lastStride
			}
		} else {
			for i := 0; i < len(dst); i += es {
				copy(dst[i:i+es], in[s:s+es])
				s += lastStride
			}
		}
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			src += k.inStride[d]
			if idx[d] < k.outShape[d] {
				break
			}
			src -= idx[d] * k.inStride[d]
			idx[d] = 0
		}
	}
	return nil
}

// axisSplit describes slicing a tensor along one axis into parts.
type axisSplit struct {
	outer int   // product of dimensions before the axis
	inner int   // bytes per step along the axis (product after it × size)
	parts []int // buffer indices
	lens  []int // axis length of each part
	whole int   // buffer index of the concatenated tensor
	// requant converts quantized parts whose scale or zero point differ
	// from the whole (CONCATENATION only); nil entries copy.
	requant []*rescale
	u8      bool
}

// rescale is ConcatenationWithScaling's per-input float affine map.
type rescale struct {
	scale, bias float32
	zp          int32
}

func normAxis(axis, rank int) (int, error) {
	if axis < 0 {
		axis += rank
	}
	if axis < 0 || axis >= rank {
		return 0, badf("axis %d outside rank %d", axis, rank)
	}
	return axis, nil
}

const concatAxis = 0

func prepareConcat(c *prepCtx) (kernel, error) {
	if len(c.op.inputs) < 1 || len(c.op.outputs) != 1 {
		return nil, badf("has %d inputs and %d outputs", len(c.op.inputs), len(c.op.outputs))
	}
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	o := c.opts()
	axis, err := normAxis(int(o.i32(concatAxis, 0)), len(out.shape))
	if err != nil {
		return nil, err
	}
	if a := o.u8(1, 0); a != actNone {
		return nil, unsupportedf("fused activation %d on CONCATENATION", a)
	}
	k := &axisSplit{whole: outIdx, u8: out.dtype == runtime.Uint8}
	sum := 0
	for i := range c.op.inputs {
		t, idx, err := c.input(i)
		if err != nil {
			return nil, err
		}
		if t.dtype != out.dtype || len(t.shape) != len(out.shape) {
			return nil, badf("input %q (%s%v) does not fit output %q (%s%v)", t.name, t.dtype, t.shape, out.name, out.dtype, out.shape)
		}
		for d := range t.shape {
			if d != axis && t.shape[d] != out.shape[d] {
				return nil, badf("input %q shape %v does not fit output shape %v on axis %d", t.name, t.shape, out.shape, axis)
			}
		}
		sum += t.shape[axis]
		k.parts = append(k.parts, idx)
		k.lens = append(k.lens, t.shape[axis])
		var rs *rescale
		if isQ8(t.dtype) && !sameQuant(t, out) {
			is, izp, err := perTensor(t)
			if err != nil {
				return nil, err
			}
			os, ozp, err := perTensor(out)
			if err != nil {
				return nil, err
			}
			inv := 1 / os
			scale := is * inv
			rs = &rescale{scale: scale, bias: -float32(izp) * scale, zp: ozp}
		}
		k.requant = append(k.requant, rs)
	}
	if sum != out.shape[axis] {
		return nil, badf("inputs add up to %d along axis %d, output %q has %d", sum, axis, out.name, out.shape[axis])
	}
	k.setStrides(out, axis)
	return k, nil
}

func (k *axisSplit) setStrides(t *tensor, axis int) {
	k.outer, k.inner = 1, t.dtype.Size()
	for d, n := range t.shape {
		if d < axis {
			k.outer *= n
		} else if d > axis {
			k.inner *= n
		}
	}
}

// eval for CONCATENATION.
func (k *axisSplit) eval(bufs [][]byte) error {
	out := bufs[k.whole]
	off := 0
	for o := range k.outer {
		for i, p := range k.parts {
			n := k.lens[i] * k.inner
			src := bufs[p][o*n : (o+1)*n]
			dst := out[off : off+n]
			off += n
			if rs := k.requant[i]; rs != nil {
				rs.apply(src, dst, k.u8)
				continue
			}
			copy(dst, src)
		}
	}
	return nil
}

func (r *rescale) apply(src, dst []byte, u8 bool) {
	lo, hi := int32(-128), int32(127)
	if u8 {
		lo, hi = 0, 255
	}
	for j, b := range src {
		v := int32(b)
		if !u8 {
			v = int32(int8(b))
		}
		q := int32(roundf(float32(v)*r.scale+r.bias)) + r.zp
		dst[j] = byte(min(max(q, lo), hi))
	}
}

type splitKernel struct{ axisSplit }

const splitNum = 0

func prepareSplit(c *prepCtx, v bool) (kernel, error) {
	var in, axisT *tensor
	var inIdx int
	var err error
	var sizes []int
	if v {
		if err := c.counts(3, 3, len(c.op.outputs)); err != nil {
			return nil, err
		}
		if in, inIdx, err = c.input(0); err != nil {
			return nil, err
		}
		st, _, _ := c.input(1)
		if sizes, err = constInts(st); err != nil {
			return nil, err
		}
		axisT, _, _ = c.input(2)
	} else {
		if err := c.counts(2, 2, len(c.op.outputs)); err != nil {
			return nil, err
		}
		axisT, _, _ = c.input(0)
		if in, inIdx, err = c.input(1); err != nil {
			return nil, err
		}
	}
	ax, err := constInts(axisT)
	if err != nil {
		return nil, err
	}
	if len(ax) != 1 {
		return nil, badf("axis %q must hold one value", axisT.name)
	}
	axis, err := normAxis(ax[0], len(in.shape))
	if err != nil {
		return nil, err
	}
	n := len(c.op.outputs)
	if n == 0 {
		return nil, badf("has no outputs")
	}
	dim := in.shape[axis]
	if !v {
		if dim%n != 0 {
			return nil, badf("cannot split %d into %d equal parts", dim, n)
		}
		sizes = make([]int, n)
		for i := range sizes {
			sizes[i] = dim / n
		}
	} else {
		if len(sizes) != n {
			return nil, badf("size_splits has %d values for %d outputs", len(sizes), n)
		}
		rest, free := dim, -1
		for i, s := range sizes {
			if s == -1 && free < 0 {
				free = i
				continue
			}
			if s < 0 {
				return nil, badf("size_splits %v", sizes)
			}
			rest -= s
		}
		if free >= 0 {
			sizes[free] = rest
		}
		if rest < 0 || free < 0 && rest != 0 {
			return nil, badf("size_splits %v do not add up to %d", sizes, dim)
		}
	}
	k := &splitKernel{axisSplit{whole: inIdx}}
	for i := range n {
		t, idx, err := c.output(i)
		if err != nil {
			return nil, err
		}
		want := append([]int(nil), in.shape...)
		want[axis] = sizes[i]
		if err := checkShape(t, want); err != nil {
			return nil, err
		}
		if t.dtype != in.dtype {
			return nil, badf("output %q is %s, input is %s", t.name, t.dtype, in.dtype)
		}
		if isQ8(t.dtype) && !sameQuant(t, in) {
			return nil, unsupportedf("output %q quantization differs from the input's", t.name)
		}
		k.parts = append(k.parts, idx)
		k.lens = append(k.lens, sizes[i])
	}
	k.setStrides(in, axis)
	return k, nil
}

func (k *splitKernel) eval(bufs [][]byte) error {
	in := bufs[k.whole]
	off := 0
	for o := range k.outer {
		for i, p := range k.parts {
			n := k.lens[i] * k.inner
			copy(bufs[p][o*n:(o+1)*n], in[off:off+n])
			off += n
		}
	}
	return nil
}
