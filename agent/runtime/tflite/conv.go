package tflite

import (
	"github.com/edgefleet/edgefleet/agent/runtime"
)

// CONV_2D and DEPTHWISE_CONV_2D, after TFLite's reference kernels
// (reference/integer_ops/conv.h, depthwise_conv.h and the uint8/float
// versions): padding positions contribute nothing, which equals padding
// with the input zero point.

func init() {
	registerOp(opConv2d, prepareConv)
	registerOp(opDepthwiseConv2d, prepareDepthwise)
}

// Options slots (schema.fbs Conv2DOptions / DepthwiseConv2DOptions).
const (
	convPadding, convStrideW, convStrideH, convAct, convDilW, convDilH = 0, 1, 2, 3, 4, 5

	dwPadding, dwStrideW, dwStrideH, dwMult, dwAct, dwDilW, dwDilH = 0, 1, 2, 3, 4, 5, 6
)

// pixelBlock is how many output pixels a conv packs and multiplies at once;
// small enough that the packed block stays in L1.
const pixelBlock = 16

type convGeom struct {
	n, ih, iw, ic  int
	oh, ow, oc     int
	kh, kw         int
	sh, sw, dh, dw int
	ph, pw         int
}

func outSize(padding uint8, in, filter, stride, dil int) int {
	eff := (filter-1)*dil + 1
	if padding == padSame {
		return (in + stride - 1) / stride
	}
	return (in + stride - eff) / stride
}

func padBefore(stride, dil, in, filter, out int) int {
	eff := (filter-1)*dil + 1
	total := (out-1)*stride + eff - in
	return max(total, 0) / 2
}

// foldPads removes each PAD that only feeds a VALID CONV_2D or
// DEPTHWISE_CONV_2D, padding height and width with the input's zero point
// (PAD's value for quantized tensors, 0 for float), and gives its padding
// to the convolution, which treats taps outside the input as contributing
// nothing: the same result without copying the tensor. Models converted
// from PyTorch have one such PAD per strided or 3x3 convolution.
func foldPads(g *graph) {
	uses := make(map[int]int)
	for _, op := range g.ops {
		for _, t := range op.inputs {
			if t >= 0 {
				uses[t]++
			}
		}
	}
	for _, t := range g.outputs {
		uses[t] += 2
	}
	producer := make(map[int]int)
	for i, op := range g.ops {
		for _, t := range op.outputs {
			producer[t] = i
		}
	}
	drop := make([]bool, len(g.ops))
	for j := range g.ops {
		cv := &g.ops[j]
		if (cv.code != opConv2d && cv.code != opDepthwiseConv2d) || cv.custom != "" || len(cv.inputs) == 0 || cv.inputs[0] < 0 {
			continue
		}
		t := cv.inputs[0]
		i, ok := producer[t]
		if !ok || i >= j || uses[t] != 1 {
			continue
		}
		pad := &g.ops[i]
		if pad.code != opPad || pad.custom != "" || len(pad.inputs) != 2 || len(pad.outputs) != 1 || pad.inputs[1] < 0 {
			continue
		}
		// Both options tables keep padding in slot 0.
		if p, err := cv.opts.f.u8(&cv.opts.t, convPadding, 0); !cv.opts.ok || err != nil || p != padValid {
			continue
		}
		in, out := &g.tensors[pad.inputs[0]], &g.tensors[t]
		pads, err := constInts(&g.tensors[pad.inputs[1]])
		if err != nil || len(in.shape) != 4 || len(pads) != 8 || in.dtype != out.dtype || (in.quant != nil && !sameQuant(in, out)) {
			continue
		}
		if pads[0] != 0 || pads[1] != 0 || pads[6] != 0 || pads[7] != 0 || min(pads[2], pads[3], pads[4], pads[5]) < 0 {
			continue
		}
		cv.inputs = append([]int{pad.inputs[0]}, cv.inputs[1:]...)
		cv.foldedPad = &[4]int{pads[2], pads[3], pads[4], pads[5]}
		drop[i] = true
	}
	kept := g.ops[:0]
	for i, op := range g.ops {
		if !drop[i] {
			kept = append(kept, op)
		}
	}
	g.ops = kept
}

