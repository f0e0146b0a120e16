package tflite

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Kernel tests: each operator against a straightforward float reference
// written here, on random shapes, strides, paddings, dilations and
// activations. Quantized kernels must land within one quantization step of
// the quantized float result (rounding differs only at ties and in the
// fixed-point multiplier), float kernels within 1e-4 relative.

// opCase is a one-operator model: tensors, which are fed (the rest are
// constants or outputs), and the operator.
type opCase struct {
	code     int32
	optsType uint8
	opts     []optField
	ins      []testTensor // constant when data is set at build time
	feed     [][]byte     // data for the non-constant inputs, in order
	outs     []testTensor
}

func (oc opCase) model() *testModel {
	m := &testModel{}
	op := testOp{code: oc.code, optsType: oc.optsType, opts: oc.opts}
	for _, t := range oc.ins {
		i := m.add(t)
		op.inputs = append(op.inputs, i)
		if t.data == nil {
			m.inputs = append(m.inputs, i)
		}
	}
	for _, t := range oc.outs {
		i := m.add(t)
		op.outputs = append(op.outputs, i)
		m.outputs = append(m.outputs, i)
	}
	m.ops = []testOp{op}
	return m
}

// run builds and runs the case in the given arithmetic.
func (oc opCase) run(t *testing.T, cfg runtime.Config) [][]byte {
	t.Helper()
	mod, err := New(cfg).Open(context.Background(), oc.model().encode(), runtime.Options{})
	if err != nil {
		t.Fatalf("%s: Open: %v", opName(oc.code, ""), err)
	}
	m := mod.(*Model)
	return run1(t, m, oc.feed...)
}

var arithModes = []runtime.Config{{}, {Settings: map[string]string{"rounding": "single"}}, litert}

type qp struct {
	scale float32
	zp    int64
}

func tensorF(name string, shape []int, data []float32) testTensor {
	t := testTensor{name: name, typ: ttFloat32, shape: i32s(shape)}
	if data != nil {
		t.data = f32bytes(data)
	}
	return t
}

func tensorQ(name string, typ int8, shape []int, q qp, data []byte) testTensor {
	return testTensor{name: name, typ: typ, shape: i32s(shape), data: data, scale: []float32{q.scale}, zp: []int64{q.zp}}
}

func i32s(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

func randF(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = r.Float32()*2 - 1
	}
	return v
}

// quantizeAll maps reals to 8-bit values with q.
func quantizeAll(v []float32, q qp, typ int8) []byte {
	out := make([]byte, len(v))
	lo, hi := -128.0, 127.0
	if typ == ttUint8 {
		lo, hi = 0, 255
	}
	for i, x := range v {
		r := math.Round(float64(x)/float64(q.scale)) + float64(q.zp)
		out[i] = byte(int(min(max(r, lo), hi)))
	}
	return out
}

func dequantizeAll(b []byte, q qp, typ int8) []float32 {
	out := make([]float32, len(b))
	for i, x := range b {
		v := float64(x)
		if typ == ttInt8 {
			v = float64(int8(x))
		}
		out[i] = float32((v - float64(q.zp)) * float64(q.scale))
	}
	return out
}

func actClamp(v float64, act int) float64 {
	switch act {
	case actRelu:
		return max(v, 0)
	case actRelu6:
		return min(max(v, 0), 6)
	case actReluN1To1:
		return min(max(v, -1), 1)
	}
	return v
}

func checkF(t *testing.T, what string, got []byte, want []float32) {
	t.Helper()
	g := asF32(got)
	if len(g) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(g), len(want))
	}
	for i := range want {
		d := math.Abs(float64(g[i] - want[i]))
		if d > 1e-4 && d > 1e-4*math.Abs(float64(want[i])) {
			t.Fatalf("%s: element %d is %v, reference %v", what, i, g[i], want[i])
		}
	}
}

// checkQ compares quantized outputs with the quantized reference; steps is
// the allowed difference.
func checkQ(t *testing.T, what string, got []byte, want []float32, q qp, typ int8, steps int) {
	t.Helper()
	w := quantizeAll(want, q, typ)
	if len(got) != len(w) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(w))
	}
	for i := range w {
		a, b := int(got[i]), int(w[i])
		if typ == ttInt8 {
			a, b = int(int8(got[i])), int(int8(w[i]))
		}
		if abs(a-b) > steps {
			t.Fatalf("%s: element %d is %d, reference %d (real %v)", what, i, a, b, want[i])
		}
	}
}

