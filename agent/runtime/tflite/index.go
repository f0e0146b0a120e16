package tflite

import (
	"fmt"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Operators that select or arrange elements by index: SLICE,
// STRIDED_SLICE, GATHER, GATHER_ND, PACK, UNPACK, SHAPE, FILL, ARG_MAX,
// ARG_MIN. They copy elements as bytes, so they work for every element
// type and leave quantization untouched.

func init() {
	registerOp(opSlice, prepareSlice)
	registerOp(opStridedSlice, prepareStridedSlice)
	registerOp(opGather, prepareGather)
	registerOp(opGatherNd, prepareGatherND)
	registerOp(opPack, preparePack)
	registerOp(opUnpack, prepareUnpack)
	registerOp(opShape, prepareShape)
	registerOp(opFill, prepareFill)
	registerOp(opArgMax, prepareArg)
	registerOp(opArgMin, prepareArg)
}

// strided copies a strided window of the input: output element idx reads
// input offset Σ (start[d] + idx[d]·step[d]) · stride[d].
type strided struct {
	in, out  int
	shape    []int // output window shape, one entry per input dimension
	start    []int
	step     []int
	inStride []int
	esize    int
}

func (k *strided) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	es := k.esize
	r := len(k.shape)
	n := runtime.NumElements(k.shape)
	if n == 0 {
		return nil
	}
	if r == 0 {
		copy(out, in[:es])
		return nil
	}
	var idx [maxRank]int
	base := 0
	for d := range r {
		base += k.start[d] * k.inStride[d]
	}
	src := base
	last := k.shape[r-1]
	lstep := k.step[r-1] * k.inStride[r-1]
	for o := 0; o < n; o += last {
		s := src
		if lstep == 1 {
			copy(out[o*es:(o+last)*es], in[s*es:(s+last)*es])
		} else {
			for i := range last {
				copy(out[(o+i)*es:(o+i+1)*es], in[s*es:(s+1)*es])
				s += lstep
			}
		}
		for d := r - 2; d >= 0; d-- {
			idx[d]++
			src += k.step[d] * k.inStride[d]
			if idx[d] < k.shape[d] {
				break
			}
			src -= idx[d] * k.step[d] * k.inStride[d]
			idx[d] = 0
		}
	}
	return nil
}

func (c *prepCtx) sameElems(in, out *tensor) error {
	if in.dtype != out.dtype || in.dtype.Size() == 0 {
		return badf("input %q is %s, output %q is %s", in.name, in.dtype, out.name, out.dtype)
	}
	if isQ8(in.dtype) && !sameQuant(in, out) {
		return unsupportedf("input and output quantization differ (%q, %q)", in.name, out.name)
	}
	return nil
}

func prepareSlice(c *prepCtx) (kernel, error) {
	if err := c.counts(3, 3, 1); err != nil {
		return nil, err
	}
	in, ii, _ := c.input(0)
	bt, _, _ := c.input(1)
	st, _, _ := c.input(2)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := c.sameElems(in, out); err != nil {
		return nil, err
	}
	begin, err := constInts(bt)
	if err != nil {
		return nil, err
	}
	size, err := constInts(st)
	if err != nil {
		return nil, err
	}
	r := len(in.shape)
	if len(begin) != r || len(size) != r {
		return nil, badf("begin %v and size %v do not fit rank %d", begin, size, r)
	}
	k := &strided{in: ii, out: oi, shape: make([]int, r), start: begin, step: make([]int, r), inStride: strides(in.shape), esize: in.dtype.Size()}
	for d := range r {
		if size[d] == -1 {
			size[d] = in.shape[d] - begin[d]
		}
		if begin[d] < 0 || size[d] < 0 || begin[d]+size[d] > in.shape[d] {
			return nil, badf("slice begin %v size %v outside shape %v", begin, size, in.shape)
		}
		k.shape[d], k.step[d] = size[d], 1
	}
	if err := checkShape(out, k.shape); err != nil {
		return nil, err
	}
	return k, nil
}

// StridedSliceOptions slots.
const (
	ssBeginMask, ssEndMask, ssEllipsisMask, ssNewAxisMask, ssShrinkMask, ssOffset = 0, 1, 2, 3, 4, 5
)

