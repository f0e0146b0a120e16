package tflite

import "github.com/edgefleet/edgefleet/agent/runtime"

// TRANSPOSE_CONV after reference_ops::TransposeConv and
// reference_integer_ops::TransposeConv: every input pixel scatters
// input × filter into the output window it covers; quantized sums are
// int32 and requantized per output channel at the end.

func init() { registerOp(opTransposeConv, prepareTransposeConv) }

const tcPadding, tcStrideW, tcStrideH, tcAct = 0, 1, 2, 3

type transposeConv struct {
	g        convGeom // ih/iw is the op's input, oh/ow its output
	in, out  int
	w        []int32 // [oc][kh][kw][ic], minus zero point
	wf       []float32
	biasI    []int32
	biasF    []float32
	izp      int32
	st       outStage
	flo, fhi float32
	accBuf   int
	dtype    runtime.DType
}

func prepareTransposeConv(c *prepCtx) (kernel, error) {
	if err := c.counts(3, 4, 1); err != nil {
		return nil, err
	}
	shapeT, _, _ := c.input(0)
	filter, _, _ := c.input(1)
	in, ii, _ := c.input(2)
	bias, _ := c.optInput(3)
	out, oi, err := c.output(0)
	if err != nil {
		return nil, err
	}
	os, err := constInts(shapeT)
	if err != nil {
		return nil, err
	}
	if err := checkShape(out, os); err != nil {
		return nil, err
	}
	if err := rank4(in, "input"); err != nil {
		return nil, err
	}
	if err := rank4(filter, "filter"); err != nil {
		return nil, err
	}
	if filter.data == nil {
		return nil, unsupportedf("filter %q is computed at run time", filter.name)
	}
	if err := sameType(q8AndFloat, in, out, filter); err != nil {
		return nil, err
	}
	o := c.opts()
	padding := o.u8(tcPadding, 0)
	k := &transposeConv{in: ii, out: oi, dtype: in.dtype}
	g := &k.g
	g.sw, g.sh = o.positive(tcStrideW, 0, "stride_w"), o.positive(tcStrideH, 0, "stride_h")
	act := o.u8(tcAct, 0)
	if err := o.err(); err != nil {
		return nil, err
	}
	g.n, g.ih, g.iw, g.ic = in.shape[0], in.shape[1], in.shape[2], in.shape[3]
	g.oc, g.kh, g.kw = filter.shape[0], filter.shape[1], filter.shape[2]
	g.oh, g.ow = out.shape[1], out.shape[2]
	if filter.shape[3] != g.ic || out.shape[0] != g.n || out.shape[3] != g.oc {
		return nil, badf("input %v, filter %v and output %v do not agree", in.shape, filter.shape, out.shape)
	}
	// The padding is the one a convolution from the output back to the
	// input would use.
	if padding != padSame && padding != padValid {
		return nil, badf("padding %d", padding)
	}
	if outSize(padding, g.oh, g.kh, g.sh, 1) != g.ih || outSize(padding, g.ow, g.kw, g.sw, 1) != g.iw {
		return nil, badf("output %dx%d does not invert to input %dx%d with stride %dx%d", g.oh, g.ow, g.ih, g.iw, g.sh, g.sw)
	}
	g.ph = padBefore(g.sh, 1, g.oh, g.kh, g.ih)
	g.pw = padBefore(g.sw, 1, g.ow, g.kw, g.iw)
	c.macs = int64(g.n*g.ih*g.iw) * int64(g.kh*g.kw*g.ic*g.oc)
	nacc := g.n * g.oh * g.ow * g.oc
	if bias != nil && (bias.numElements() != g.oc || bias.data == nil) {
		return nil, badf("bias %q has shape %v, want constant [%d]", bias.name, bias.shape, g.oc)
	}
	if in.dtype == runtime.Float32 {
		var ok bool
		if k.flo, k.fhi, ok = frange(act); !ok {
			return nil, unsupportedf("fused activation %d", act)
		}
		k.wf = asF32(filter.data)
		k.biasF = make([]float32, g.oc)
		if bias != nil {
			copy(k.biasF, asF32(bias.data))
		}
		k.accBuf = c.addScratch(nacc * 4)
		return k, nil
	}
	p := &convParams{g: *g, in: in, filter: filter, out: out, act: act}
	if err := c.quantConv(p); err != nil {
		return nil, err
	}
	k.izp, k.st = p.izp, p.st
	n := len(filter.data)
	k.w = make([]int32, n)
	per := g.kh * g.kw * g.ic
	for i := range n {
		k.w[i] = filterValue(filter, i, p.wzp[i/per])
	}
	k.biasI = p.biasI32
	if bias != nil && bias.dtype != runtime.Int32 {
		return nil, unsupportedf("bias %q is %s, want int32", bias.name, bias.dtype)
	}
	k.accBuf = c.addScratch(nacc * 4)
	return k, nil
}