// convRef is a direct NHWC convolution; depthwise when mult > 0.
func convRef(x []float32, n, h, w, c int, f []float32, oc, kh, kw int, bias []float32, sh, sw, dh, dw, padding, act, mult int) ([]float32, int, int) {
	g := refGeom(h, w, kh, kw, sh, sw, dh, dw, padding)
	if g.oh <= 0 || g.ow <= 0 {
		return nil, 0, 0
	}
	out := make([]float32, n*g.oh*g.ow*oc)
	for b := range n {
		for oy := range g.oh {
			for ox := range g.ow {
				for o := range oc {
					s := float64(bias[o])
					for ky := range kh {
						for kx := range kw {
							iy, ix := oy*sh-g.ph+ky*dh, ox*sw-g.pw+kx*dw
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							if mult > 0 {
								ic := o / mult
								s += float64(x[((b*h+iy)*w+ix)*c+ic]) * float64(f[(ky*kw+kx)*oc+o])
								continue
							}
							for ic := range c {
								s += float64(x[((b*h+iy)*w+ix)*c+ic]) * float64(f[((o*kh+ky)*kw+kx)*c+ic])
							}
						}
					}
					out[((b*g.oh+oy)*g.ow+ox)*oc+o] = float32(actClamp(s, act))
				}
			}
		}
	}
	return out, g.oh, g.ow
}

func TestConvKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for it := range 60 {
		depthwise := it%2 == 1
		n, h, w, c := 1+r.IntN(2), 1+r.IntN(9), 1+r.IntN(9), 1+r.IntN(5)
		kh, kw := 1+r.IntN(3), 1+r.IntN(3)
		sh, sw, dh, dw := 1+r.IntN(2), 1+r.IntN(2), 1+r.IntN(2), 1+r.IntN(2)
		padding, act := r.IntN(2), []int{actNone, actRelu, actRelu6, actReluN1To1}[r.IntN(4)]
		mult, oc := 0, 1+r.IntN(5)
		if depthwise {
			mult = 1 + r.IntN(2)
			oc = c * mult
		}
		x, bias := randF(r, n*h*w*c), randF(r, oc)
		var f []float32
		var fshape []int
		if depthwise {
			f, fshape = randF(r, kh*kw*oc), []int{1, kh, kw, oc}
		} else {
			f, fshape = randF(r, oc*kh*kw*c), []int{oc, kh, kw, c}
		}
		ref, oh, ow := convRef(x, n, h, w, c, f, oc, kh, kw, bias, sh, sw, dh, dw, padding, act, mult)
		if ref == nil {
			continue
		}
		code, otype := opConv2d, uint8(1)
		opts := []optField{ob(convPadding, int32(padding)), oi(convStrideW, int32(sw)), oi(convStrideH, int32(sh)), ob(convAct, int32(act)), oi(convDilW, int32(dw)), oi(convDilH, int32(dh))}
		if depthwise {
			code, otype = opDepthwiseConv2d, 2
			opts = []optField{ob(dwPadding, int32(padding)), oi(dwStrideW, int32(sw)), oi(dwStrideH, int32(sh)), oi(dwMult, int32(mult)), ob(dwAct, int32(act)), oi(dwDilW, int32(dw)), oi(dwDilH, int32(dh))}
		}
		what := fmt.Sprintf("case %d %s in %v filter %v stride %dx%d dil %dx%d pad %d act %d", it, opName(code, ""), []int{n, h, w, c}, fshape, sh, sw, dh, dw, padding, act)
		outShape := []int{n, oh, ow, oc}
		fc := opCase{code: code, optsType: otype, opts: opts,
			ins:  []testTensor{tensorF("x", []int{n, h, w, c}, nil), tensorF("f", fshape, f), tensorF("b", []int{oc}, bias)},
			feed: [][]byte{f32bytes(x)}, outs: []testTensor{tensorF("y", outShape, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)

		// int8: per-channel symmetric weights, asymmetric activations.
		// The reference recomputes with the quantized inputs so only the
		// kernel's rounding is measured.
		qx, qy := qp{2.0 / 255, int64(r.IntN(40) - 20)}, qp{float32(maxAbs(ref)/100 + 0.01), int64(r.IntN(40) - 20)}
		xb := quantizeAll(x, qx, ttInt8)
		axis := 0
		if depthwise {
			axis = 3
		}
		fs := make([]float32, oc)
		fb := make([]byte, len(f))
		for i := range fs {
			fs[i] = (0.5 + r.Float32()) / 127
		}
		for i, v := range f {
			ch := i / (len(f) / oc)
			if depthwise {
				ch = i % oc
			}
			fb[i] = byte(int8(math.Round(float64(v / fs[ch]))))
		}
		bb := make([]int32, oc)
		for i := range bb {
			bb[i] = int32(math.Round(float64(bias[i] / (qx.scale * fs[i]))))
		}
		xr := dequantizeAll(xb, qx, ttInt8)
		fr := make([]float32, len(f))
		for i := range fr {
			ch := i / (len(f) / oc)
			if depthwise {
				ch = i % oc
			}
			fr[i] = float32(int8(fb[i])) * fs[ch]
		}
		br := make([]float32, oc)
		for i := range br {
			br[i] = float32(bb[i]) * qx.scale * fs[i]
		}
		qref, _, _ := convRef(xr, n, h, w, c, fr, oc, kh, kw, br, sh, sw, dh, dw, padding, act, mult)
		biasScales := make([]float32, oc)
		for i := range biasScales {
			biasScales[i] = qx.scale * fs[i]
		}
		qc := opCase{code: code, optsType: otype, opts: opts,
			ins: []testTensor{
				tensorQ("x", ttInt8, []int{n, h, w, c}, qx, nil),
				{name: "f", typ: ttInt8, shape: i32s(fshape), data: fb, scale: fs, zp: make([]int64, oc), qdim: int32(axis)},
				{name: "b", typ: ttInt32, shape: []int32{int32(oc)}, data: i32bytes(bb), scale: biasScales, zp: make([]int64, oc)},
			},
			feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttInt8, outShape, qy, nil)}}
		for _, cfg := range arithModes {
			checkQ(t, what+" int8 "+cfg.Settings["rounding"], qc.run(t, cfg)[0], qref, qy, ttInt8, 1)
		}
	}
}

