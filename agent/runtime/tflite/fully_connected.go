package tflite

import (
	"github.com/edgefleet/edgefleet/agent/runtime"
)

// FULLY_CONNECTED after reference/integer_ops/fully_connected.h: per-tensor
// weights keep their zero point (the "backward compatibility" offset),
// per-channel weights are symmetric.

func init() { registerOp(opFullyConnected, prepareFC) }

const (
	fcAct, fcWeightsFormat, fcKeepDims = 0, 1, 2
)

type fcQ struct {
	inIdx, outIdx int
	batches, k    int
	kp, oc        int
	izp           int32
	w             []int16
	bias          []int32
	st            outStage
	packBuf       int
	accBuf        int
	u8            bool
}

type fcF struct {
	inIdx, outIdx int
	batches, k    int
	oc            int
	w             []float32
	bias          []float32
	lo, hi        float32
}

func prepareFC(c *prepCtx) (kernel, error) {
	if err := c.counts(2, 3, 1); err != nil {
		return nil, err
	}
	in, inIdx, err := c.input(0)
	if err != nil {
		return nil, err
	}
	filter, _, err := c.input(1)
	if err != nil {
		return nil, err
	}
	bias, _ := c.optInput(2)
	out, outIdx, err := c.output(0)
	if err != nil {
		return nil, err
	}
	o := c.opts()
	act := o.u8(fcAct, 0)
	if f := o.u8(fcWeightsFormat, 0); f != 0 {
		return nil, unsupportedf("weights_format %d (shuffled weights)", f)
	}
	keep := o.bool(fcKeepDims, false)
	if err := o.err(); err != nil {
		return nil, err
	}
	if len(filter.shape) != 2 || filter.data == nil {
		return nil, unsupportedf("filter %q must be a constant matrix, has shape %v", filter.name, filter.shape)
	}
	oc, k := filter.shape[0], filter.shape[1]
	n := in.numElements()
	if k == 0 || n%k != 0 {
		return nil, badf("input %q shape %v is not a multiple of the filter depth %d", in.name, in.shape, k)
	}
	batches := n / k
	c.macs = int64(n) * int64(oc)
	want := []int{batches, oc}
	if keep {
		want = append(append([]int(nil), in.shape[:len(in.shape)-1]...), oc)
	}
	if err := checkShape(out, want); err != nil {
		return nil, err
	}
	if err := sameType(q8AndFloat, in, out); err != nil {
		return nil, err
	}
	if filter.dtype != in.dtype {
		return nil, unsupportedf("filter %q is %s with %s activations (hybrid and 16x8 modes are not supported)", filter.name, filter.dtype, in.dtype)
	}
	if bias != nil && (len(bias.shape) < 1 || bias.numElements() != oc || bias.data == nil) {
		return nil, badf("bias %q has shape %v, want constant [%d]", bias.name, bias.shape, oc)
	}
	if in.dtype == runtime.Float32 {
		lo, hi, ok := frange(act)
		if !ok {
			return nil, unsupportedf("fused activation %d", act)
		}
		kf := &fcF{inIdx: inIdx, outIdx: outIdx, batches: batches, k: k, oc: oc, lo: lo, hi: hi}
		kf.w = asF32(filter.data)
		kf.bias = make([]float32, oc)
		if bias != nil {
			if bias.dtype != runtime.Float32 {
				return nil, badf("bias %q is %s, want float32", bias.name, bias.dtype)
			}
			copy(kf.bias, asF32(bias.data))
		}
		return kf, nil
	}
	is, izp, err := perTensor(in)
	if err != nil {
		return nil, err
	}
	os, ozp, err := perTensor(out)
	if err != nil {
		return nil, err
	}
	fq := filter.quant
	if fq == nil || (len(fq.Scale) != 1 && len(fq.Scale) != oc) {
		return nil, badf("filter %q needs one scale or one per output channel", filter.name)
	}
	kq := &fcQ{inIdx: inIdx, outIdx: outIdx, batches: batches, k: k, kp: alignK(k), oc: oc, izp: izp, u8: in.dtype == runtime.Uint8}
	lo, hi := qlimits(out.dtype)
	var ok bool
	kq.st.zp = ozp
	if kq.st.lo, kq.st.hi, ok = qrange(act, os, ozp, lo, hi); !ok {
		return nil, unsupportedf("fused activation %d", act)
	}
	kq.st.rq = make([]requant, len(fq.Scale))
	for i, s := range fq.Scale {
		kq.st.rq[i] = c.arith.rescale(is, s, os)
	}
	kq.st.finish(oc)
	kq.w = make([]int16, oc*kq.kp)
	for ch := range oc {
		zp := int32(fq.ZeroPoint[0])
		if len(fq.ZeroPoint) > 1 {
			zp = int32(fq.ZeroPoint[ch])
		}
		for i := range k {
			kq.w[ch*kq.kp+i] = int16(filterValue(filter, ch*k+i, zp))
		}
	}
	kq.bias = make([]int32, oc)
	if bias != nil {
		if bias.dtype != runtime.Int32 {
			return nil, unsupportedf("bias %q is %s, want int32", bias.name, bias.dtype)
		}
		copy(kq.bias, asI32(bias.data))
	}
	rows := min(batches, pixelBlock)
	kq.packBuf = c.addScratch(rows * kq.kp * 2)
	kq.accBuf = c.addScratch(rows * oc * 4)
	return kq, nil
}

func (k *fcQ) eval(bufs [][]byte) error {
	if k.u8 {
		fcQRun(k, bufs[k.inIdx], bufs[k.outIdx], bufs)
	} else {
		fcQRun(k, asI8(bufs[k.inIdx]), asI8(bufs[k.outIdx]), bufs)
	}
	return nil
}

func fcQRun[T int8 | uint8](k *fcQ, in, out []T, bufs [][]byte) {
	pack, acc := asI16(bufs[k.packBuf]), asI32(bufs[k.accBuf])
	for b0 := 0; b0 < k.batches; b0 += pixelBlock {
		bn := min(pixelBlock, k.batches-b0)
		for b := range bn {
			src := in[(b0+b)*k.k : (b0+b+1)*k.k]
			dst := pack[b*k.kp : (b+1)*k.kp]
			for i, v := range src {
				dst[i] = int16(int32(v) - k.izp)
			}
			clear(dst[len(src):])
		}
		gemmI16(pack, bn, k.w, k.oc, k.kp, acc)
		for b := range bn {
			requantRow(&k.st, acc[b*k.oc:(b+1)*k.oc], k.bias, 0, out[(b0+b)*k.oc:(b0+b+1)*k.oc])
		}
	}
}

func (k *fcF) eval(bufs [][]byte) error {
	in, out := asF32(bufs[k.inIdx]), asF32(bufs[k.outIdx])
	gemmF32(in, k.batches, k.w, k.oc, k.k, out)
	for b := range k.batches {
		row := out[b*k.oc : (b+1)*k.oc]
		for j := range row {
			row[j] = min(max(row[j]+k.bias[j], k.lo), k.hi)
		}
	}
	return nil
}