func prepareStridedSlice(c *prepCtx) (kernel, error) {
	if err := c.counts(3, 4, 1); err != nil {
		return nil, err
	}
	in, ii, _ := c.input(0)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := c.sameElems(in, out); err != nil {
		return nil, err
	}
	var vals [3][]int
	for j := range 3 {
		t, _, err := c.input(j + 1)
		if j == 2 && err != nil {
			break
		}
		if err != nil {
			return nil, err
		}
		if vals[j], err = constInts(t); err != nil {
			return nil, err
		}
	}
	r := len(in.shape)
	begin, end, step := vals[0], vals[1], vals[2]
	if step == nil {
		step = make([]int, r)
		for i := range step {
			step[i] = 1
		}
	}
	if len(begin) != r || len(end) != r || len(step) != r {
		return nil, unsupportedf("begin/end/strides of %d, %d, %d values for rank %d", len(begin), len(end), len(step), r)
	}
	o := c.opts()
	bm, em := o.i32(ssBeginMask, 0), o.i32(ssEndMask, 0)
	if o.i32(ssEllipsisMask, 0) != 0 || o.i32(ssNewAxisMask, 0) != 0 {
		return nil, unsupportedf("ellipsis_mask and new_axis_mask")
	}
	sm := o.i32(ssShrinkMask, 0)
	offset := o.bool(ssOffset, false)
	if err := o.err(); err != nil {
		return nil, err
	}
	k := &strided{in: ii, out: oi, shape: make([]int, r), start: make([]int, r), step: step, inStride: strides(in.shape), esize: in.dtype.Size()}
	var want []int
	for d := range r {
		s, dim := step[d], in.shape[d]
		if s == 0 {
			return nil, badf("stride 0 on dimension %d", d)
		}
		b, e := begin[d], end[d]
		if offset {
			e += b
		}
		clampIdx := func(v int) int {
			if v < 0 {
				v += dim
			}
			if s > 0 {
				return min(max(v, 0), dim)
			}
			return min(max(v, -1), dim-1)
		}
		if bm&(1<<d) != 0 {
			if s > 0 {
				b = 0
			} else {
				b = dim - 1
			}
		} else {
			b = clampIdx(b)
		}
		shrink := sm&(1<<d) != 0
		switch {
		case shrink:
			if begin[d] < -dim || begin[d] >= dim {
				return nil, badf("shrink index %d outside dimension %d of size %d", begin[d], d, dim)
			}
			e, s = b+1, 1
			k.step[d] = 1
		case em&(1<<d) != 0:
			if s > 0 {
				e = dim
			} else {
				e = -1
			}
		default:
			e = clampIdx(e)
		}
		n := 0
		if s > 0 && e > b {
			n = (e - b + s - 1) / s
		} else if s < 0 && b > e {
			n = (b - e - s - 1) / -s
		}
		k.start[d], k.shape[d] = b, n
		if !shrink {
			want = append(want, n)
		}
	}
	if err := checkShape(out, want); err != nil && out.numElements() != runtime.NumElements(want) {
		return nil, err
	}
	return k, nil
}

type gatherK struct {
	params, indices, out int
	outer, axisDim       int
	inner                int // bytes per gathered slice
	nIdx                 int
	idx64                bool
}

const gatherAxis, gatherBatchDims = 0, 1

func readIndex(b []byte, i int, i64 bool) int {
	if i64 {
		return int(asI64(b)[i])
	}
	return int(asI32(b)[i])
}

// gatherOperands checks what GATHER and GATHER_ND share: params, integer
// indices and an output of the params' element type.
func gatherOperands(c *prepCtx) (p *tensor, pi int, it *tensor, ii int, out *tensor, oi int, err error) {
	if err = c.counts(2, 2, 1); err != nil {
		return
	}
	p, pi, _ = c.input(0)
	it, ii, _ = c.input(1)
	if out, oi, err = c.output(0); err != nil {
		return
	}
	if err = c.sameElems(p, out); err != nil {
		return
	}
	if it.dtype != runtime.Int32 && it.dtype != runtime.Int64 {
		err = badf("indices %q are %s, want int32 or int64", it.name, it.dtype)
	}
	return
}

func prepareGather(c *prepCtx) (kernel, error) {
	p, pi, it, ii, out, oi, err := gatherOperands(c)
	if err != nil {
		return nil, err
	}
	o := c.opts()
	axis, err := normAxis(int(o.i32(gatherAxis, 0)), len(p.shape))
	if err != nil {
		return nil, err
	}
	if o.i32(gatherBatchDims, 0) != 0 {
		return nil, unsupportedf("batch_dims")
	}
	want := append(append(append([]int(nil), p.shape[:axis]...), it.shape...), p.shape[axis+1:]...)
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	k := &gatherK{params: pi, indices: ii, out: oi, outer: 1, axisDim: p.shape[axis], inner: p.dtype.Size(), nIdx: it.numElements(), idx64: it.dtype == runtime.Int64}
	for d, n := range p.shape {
		if d < axis {
			k.outer *= n
		} else if d > axis {
			k.inner *= n
		}
	}
	return k, nil
}