func (g *convGeom) compute(padding uint8) error {
	if padding != padSame && padding != padValid {
		return badf("padding %d is neither SAME nor VALID", padding)
	}
	g.oh = outSize(padding, g.ih, g.kh, g.sh, g.dh)
	g.ow = outSize(padding, g.iw, g.kw, g.sw, g.dw)
	if g.oh <= 0 || g.ow <= 0 {
		return badf("filter %dx%d (dilation %dx%d) does not fit input %dx%d", g.kh, g.kw, g.dh, g.dw, g.ih, g.iw)
	}
	g.ph = padBefore(g.sh, g.dh, g.ih, g.kh, g.oh)
	g.pw = padBefore(g.sw, g.dw, g.iw, g.kw, g.ow)
	return nil
}

func rank4(t *tensor, what string) error {
	if len(t.shape) != 4 {
		return badf("%s %q has shape %v, want rank 4", what, t.name, t.shape)
	}
	return nil
}

// convParams holds what CONV_2D and DEPTHWISE_CONV_2D prepare alike.
type convParams struct {
	g                convGeom
	in, filter, bias *tensor
	out              *tensor
	inIdx, outIdx    int
	act              uint8
	quant            bool
	izp              int32
	wzp              []int32 // per output channel (0 for symmetric int8)
	st               outStage
	biasI32          []int32
	biasF32          []float32
	flo, fhi         float32
}

func (c *prepCtx) convCommon(depthwise bool) (*convParams, error) {
	if err := c.counts(2, 3, 1); err != nil {
		return nil, err
	}
	p := &convParams{}
	var err error
	if p.in, p.inIdx, err = c.input(0); err != nil {
		return nil, err
	}
	if p.filter, _, err = c.input(1); err != nil {
		return nil, err
	}
	p.bias, _ = c.optInput(2)
	if p.out, p.outIdx, err = c.output(0); err != nil {
		return nil, err
	}
	if err := rank4(p.in, "input"); err != nil {
		return nil, err
	}
	if err := rank4(p.filter, "filter"); err != nil {
		return nil, err
	}
	if p.filter.data == nil {
		return nil, unsupportedf("filter %q is computed at run time; only constant filters are supported", p.filter.name)
	}
	if err := sameType(q8AndFloat, p.in, p.out); err != nil {
		return nil, err
	}
	if p.filter.dtype != p.in.dtype {
		return nil, unsupportedf("filter %q is %s with %s activations (hybrid and 16x8 modes are not supported)", p.filter.name, p.filter.dtype, p.in.dtype)
	}
	o := c.opts()
	g := &p.g
	g.n, g.ih, g.iw, g.ic = p.in.shape[0], p.in.shape[1], p.in.shape[2], p.in.shape[3]
	g.kh, g.kw = p.filter.shape[1], p.filter.shape[2]
	var padding uint8
	if depthwise {
		padding = o.u8(dwPadding, 0)
		g.sw, g.sh = o.positive(dwStrideW, 0, "stride_w"), o.positive(dwStrideH, 0, "stride_h")
		g.dw, g.dh = o.positive(dwDilW, 1, "dilation_w_factor"), o.positive(dwDilH, 1, "dilation_h_factor")
		p.act = o.u8(dwAct, 0)
		g.oc = p.filter.shape[3]
	} else {
		padding = o.u8(convPadding, 0)
		g.sw, g.sh = o.positive(convStrideW, 0, "stride_w"), o.positive(convStrideH, 0, "stride_h")
		g.dw, g.dh = o.positive(convDilW, 1, "dilation_w_factor"), o.positive(convDilH, 1, "dilation_h_factor")
		p.act = o.u8(convAct, 0)
		g.oc = p.filter.shape[0]
	}
	if err := o.err(); err != nil {
		return nil, err
	}
	if fp := c.op.foldedPad; fp != nil {
		// A PAD folded into this VALID convolution: compute the geometry
		// on the padded size, then read the unpadded input with the PAD's
		// leading padding (padding contributes nothing either way).
		g.ih += fp[0] + fp[1]
		g.iw += fp[2] + fp[3]
		err := g.compute(padding)
		g.ih -= fp[0] + fp[1]
		g.iw -= fp[2] + fp[3]
		if err != nil {
			return nil, err
		}
		g.ph, g.pw = fp[0], fp[2]
	} else if err := g.compute(padding); err != nil {
		return nil, err
	}
	if err := checkShape(p.out, []int{g.n, g.oh, g.ow, g.oc}); err != nil {
		return nil, err
	}
	if p.bias != nil {
		if len(p.bias.shape) != 1 || p.bias.shape[0] != g.oc || p.bias.data == nil {
			return nil, badf("bias %q has shape %v, want constant [%d]", p.bias.name, p.bias.shape, g.oc)
		}
	}
	if p.in.dtype == runtime.Float32 {
		var ok bool
		if p.flo, p.fhi, ok = frange(p.act); !ok {
			return nil, unsupportedf("fused activation %d", p.act)
		}
		p.biasF32 = make([]float32, g.oc)
		if p.bias != nil {
			if p.bias.dtype != runtime.Float32 {
				return nil, badf("bias %q is %s, want float32", p.bias.name, p.bias.dtype)
			}
			copy(p.biasF32, asF32(p.bias.data))
		}
		return p, nil
	}
	p.quant = true
	return p, c.quantConv(p)
}