// refGeom is the output size and leading padding of TensorFlow's SAME and
// VALID, written out independently of the engine's geometry code.
func refGeom(h, w, kh, kw, sh, sw, dh, dw, padding int) convGeom {
	var g convGeom
	side := func(in, k, s, d int) (out, pad int) {
		eff := (k-1)*d + 1
		if padding == padValid {
			if in < eff {
				return 0, 0
			}
			return (in-eff)/s + 1, 0
		}
		out = (in + s - 1) / s
		total := (out-1)*s + eff - in
		if total < 0 {
			total = 0
		}
		return out, total / 2
	}
	g.oh, g.ph = side(h, kh, sh, dh)
	g.ow, g.pw = side(w, kw, sw, dw)
	return g
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

func TestFullyConnectedKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for it := range 20 {
		batches, k, oc := 1+r.IntN(20), 1+r.IntN(40), 1+r.IntN(9)
		act := []int{actNone, actRelu, actRelu6}[r.IntN(3)]
		x, f, bias := randF(r, batches*k), randF(r, oc*k), randF(r, oc)
		ref := make([]float32, batches*oc)
		for b := range batches {
			for o := range oc {
				s := float64(bias[o])
				for i := range k {
					s += float64(x[b*k+i]) * float64(f[o*k+i])
				}
				ref[b*oc+o] = float32(actClamp(s, act))
			}
		}
		what := fmt.Sprintf("case %d batches %d depth %d units %d act %d", it, batches, k, oc, act)
		fc := opCase{code: opFullyConnected, optsType: 8, opts: []optField{ob(fcAct, int32(act))},
			ins:  []testTensor{tensorF("x", []int{batches, k}, nil), tensorF("w", []int{oc, k}, f), tensorF("b", []int{oc}, bias)},
			feed: [][]byte{f32bytes(x)}, outs: []testTensor{tensorF("y", []int{batches, oc}, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)

		// uint8, per-tensor weights with a zero point (the older scheme).
		qx, qw := qp{2.0 / 255, 128}, qp{2.0 / 255, int64(100 + r.IntN(50))}
		qy := qp{float32(maxAbs(ref)/100 + 0.01), int64(100 + r.IntN(50))}
		xb, wb := quantizeAll(x, qx, ttUint8), quantizeAll(f, qw, ttUint8)
		xr, wr := dequantizeAll(xb, qx, ttUint8), dequantizeAll(wb, qw, ttUint8)
		bb := make([]int32, oc)
		for i := range bb {
			bb[i] = int32(math.Round(float64(bias[i] / (qx.scale * qw.scale))))
		}
		qref := make([]float32, batches*oc)
		for b := range batches {
			for o := range oc {
				s := float64(bb[o]) * float64(qx.scale) * float64(qw.scale)
				for i := range k {
					s += float64(xr[b*k+i]) * float64(wr[o*k+i])
				}
				qref[b*oc+o] = float32(actClamp(s, act))
			}
		}
		qc := opCase{code: opFullyConnected, optsType: 8, opts: []optField{ob(fcAct, int32(act))},
			ins: []testTensor{tensorQ("x", ttUint8, []int{batches, k}, qx, nil), tensorQ("w", ttUint8, []int{oc, k}, qw, wb),
				tensorQ("b", ttInt32, []int{oc}, qp{qx.scale * qw.scale, 0}, i32bytes(bb))},
			feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttUint8, []int{batches, oc}, qy, nil)}}
		for _, cfg := range arithModes {
			checkQ(t, what+" uint8 "+cfg.Settings["rounding"], qc.run(t, cfg)[0], qref, qy, ttUint8, 1)
		}
	}
}

func TestPoolKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for it := range 30 {
		isMax := it%2 == 1
		n, h, w, c := 1+r.IntN(2), 1+r.IntN(8), 1+r.IntN(8), 1+r.IntN(4)
		fh, fw, sh, sw := 1+r.IntN(3), 1+r.IntN(3), 1+r.IntN(2), 1+r.IntN(2)
		padding, act := r.IntN(2), []int{actNone, actRelu}[r.IntN(2)]
		g := refGeom(h, w, fh, fw, sh, sw, 1, 1, padding)
		if g.oh <= 0 || g.ow <= 0 {
			continue
		}
		x := randF(r, n*h*w*c)
		qx := qp{2.0 / 255, int64(r.IntN(20) - 10)}
		xb := quantizeAll(x, qx, ttInt8)
		xr := dequantizeAll(xb, qx, ttInt8)
		ref := make([]float32, n*g.oh*g.ow*c)
		for b := range n {
			for oy := range g.oh {
				for ox := range g.ow {
					for ch := range c {
						s, cnt, m := 0.0, 0, math.Inf(-1)
						for ky := range fh {
							for kx := range fw {
								iy, ix := oy*sh-g.ph+ky, ox*sw-g.pw+kx
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								v := float64(xr[((b*h+iy)*w+ix)*c+ch])
								s += v
								cnt++
								m = max(m, v)
							}
						}
						v := s / float64(cnt)
						if isMax {
							v = m
						}
						ref[((b*g.oh+oy)*g.ow+ox)*c+ch] = float32(actClamp(v, act))
					}
				}
			}
		}
		code := opAveragePool2d
		if isMax {
			code = opMaxPool2d
		}
		opts := []optField{ob(poolPadding, int32(padding)), oi(poolStrideW, int32(sw)), oi(poolStrideH, int32(sh)), oi(poolFilterW, int32(fw)), oi(poolFilterH, int32(fh)), ob(poolAct, int32(act))}
		what := fmt.Sprintf("case %d %s in %v filter %dx%d stride %dx%d pad %d", it, opName(code, ""), []int{n, h, w, c}, fh, fw, sh, sw, padding)
		outShape := []int{n, g.oh, g.ow, c}
		fc := opCase{code: code, optsType: 5, opts: opts, ins: []testTensor{tensorF("x", []int{n, h, w, c}, nil)},
			feed: [][]byte{f32bytes(xr)}, outs: []testTensor{tensorF("y", outShape, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)
		qc := opCase{code: code, optsType: 5, opts: opts, ins: []testTensor{tensorQ("x", ttInt8, []int{n, h, w, c}, qx, nil)},
			feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttInt8, outShape, qx, nil)}}
		checkQ(t, what+" int8", qc.run(t, runtime.Config{})[0], ref, qx, ttInt8, 1)
	}
}

func TestBinaryKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	shapes := [][2][]int{{{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{1, 4, 1}, {3, 1, 5}}, {{5}, {1}}, {{2, 1, 3, 2}, {2, 1, 1}}}
	for it := range 30 {
		sh := shapes[it%len(shapes)]
		code := []int32{opAdd, opSub, opMul, opMaximum, opMinimum}[r.IntN(5)]
		bc, err := newBroadcast(sh[0], sh[1])
		if err != nil {
			t.Fatal(err)
		}
		a, b := randF(r, runtime.NumElements(sh[0])), randF(r, runtime.NumElements(sh[1]))
		qa, qb := qp{2.0 / 255, int64(r.IntN(20) - 10)}, qp{1.5 / 255, int64(r.IntN(20) - 10)}
		if code == opMaximum || code == opMinimum {
			qb = qa
		}
		ab, bb := quantizeAll(a, qa, ttInt8), quantizeAll(b, qb, ttInt8)
		ar, br := dequantizeAll(ab, qa, ttInt8), dequantizeAll(bb, qb, ttInt8)
		ref := make([]float32, runtime.NumElements(bc.shape))
		bc.each(func(ia, ib, io, n, da, db int) {
			for i := range n {
				x, y := ar[ia+i*da], br[ib+i*db]
				var v float32
				switch code {
				case opAdd:
					v = x + y
				case opSub:
					v = x - y
				case opMul:
					v = x * y
				case opMaximum:
					v = max(x, y)
				case opMinimum:
					v = min(x, y)
				}
				ref[io+i] = v
			}
		})
		what := fmt.Sprintf("case %d %s %v %v", it, opName(code, ""), sh[0], sh[1])
		fc := opCase{code: code, ins: []testTensor{tensorF("a", sh[0], nil), tensorF("b", sh[1], nil)},
			feed: [][]byte{f32bytes(ar), f32bytes(br)}, outs: []testTensor{tensorF("y", bc.shape, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)
		qy := qp{2.5 / 255, int64(r.IntN(20) - 10)}
		if code == opMaximum || code == opMinimum {
			qy = qa
		}
		qc := opCase{code: code, ins: []testTensor{tensorQ("a", ttInt8, sh[0], qa, nil), tensorQ("b", ttInt8, sh[1], qb, nil)},
			feed: [][]byte{ab, bb}, outs: []testTensor{tensorQ("y", ttInt8, bc.shape, qy, nil)}}
		for _, cfg := range arithModes {
			checkQ(t, what+" int8 "+cfg.Settings["rounding"], qc.run(t, cfg)[0], ref, qy, ttInt8, 1)
		}
	}
}

func TestSoftmaxKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for it := range 10 {
		rows, depth := 1+r.IntN(4), 1+r.IntN(20)
		x := randF(r, rows*depth)
		for i := range x {
			x[i] *= 4
		}
		qx := qp{8.0 / 255, int64(r.IntN(20) - 10)}
		xb := quantizeAll(x, qx, ttInt8)
		xr := dequantizeAll(xb, qx, ttInt8)
		ref := make([]float32, len(x))
		for rr := range rows {
			row := xr[rr*depth : (rr+1)*depth]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = max(mx, float64(v))
			}
			s := 0.0
			for _, v := range row {
				s += math.Exp(float64(v) - mx)
			}
			for j, v := range row {
				ref[rr*depth+j] = float32(math.Exp(float64(v)-mx) / s)
			}
		}
		what := fmt.Sprintf("case %d %dx%d", it, rows, depth)
		opts := []optField{of(softmaxBeta, 1)}
		fc := opCase{code: opSoftmax, optsType: 9, opts: opts, ins: []testTensor{tensorF("x", []int{rows, depth}, nil)},
			feed: [][]byte{f32bytes(xr)}, outs: []testTensor{tensorF("y", []int{rows, depth}, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)
		qy := qp{1.0 / 256, -128}
		qc := opCase{code: opSoftmax, optsType: 9, opts: opts, ins: []testTensor{tensorQ("x", ttInt8, []int{rows, depth}, qx, nil)},
			feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttInt8, []int{rows, depth}, qy, nil)}}
		for _, cfg := range arithModes {
			checkQ(t, what+" int8 "+cfg.Settings["rounding"], qc.run(t, cfg)[0], ref, qy, ttInt8, 1)
		}
	}
}