func (k *gatherK) eval(bufs [][]byte) error {
	p, ix, out := bufs[k.params], bufs[k.indices], bufs[k.out]
	o := 0
	for b := range k.outer {
		for j := range k.nIdx {
			i := readIndex(ix, j, k.idx64)
			if i < 0 || i >= k.axisDim {
				return fmt.Errorf("%w: GATHER index %d outside 0..%d", ErrRuntimeIndex, i, k.axisDim-1)
			}
			src := (b*k.axisDim + i) * k.inner
			copy(out[o:o+k.inner], p[src:src+k.inner])
			o += k.inner
		}
	}
	return nil
}

type gatherNDK struct {
	params, indices, out int
	depth                int   // index tuple length
	pshape, pstride      []int // first depth dims of params
	inner                int   // bytes per gathered slice
	esz                  int   // bytes per element
	n                    int   // number of tuples
	idx64                bool
}

func prepareGatherND(c *prepCtx) (kernel, error) {
	p, pi, it, ii, out, oi, err := gatherOperands(c)
	if err != nil {
		return nil, err
	}
	if len(it.shape) == 0 {
		return nil, badf("indices %q are a scalar", it.name)
	}
	depth := it.shape[len(it.shape)-1]
	if depth > len(p.shape) {
		return nil, badf("index depth %d exceeds params rank %d", depth, len(p.shape))
	}
	want := append(append([]int(nil), it.shape[:len(it.shape)-1]...), p.shape[depth:]...)
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	st := strides(p.shape)
	k := &gatherNDK{params: pi, indices: ii, out: oi, depth: depth, pshape: p.shape[:depth], pstride: st[:depth], inner: p.dtype.Size(), esz: p.dtype.Size(), idx64: it.dtype == runtime.Int64}
	for _, n := range p.shape[depth:] {
		k.inner *= n
	}
	if depth > 0 {
		k.n = it.numElements() / depth
	} else {
		k.n = runtime.NumElements(it.shape[:len(it.shape)-1])
	}
	return k, nil
}

func (k *gatherNDK) eval(bufs [][]byte) error {
	p, ix, out := bufs[k.params], bufs[k.indices], bufs[k.out]
	for j := range k.n {
		off := 0
		for d := range k.depth {
			i := readIndex(ix, j*k.depth+d, k.idx64)
			if i < 0 || i >= k.pshape[d] {
				return fmt.Errorf("%w: GATHER_ND index %d outside 0..%d", ErrRuntimeIndex, i, k.pshape[d]-1)
			}
			off += i * k.pstride[d]
		}
		src := off * k.esz
		copy(out[j*k.inner:(j+1)*k.inner], p[src:src+k.inner])
	}
	return nil
}

const packValues, packAxis = 0, 1

func preparePack(c *prepCtx) (kernel, error) {
	if len(c.op.inputs) < 1 || len(c.op.outputs) != 1 {
		return nil, badf("has %d inputs and %d outputs", len(c.op.inputs), len(c.op.outputs))
	}
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	first, _, err := c.input(0)
	if err != nil {
		return nil, err
	}
	axis, err := normAxis(int(c.opts().i32(packAxis, 0)), len(first.shape)+1)
	if err != nil {
		return nil, err
	}
	want := append(append(append([]int(nil), first.shape[:axis]...), len(c.op.inputs)), first.shape[axis:]...)
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	k := &axisSplit{whole: oi}
	for i := range c.op.inputs {
		t, idx, err := c.input(i)
		if err != nil {
			return nil, err
		}
		if !equalInts(t.shape, first.shape) {
			return nil, badf("input %q shape %v differs from %v", t.name, t.shape, first.shape)
		}
		if err := c.sameElems(t, out); err != nil {
			return nil, err
		}
		k.parts = append(k.parts, idx)
		k.lens = append(k.lens, 1)
		k.requant = append(k.requant, nil)
	}
	k.setStrides(out, axis)
	return k, nil
}

const unpackNum, unpackAxis = 0, 1