// quantConv derives per-channel multipliers as
// PopulateConvolutionQuantizationParams does (kernel_util.cc).
func (c *prepCtx) quantConv(p *convParams) error {
	is, izp, err := perTensor(p.in)
	if err != nil {
		return err
	}
	os, ozp, err := perTensor(p.out)
	if err != nil {
		return err
	}
	p.izp = izp
	oc := p.g.oc
	fq := p.filter.quant
	if fq == nil || len(fq.Scale) == 0 {
		return badf("filter %q has no quantization parameters", p.filter.name)
	}
	if len(fq.Scale) != 1 && len(fq.Scale) != oc {
		return badf("filter %q has %d scales for %d output channels", p.filter.name, len(fq.Scale), oc)
	}
	lo, hi := qlimits(p.out.dtype)
	var ok bool
	p.st.zp = ozp
	if p.st.lo, p.st.hi, ok = qrange(p.act, os, ozp, lo, hi); !ok {
		return unsupportedf("fused activation %d", p.act)
	}
	p.st.rq = make([]requant, oc)
	p.wzp = make([]int32, oc)
	for ch := range oc {
		j := 0
		if len(fq.Scale) > 1 {
			j = ch
		}
		p.st.rq[ch] = c.arith.rescale(is, fq.Scale[j], os)
		p.wzp[ch] = int32(fq.ZeroPoint[j])
		if p.filter.dtype == runtime.Int8 && len(fq.Scale) > 1 && p.wzp[ch] != 0 {
			return unsupportedf("filter %q is per-channel with zero point %d (TFLite requires 0)", p.filter.name, p.wzp[ch])
		}
	}
	p.st.finish(oc)
	p.biasI32 = make([]int32, oc)
	if p.bias != nil {
		if p.bias.dtype != runtime.Int32 {
			return unsupportedf("bias %q is %s, want int32", p.bias.name, p.bias.dtype)
		}
		copy(p.biasI32, asI32(p.bias.data))
	}
	return nil
}

// filterValue reads a filter element as an integer minus its zero point.
func filterValue(t *tensor, i int, zp int32) int32 {
	if t.dtype == runtime.Uint8 {
		return int32(t.data[i]) - zp
	}
	return int32(int8(t.data[i])) - zp
}

type convQ struct {
	convParams
	groups, icg, ocg int
	k, kp            int
	w                []int16 // [oc][kp], filter minus zero point
	packBuf, accBuf  int
	u8               bool
}