// TestFixedPointExp checks the gemmlowp-style exp and reciprocal the
// reference softmax is built on against math, over their whole domains.
func TestFixedPointExp(t *testing.T) {
	for a := int32(0); a > -32<<26; a -= 1 << 18 {
		got := float64(expOnNegativeValues(a)) / (1 << 31)
		want := math.Exp(float64(a) / (1 << 26))
		// The Taylor expansion on [-1/4, 0) is good to about 2.5e-7.
		if math.Abs(got-want) > 2e-9+3e-7*want {
			t.Fatalf("exp(%v) = %v, want %v", float64(a)/(1<<26), got, want)
		}
	}
	for x := int32(1 << 19); x < 1<<30; x += 7919 << 10 { // Q12.19: 1 .. 2048
		s, over := reciprocal(x, 12)
		got := float64(s) / (1 << 31) / math.Exp2(float64(over))
		want := 1 / (float64(x) / (1 << 19))
		if math.Abs(got-want) > 1e-7*want {
			t.Fatalf("1/%v = %v, want %v", float64(x)/(1<<19), got, want)
		}
	}
}

func TestMeanKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for it := range 12 {
		shape := []int{1 + r.IntN(2), 1 + r.IntN(6), 1 + r.IntN(6), 1 + r.IntN(5)}
		axes := [][]int{{1, 2}, {3}, {0, 3}, {2}}[it%4]
		keep := it%3 != 0
		x := randF(r, runtime.NumElements(shape))
		qx := qp{2.0 / 255, int64(r.IntN(20) - 10)}
		xb := quantizeAll(x, qx, ttInt8)
		xr := dequantizeAll(xb, qx, ttInt8)
		red := make([]bool, 4)
		var out []int
		for _, a := range axes {
			red[a] = true
		}
		for d, n := range shape {
			if !red[d] {
				out = append(out, n)
			} else if keep {
				out = append(out, 1)
			}
		}
		st := strides(shape)
		sums := map[int]float64{}
		cnt := map[int]int{}
		for i, v := range xr {
			key := 0
			for d := range 4 {
				if !red[d] {
					key = key*shape[d] + (i/st[d])%shape[d]
				}
			}
			sums[key] += float64(v)
			cnt[key]++
		}
		ref := make([]float32, runtime.NumElements(out))
		for i := range ref {
			ref[i] = float32(sums[i] / float64(cnt[i]))
		}
		what := fmt.Sprintf("case %d %v axes %v keep %v", it, shape, axes, keep)
		axT := testTensor{name: "axes", typ: ttInt32, shape: []int32{int32(len(axes))}, data: i32bytes(i32s(axes))}
		kd := int32(0)
		if keep {
			kd = 1
		}
		opts := []optField{ob(reduceKeepDims, kd)}
		fc := opCase{code: opMean, optsType: 27, opts: opts, ins: []testTensor{tensorF("x", shape, nil), axT},
			feed: [][]byte{f32bytes(xr)}, outs: []testTensor{tensorF("y", out, nil)}}
		checkF(t, what+" float", fc.run(t, runtime.Config{})[0], ref)
		qc := opCase{code: opMean, optsType: 27, opts: opts, ins: []testTensor{tensorQ("x", ttInt8, shape, qx, nil), axT},
			feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttInt8, out, qx, nil)}}
		for _, cfg := range arithModes {
			checkQ(t, what+" int8 "+cfg.Settings["rounding"], qc.run(t, cfg)[0], ref, qx, ttInt8, 1)
		}
	}
}

// TestUnaryKernels checks the float functions and the 8-bit tables.
func TestUnaryKernels(t *testing.T) {
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i-32) / 8
	}
	for _, code := range []int32{opLogistic, opTanh, opRelu, opRelu6, opReluN1To1, opHardSwish, opAbs, opNeg, opExp} {
		f := unaryFunc(code, 0)
		ref := make([]float32, len(x))
		for i, v := range x {
			ref[i] = f(v)
		}
		fc := opCase{code: code, ins: []testTensor{tensorF("x", []int{64}, nil)}, feed: [][]byte{f32bytes(x)}, outs: []testTensor{tensorF("y", []int{64}, nil)}}
		checkF(t, opName(code, "")+" float", fc.run(t, runtime.Config{})[0], ref)
		qx := qp{1.0 / 8, 0}
		qy := qp{float32(maxAbs(ref))/127 + 1e-3, 0}
		qc := opCase{code: code, ins: []testTensor{tensorQ("x", ttInt8, []int{64}, qx, nil)}, feed: [][]byte{quantizeAll(x, qx, ttInt8)},
			outs: []testTensor{tensorQ("y", ttInt8, []int{64}, qy, nil)}}
		checkQ(t, opName(code, "")+" int8", qc.run(t, runtime.Config{})[0], ref, qy, ttInt8, 1)
	}
}