func (k *transposeConv) eval(bufs [][]byte) error {
	switch k.dtype {
	case runtime.Float32:
		k.evalF(asF32(bufs[k.in]), asF32(bufs[k.out]), asF32(bufs[k.accBuf]))
	case runtime.Int8:
		transposeConvQ(k, asI8(bufs[k.in]), asI8(bufs[k.out]), asI32(bufs[k.accBuf]))
	case runtime.Uint8:
		transposeConvQ(k, bufs[k.in], bufs[k.out], asI32(bufs[k.accBuf]))
	}
	return nil
}

func transposeConvQ[T int8 | uint8](k *transposeConv, in, out []T, acc []int32) {
	g := &k.g
	acc = acc[:g.n*g.oh*g.ow*g.oc]
	clear(acc)
	for b := range g.n {
		for iy := range g.ih {
			for ix := range g.iw {
				x := in[((b*g.ih+iy)*g.iw+ix)*g.ic:][:g.ic]
				for ky := range g.kh {
					oy := iy*g.sh - g.ph + ky
					if oy < 0 || oy >= g.oh {
						continue
					}
					for kx := range g.kw {
						ox := ix*g.sw - g.pw + kx
						if ox < 0 || ox >= g.ow {
							continue
						}
						a := acc[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc]
						for oc := range a {
							w := k.w[((oc*g.kh+ky)*g.kw+kx)*g.ic:][:len(x)]
							var s int32
							for ic, v := range x {
								s += (int32(v) - k.izp) * w[ic]
							}
							a[oc] += s
						}
					}
				}
			}
		}
	}
	for i := range acc {
		oc := i % g.oc
		out[i] = T(k.st.value(acc[i]+k.biasI[oc], oc))
	}
}

func (k *transposeConv) evalF(in, out, acc []float32) {
	g := &k.g
	acc = acc[:g.n*g.oh*g.ow*g.oc]
	clear(acc)
	for b := range g.n {
		for iy := range g.ih {
			for ix := range g.iw {
				x := in[((b*g.ih+iy)*g.iw+ix)*g.ic:][:g.ic]
				for ky := range g.kh {
					oy := iy*g.sh - g.ph + ky
					if oy < 0 || oy >= g.oh {
						continue
					}
					for kx := range g.kw {
						ox := ix*g.sw - g.pw + kx
						if ox < 0 || ox >= g.ow {
							continue
						}
						a := acc[((b*g.oh+oy)*g.ow+ox)*g.oc:][:g.oc]
						for oc := range a {
							w := k.wf[((oc*g.kh+ky)*g.kw+kx)*g.ic:][:len(x)]
							var s float32
							for ic, v := range x {
								s += v * w[ic]
							}
							a[oc] += s
						}
					}
				}
			}
		}
	}
	for i := range acc {
		out[i] = min(max(acc[i]+k.biasF[i%g.oc], k.flo), k.fhi)
	}
}