type convF struct {
	convParams
	groups, icg, ocg int
	k                int
	w                []float32 // [oc][k]
	packBuf, accBuf  int
}

func prepareConv(c *prepCtx) (kernel, error) {
	p, err := c.convCommon(false)
	if err != nil {
		return nil, err
	}
	g := &p.g
	icg := p.filter.shape[3]
	if icg <= 0 || g.ic%icg != 0 || g.oc%(g.ic/icg) != 0 {
		return nil, badf("filter %q shape %v does not divide input channels %d into groups", p.filter.name, p.filter.shape, g.ic)
	}
	groups := g.ic / icg
	k := g.kh * g.kw * icg
	c.macs = int64(g.n) * int64(g.oh*g.ow) * int64(g.oc) * int64(k)
	if !p.quant {
		kc := &convF{convParams: *p, groups: groups, icg: icg, ocg: g.oc / groups, k: k}
		kc.w = make([]float32, g.oc*k)
		copy(kc.w, asF32(p.filter.data))
		kc.packBuf = c.addScratch(pixelBlock * k * 4)
		kc.accBuf = c.addScratch(pixelBlock * kc.ocg * 4)
		return kc, nil
	}
	kp := alignK(k)
	kc := &convQ{convParams: *p, groups: groups, icg: icg, ocg: g.oc / groups, k: k, kp: kp, u8: p.in.dtype == runtime.Uint8}
	kc.w = make([]int16, g.oc*kp)
	for oc := range g.oc {
		for i := range k {
			kc.w[oc*kp+i] = int16(filterValue(p.filter, oc*k+i, p.wzp[oc]))
		}
	}
	kc.packBuf = c.addScratch(pixelBlock * kp * 2)
	kc.accBuf = c.addScratch(pixelBlock * kc.ocg * 4)
	return kc, nil
}

func (k *convQ) eval(bufs [][]byte) error {
	if k.u8 {
		convQRun(k, bufs[k.inIdx], bufs[k.outIdx], bufs)
	} else {
		convQRun(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]), bufs)
	}
	return nil
}

func convQRun[T int8 | uint8](k *convQ, in, out []T, bufs [][]byte) {
	g := &k.g
	pack := asI16(bufs[k.packBuf])
	acc := asI32(bufs[k.accBuf])
	npix := g.oh * g.ow
	for b := range g.n {
		inB := in[b*g.ih*g.iw*g.ic : (b+1)*g.ih*g.iw*g.ic]
		outB := out[b*npix*g.oc : (b+1)*npix*g.oc]
		for p0 := 0; p0 < npix; p0 += pixelBlock {
			pn := min(pixelBlock, npix-p0)
			for grp := range k.groups {
				im2colQ(k, inB, pack, p0, pn, grp)
				oc0 := grp * k.ocg
				gemmI16(pack, pn, k.w[oc0*k.kp:(oc0+k.ocg)*k.kp], k.ocg, k.kp, acc)
				for p := range pn {
					row := outB[(p0+p)*g.oc+oc0 : (p0+p)*g.oc+oc0+k.ocg]
					requantRow(&k.st, acc[p*k.ocg:p*k.ocg+k.ocg], k.biasI32, oc0, row)
				}
			}
		}
	}
}

// im2colQ packs the receptive fields of pn output pixels from p0 into rows
// of kp int16 values (input minus zero point, 0 for padding).
func im2colQ[T int8 | uint8](k *convQ, in []T, pack []int16, p0, pn, grp int) {
	g := &k.g
	c0 := grp * k.icg
	for p := range pn {
		oy, ox := (p0+p)/g.ow, (p0+p)%g.ow
		row := pack[p*k.kp : (p+1)*k.kp]
		i := 0
		for ky := range g.kh {
			iy := oy*g.sh - g.ph + ky*g.dh
			for kx := range g.kw {
				ix := ox*g.sw - g.pw + kx*g.dw
				dst := row[i : i+k.icg]
				i += k.icg
				if iy < 0 || iy >= g.ih || ix < 0 || ix >= g.iw {
					clear(dst)
					continue
				}
				src := in[(iy*g.iw+ix)*g.ic+c0:]
				src = src[:len(dst)]
				for c, v := range src {
					dst[c] = int16(int32(v) - k.izp)
				}
			}
		}
		clear(row[i:])
	}
}