// TestDataMovement checks the byte-moving operators against index
// arithmetic done here.
func TestDataMovement(t *testing.T) {
	x := make([]float32, 2*3*4)
	for i := range x {
		x[i] = float32(i)
	}
	in := tensorF("x", []int{2, 3, 4}, nil)
	feed := [][]byte{f32bytes(x)}
	at := func(a, b, c int) float32 { return x[(a*3+b)*4+c] }
	i32t := func(name string, v []int) testTensor {
		return testTensor{name: name, typ: ttInt32, shape: []int32{int32(len(v))}, data: i32bytes(i32s(v))}
	}
	t.Run("transpose", func(t *testing.T) {
		var ref []float32
		for c := range 4 {
			for a := range 2 {
				for b := range 3 {
					ref = append(ref, at(a, b, c))
				}
			}
		}
		oc := opCase{code: opTranspose, ins: []testTensor{in, i32t("perm", []int{2, 0, 1})}, feed: feed, outs: []testTensor{tensorF("y", []int{4, 2, 3}, nil)}}
		checkF(t, "transpose", oc.run(t, runtime.Config{})[0], ref)
	})
	t.Run("pad", func(t *testing.T) {
		var ref []float32
		for a := range 3 {
			for b := range 3 {
				for c := range 6 {
					v := float32(0)
					if a >= 1 && c >= 2 {
						v = at(a-1, b, c-2)
					}
					ref = append(ref, v)
				}
			}
		}
		pads := testTensor{name: "p", typ: ttInt32, shape: []int32{3, 2}, data: i32bytes([]int32{1, 0, 0, 0, 2, 0})}
		oc := opCase{code: opPad, ins: []testTensor{in, pads}, feed: feed, outs: []testTensor{tensorF("y", []int{3, 3, 6}, nil)}}
		checkF(t, "pad", oc.run(t, runtime.Config{})[0], ref)
	})
	t.Run("concat split", func(t *testing.T) {
		oc := opCase{code: opSplit, optsType: 35, opts: []optField{oi(splitNum, 2)}, ins: []testTensor{i32t("axis", []int{2}), in}, feed: feed,
			outs: []testTensor{tensorF("y0", []int{2, 3, 2}, nil), tensorF("y1", []int{2, 3, 2}, nil)}}
		outs := oc.run(t, runtime.Config{})
		var r0, r1 []float32
		for a := range 2 {
			for b := range 3 {
				r0 = append(r0, at(a, b, 0), at(a, b, 1))
				r1 = append(r1, at(a, b, 2), at(a, b, 3))
			}
		}
		checkF(t, "split 0", outs[0], r0)
		checkF(t, "split 1", outs[1], r1)
		cc := opCase{code: opConcatenation, optsType: 10, opts: []optField{oi(concatAxis, 2)},
			ins: []testTensor{tensorF("a", []int{2, 3, 2}, nil), tensorF("b", []int{2, 3, 2}, nil)}, feed: [][]byte{outs[0], outs[1]},
			outs: []testTensor{tensorF("y", []int{2, 3, 4}, nil)}}
		checkF(t, "concat", cc.run(t, runtime.Config{})[0], x)
	})
	t.Run("strided slice", func(t *testing.T) {
		var ref []float32
		for b := 2; b >= 0; b -= 2 {
			for c := 1; c < 4; c += 2 {
				ref = append(ref, at(1, b, c))
			}
		}
		oc := opCase{code: opStridedSlice, optsType: 32, opts: []optField{oi(ssShrinkMask, 1)},
			ins:  []testTensor{in, i32t("b", []int{1, -1, 1}), i32t("e", []int{2, -4, 4}), i32t("s", []int{1, -2, 2})},
			feed: feed, outs: []testTensor{tensorF("y", []int{2, 2}, nil)}}
		checkF(t, "strided slice", oc.run(t, runtime.Config{})[0], ref)
	})
	t.Run("gather", func(t *testing.T) {
		var ref []float32
		for a := range 2 {
			for _, b := range []int{2, 0} {
				for c := range 4 {
					ref = append(ref, at(a, b, c))
				}
			}
		}
		oc := opCase{code: opGather, optsType: 23, opts: []optField{oi(gatherAxis, 1)},
			ins:  []testTensor{in, {name: "i", typ: ttInt32, shape: []int32{2}}},
			feed: [][]byte{f32bytes(x), i32bytes([]int32{2, 0})}, outs: []testTensor{tensorF("y", []int{2, 2, 4}, nil)}}
		checkF(t, "gather", oc.run(t, runtime.Config{})[0], ref)
		// An index out of range at run time is an error, not a panic.
		m, err := New(runtime.Config{}).Open(context.Background(), oc.model().encode(), runtime.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := m.NewSession()
		err = s.Run(context.Background(), []runtime.Tensor{
			{DType: runtime.Float32, Shape: []int{2, 3, 4}, Data: f32bytes(x)},
			{DType: runtime.Int32, Shape: []int{2}, Data: i32bytes([]int32{3, 0})},
		}, make([]runtime.Tensor, 1))
		if err == nil {
			t.Fatal("gather with index 3 of 3 succeeded")
		}
	})
}

// TestTransposeConvKernel checks TRANSPOSE_CONV against its definition as
// the adjoint of a convolution: a scatter of input × filter.
func TestTransposeConvKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for it := range 10 {
		h, w, c, oc := 1+r.IntN(5), 1+r.IntN(5), 1+r.IntN(3), 1+r.IntN(3)
		kh, kw, sh, sw := 1+r.IntN(3), 1+r.IntN(3), 1+r.IntN(2), 1+r.IntN(2)
		padding := padValid
		oh, ow := (h-1)*sh+kh, (w-1)*sw+kw
		x, f := randF(r, h*w*c), randF(r, oc*kh*kw*c)
		ref := make([]float32, oh*ow*oc)
		for iy := range h {
			for ix := range w {
				for ky := range kh {
					for kx := range kw {
						for o := range oc {
							for ic := range c {
								ref[((iy*sh+ky)*ow+ix*sw+kx)*oc+o] += x[(iy*w+ix)*c+ic] * f[((o*kh+ky)*kw+kx)*c+ic]
							}
						}
					}
				}
			}
		}
		what := fmt.Sprintf("case %d in %dx%dx%d filter %dx%d stride %dx%d", it, h, w, c, kh, kw, sh, sw)
		shapeT := testTensor{name: "shape", typ: ttInt32, shape: []int32{4}, data: i32bytes([]int32{1, int32(oh), int32(ow), int32(oc)})}
		oc1 := opCase{code: opTransposeConv, optsType: 49, opts: []optField{ob(tcPadding, int32(padding)), oi(tcStrideW, int32(sw)), oi(tcStrideH, int32(sh))},
			ins:  []testTensor{shapeT, tensorF("f", []int{oc, kh, kw, c}, f), tensorF("x", []int{1, h, w, c}, nil)},
			feed: [][]byte{f32bytes(x)}, outs: []testTensor{tensorF("y", []int{1, oh, ow, oc}, nil)}}
		checkF(t, what, oc1.run(t, runtime.Config{})[0], ref)
	}
}