func prepareUnpack(c *prepCtx) (kernel, error) {
	if err := c.counts(1, 1, len(c.op.outputs)); err != nil {
		return nil, err
	}
	in, ii, _ := c.input(0)
	axis, err := normAxis(int(c.opts().i32(unpackAxis, 0)), len(in.shape))
	if err != nil {
		return nil, err
	}
	if len(c.op.outputs) != in.shape[axis] {
		return nil, badf("%d outputs for dimension of size %d", len(c.op.outputs), in.shape[axis])
	}
	want := append(append([]int(nil), in.shape[:axis]...), in.shape[axis+1:]...)
	k := &splitKernel{axisSplit{whole: ii}}
	for i := range c.op.outputs {
		t, idx, err := c.output(i)
		if err != nil {
			return nil, err
		}
		if err := checkShape(t, want); err != nil {
			return nil, err
		}
		if err := c.sameElems(in, t); err != nil {
			return nil, err
		}
		k.parts = append(k.parts, idx)
		k.lens = append(k.lens, 1)
	}
	k.setStrides(in, axis)
	return k, nil
}

type constOut struct {
	out  int
	data []byte
}

func (k *constOut) eval(bufs [][]byte) error {
	copy(bufs[k.out], k.data)
	return nil
}

func prepareShape(c *prepCtx) (kernel, error) {
	if err := c.counts(1, 1, 1); err != nil {
		return nil, err
	}
	in, _, _ := c.input(0)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if err := checkShape(out, []int{len(in.shape)}); err != nil {
		return nil, err
	}
	k := &constOut{out: oi, data: make([]byte, out.size)}
	for i, d := range in.shape {
		switch out.dtype {
		case runtime.Int32:
			asI32(k.data)[i] = int32(d)
		case runtime.Int64:
			asI64(k.data)[i] = int64(d)
		default:
			return nil, badf("output %q is %s, want int32 or int64", out.name, out.dtype)
		}
	}
	return k, nil
}

type fillK struct {
	value, out int
	esize      int
}

func prepareFill(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	dims, _, _ := c.input(0)
	v, vi, _ := c.input(1)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	if d, err := constInts(dims); err == nil {
		if err := checkShape(out, d); err != nil {
			return nil, err
		}
	}
	if v.dtype != out.dtype || v.numElements() != 1 || v.dtype.Size() == 0 {
		return nil, badf("value %q must be one %s", v.name, out.dtype)
	}
	return &fillK{value: vi, out: oi, esize: v.dtype.Size()}, nil
}

func (k *fillK) eval(bufs [][]byte) error {
	v, out := bufs[k.value], bufs[k.out]
	for i := 0; i+k.esize <= len(out); i += k.esize {
		copy(out[i:i+k.esize], v)
	}
	return nil
}

type argK struct {
	in, out             int
	isMax               bool
	dtype, otype        runtime.DType
	outer, axisN, inner int
}

func prepareArg(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 2, 1); err != nil {
		return nil, err
	}
	in, ii, _ := c.input(0)
	at, _, _ := c.input(1)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	ax, err := constInts(at)
	if err != nil {
		return nil, err
	}
	if len(ax) != 1 {
		return nil, badf("axis must hold one value")
	}
	axis, err := normAxis(ax[0], len(in.shape))
	if err != nil {
		return nil, err
	}
	if err := sameType([]runtime.DType{runtime.Float32, runtime.Int8, runtime.Uint8, runtime.Int32}, in); err != nil {
		return nil, err
	}
	if out.dtype != runtime.Int32 && out.dtype != runtime.Int64 {
		return nil, badf("output %q is %s, want int32 or int64", out.name, out.dtype)
	}
	want := append(append([]int(nil), in.shape[:axis]...), in.shape[axis+1:]...)
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	k := &argK{in: ii, out: oi, isMax: c.op.code == opArgMax, dtype: in.dtype, otype: out.dtype, outer: 1, axisN: in.shape[axis], inner: 1}
	if k.axisN == 0 {
		return nil, badf("reduces an empty axis")
	}
	for d, n := range in.shape {
		if d < axis {
			k.outer *= n
		} else if d > axis {
			k.inner *= n
		}
	}
	return k, nil
}

func (k *argK) eval(bufs [][]byte) error {
	in, out := bufs[k.in], bufs[k.out]
	for o := range k.outer {
		for i := range k.inner {
			best := 0
			bv := load(k.dtype, in, o*k.axisN*k.inner+i)
			for a := 1; a < k.axisN; a++ {
				v := load(k.dtype, in, (o*k.axisN+a)*k.inner+i)
				if (k.isMax && v > bv) || (!k.isMax && v < bv) {
					best, bv = a, v
				}
			}
			if k.otype == runtime.Int64 {
				asI64(out)[o*k.inner+i] = int64(best)
			} else {
				asI32(out)[o*k.inner+i] = int32(best)
			}
		}
	}
	return nil
}