func (k *convF) eval(bufs [][]byte) error {
	g := &k.g
	in, out := asF32(bufs[k.inIdx]), asF32(bufs[k.outIdx])
	pack, acc := asF32(bufs[k.packBuf]), asF32(bufs[k.accBuf])
	npix := g.oh * g.ow
	for b := range g.n {
		inB := in[b*g.ih*g.iw*g.ic : (b+1)*g.ih*g.iw*g.ic]
		outB := out[b*npix*g.oc : (b+1)*npix*g.oc]
		for p0 := 0; p0 < npix; p0 += pixelBlock {
			pn := min(pixelBlock, npix-p0)
			for grp := range k.groups {
				c0 := grp * k.icg
				for p := range pn {
					oy, ox := (p0+p)/g.ow, (p0+p)%g.ow
					row := pack[p*k.k : (p+1)*k.k]
					i := 0
					for ky := range g.kh {
						iy := oy*g.sh - g.ph + ky*g.dh
						for kx := range g.kw {
							ix := ox*g.sw - g.pw + kx*g.dw
							dst := row[i : i+k.icg]
							i += k.icg
							if iy < 0 || iy >= g.ih || ix < 0 || ix >= g.iw {
								clear(dst)
								continue
							}
							copy(dst, inB[(iy*g.iw+ix)*g.ic+c0:])
						}
					}
				}
				oc0 := grp * k.ocg
				gemmF32(pack, pn, k.w[oc0*k.k:(oc0+k.ocg)*k.k], k.ocg, k.k, acc)
				for p := range pn {
					row := outB[(p0+p)*g.oc+oc0 : (p0+p)*g.oc+oc0+k.ocg]
					ar := acc[p*k.ocg : p*k.ocg+k.ocg]
					for j := range row {
						row[j] = min(max(ar[j]+k.biasF32[oc0+j], k.flo), k.fhi)
					}
				}
			}
		}
	}
	return nil
}

type dwQ struct {
	convParams
	mult   int
	w      []int32 // [kh*kw][oc], filter minus zero point
	accBuf int
	u8     bool
}

type dwF struct {
	convParams
	mult   int
	w      []float32
	accBuf int
}

func prepareDepthwise(c *prepCtx) (kernel, error) {
	p, err := c.convCommon(true)
	if err != nil {
		return nil, err
	}
	g := &p.g
	if p.filter.shape[0] != 1 || g.ic == 0 || g.oc%g.ic != 0 {
		return nil, badf("depthwise filter %q shape %v does not fit %d input channels", p.filter.name, p.filter.shape, g.ic)
	}
	mult := g.oc / g.ic
	n := g.kh * g.kw * g.oc
	c.macs = int64(g.n) * int64(g.oh*g.ow) * int64(n)
	if !p.quant {
		k := &dwF{convParams: *p, mult: mult, w: make([]float32, n)}
		copy(k.w, asF32(p.filter.data))
		k.accBuf = c.addScratch(g.oc * 4)
		return k, nil
	}
	if mult > 1 {
		// A depth multiplier makes this a grouped convolution with one
		// input channel per group, which the GEMM path runs well (the
		// first layer of person_detect: 1 channel to 8).
		return depthwiseAsGrouped(c, p, mult), nil
	}
	k := &dwQ{convParams: *p, mult: mult, w: make([]int32, n), u8: p.in.dtype == runtime.Uint8}
	for i := range n {
		k.w[i] = filterValue(p.filter, i, p.wzp[i%g.oc])
	}
	k.accBuf = c.addScratch(g.oc * 4)
	return k, nil
}