// kernelSeeds returns small single-operator models for the fuzz corpus.
func kernelSeeds() [][]byte {
	x := tensorQ("x", ttInt8, []int{1, 4, 4, 2}, qp{0.1, 0}, nil)
	var seeds [][]byte
	for _, oc := range []opCase{
		{code: opConv2d, optsType: 1, opts: []optField{oi(convStrideW, 1), oi(convStrideH, 1)},
			ins: []testTensor{x, tensorQ("f", ttInt8, []int{2, 3, 3, 2}, qp{0.1, 0}, make([]byte, 36))}, outs: []testTensor{tensorQ("y", ttInt8, []int{1, 4, 4, 2}, qp{0.2, 0}, nil)}},
		{code: opAveragePool2d, optsType: 5, opts: []optField{oi(poolStrideW, 1), oi(poolStrideH, 1), oi(poolFilterW, 2), oi(poolFilterH, 2)},
			ins: []testTensor{x}, outs: []testTensor{tensorQ("y", ttInt8, []int{1, 4, 4, 2}, qp{0.1, 0}, nil)}},
		{code: opAdd, ins: []testTensor{x, x}, outs: []testTensor{tensorQ("y", ttInt8, []int{1, 4, 4, 2}, qp{0.2, 0}, nil)}},
	} {
		seeds = append(seeds, oc.model().encode())
	}
	return seeds
}