// depthwiseAsGrouped builds the convQ equivalent of a quantized
// depthwise convolution: groups = input channels, one input channel and
// mult output channels each, the filter [1][kh][kw][oc] transposed to
// [oc][kh][kw][1].
func depthwiseAsGrouped(c *prepCtx, p *convParams, mult int) *convQ {
	g := &p.g
	k := g.kh * g.kw
	kp := alignK(k)
	kc := &convQ{convParams: *p, groups: g.ic, icg: 1, ocg: mult, k: k, kp: kp, u8: p.in.dtype == runtime.Uint8}
	kc.w = make([]int16, g.oc*kp)
	for oc := range g.oc {
		for t := range k {
			kc.w[oc*kp+t] = int16(filterValue(p.filter, t*g.oc+oc, p.wzp[oc]))
		}
	}
	kc.packBuf = c.addScratch(pixelBlock * kp * 2)
	kc.accBuf = c.addScratch(pixelBlock * mult * 4)
	return kc
}

func (k *dwQ) eval(bufs [][]byte) error {
	if k.u8 {
		dwQRun(k, bufs[k.inIdx], bufs[k.outIdx], asI32(bufs[k.accBuf]))
	} else {
		dwQRun(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]), asI32(bufs[k.accBuf]))
	}
	return nil
}

func dwQRun[T int8 | uint8](k *dwQ, in, out []T, acc []int32) {
	g := &k.g
	izp := k.izp
	for b := range g.n {
		for oy := range g.oh {
			for ox := range g.ow {
				if dwPixelAsm(k, acc, in[b*g.ih*g.iw*g.ic:(b+1)*g.ih*g.iw*g.ic], oy, ox) {
					requantRow(&k.st, acc, k.biasI32, 0, out[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc])
					continue
				}
				clear(acc)
				for ky := range g.kh {
					iy := oy*g.sh - g.ph + ky*g.dh
					if iy < 0 || iy >= g.ih {
						continue
					}
					for kx := range g.kw {
						ix := ox*g.sw - g.pw + kx*g.dw
						if ix < 0 || ix >= g.iw {
							continue
						}
						x := in[((b*g.ih+iy)*g.iw+ix)*g.ic:]
						x = x[:g.ic]
						w := k.w[(ky*g.kw+kx)*g.oc:]
						w = w[:g.oc]
						a := acc[:g.oc]
						if k.mult == 1 {
							w, a = w[:len(x)], a[:len(x)]
							for c, v := range x {
								a[c] += (int32(v) - izp) * w[c]
							}
						} else {
							for c, v := range x {
								xv := int32(v) - izp
								for j := range k.mult {
									a[c*k.mult+j] += xv * w[c*k.mult+j]
								}
							}
						}
					}
				}
				requantRow(&k.st, acc, k.biasI32, 0, out[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc])
			}
		}
	}
}

func (k *dwF) eval(bufs [][]byte) error {
	g := &k.g
	in, out, acc := asF32(bufs[k.inIdx]), asF32(bufs[k.outIdx]), asF32(bufs[k.accBuf])
	for b := range g.n {
		for oy := range g.oh {
			for ox := range g.ow {
				copy(acc, k.biasF32)
				for ky := range g.kh {
					iy := oy*g.sh - g.ph + ky*g.dh
					if iy < 0 || iy >= g.ih {
						continue
					}
					for kx := range g.kw {
						ix := ox*g.sw - g.pw + kx*g.dw
						if ix < 0 || ix >= g.iw {
							continue
						}
						x := in[((b*g.ih+iy)*g.iw+ix)*g.ic:][:g.ic]
						w := k.w[(ky*g.kw+kx)*g.oc:][:g.oc]
						for c, v := range x {
							for j := range k.mult {
								acc[c*k.mult+j] += v * w[c*k.mult+j]
							}
						}
					}
				}
				o := out[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc]
				for c := range o {
					o[c] = min(max(acc[c], k.flo), k.fhi)
				}
			}
		}
	}
	return nil
}
