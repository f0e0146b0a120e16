package tflite

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// More operators against references written here: the index, type and
// resize operators, the remaining element-wise and reduction ones, and
// quantized TRANSPOSE_CONV.

func seq(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i)
	}
	return v
}

func i32t(name string, shape []int, v []int) testTensor {
	return testTensor{name: name, typ: ttInt32, shape: i32s(shape), data: i32bytes(i32s(v))}
}

func TestIndexOps(t *testing.T) {
	x := seq(24) // shape [2,3,4]
	in := tensorF("x", []int{2, 3, 4}, nil)
	feed := [][]byte{f32bytes(x)}
	at := func(a, b, c int) float32 { return x[(a*3+b)*4+c] }
	run := func(oc opCase) [][]byte { return oc.run(t, runtime.Config{}) }

	t.Run("slice", func(t *testing.T) {
		var ref []float32
		for a := 1; a < 2; a++ {
			for b := 0; b < 3; b++ {
				for c := 1; c < 3; c++ {
					ref = append(ref, at(a, b, c))
				}
			}
		}
		oc := opCase{code: opSlice, ins: []testTensor{in, i32t("b", []int{3}, []int{1, 0, 1}), i32t("s", []int{3}, []int{1, -1, 2})}, feed: feed,
			outs: []testTensor{tensorF("y", []int{1, 3, 2}, nil)}}
		checkF(t, "slice", run(oc)[0], ref)
	})
	t.Run("pack unpack", func(t *testing.T) {
		a, b := seq(6), seq(6)
		for i := range b {
			b[i] += 100
		}
		var ref []float32
		for i := range 2 {
			for j := range 3 {
				ref = append(ref, a[i*3+j], b[i*3+j])
			}
		}
		oc := opCase{code: opPack, optsType: 59, opts: []optField{oi(packValues, 2), oi(packAxis, 2)},
			ins: []testTensor{tensorF("a", []int{2, 3}, nil), tensorF("b", []int{2, 3}, nil)}, feed: [][]byte{f32bytes(a), f32bytes(b)},
			outs: []testTensor{tensorF("y", []int{2, 3, 2}, nil)}}
		packed := run(oc)[0]
		checkF(t, "pack", packed, ref)
		uc := opCase{code: opUnpack, optsType: 64, opts: []optField{oi(unpackNum, 2), oi(unpackAxis, 2)},
			ins: []testTensor{tensorF("x", []int{2, 3, 2}, nil)}, feed: [][]byte{packed},
			outs: []testTensor{tensorF("a", []int{2, 3}, nil), tensorF("b", []int{2, 3}, nil)}}
		outs := run(uc)
		checkF(t, "unpack 0", outs[0], a)
		checkF(t, "unpack 1", outs[1], b)
	})
	t.Run("split_v", func(t *testing.T) {
		var r0, r1 []float32
		for a := range 2 {
			for b := range 3 {
				r0 = append(r0, at(a, b, 0))
				r1 = append(r1, at(a, b, 1), at(a, b, 2), at(a, b, 3))
			}
		}
		oc := opCase{code: opSplitV, optsType: 77, opts: []optField{oi(splitNum, 2)},
			ins: []testTensor{in, i32t("sizes", []int{2}, []int{1, -1}), i32t("axis", []int{1}, []int{-1})}, feed: feed,
			outs: []testTensor{tensorF("a", []int{2, 3, 1}, nil), tensorF("b", []int{2, 3, 3}, nil)}}
		outs := run(oc)
		checkF(t, "split_v 0", outs[0], r0)
		checkF(t, "split_v 1", outs[1], r1)
	})
	t.Run("gather_nd", func(t *testing.T) {
		var ref []float32
		for _, p := range [][2]int{{1, 2}, {0, 1}} {
			for c := range 4 {
				ref = append(ref, at(p[0], p[1], c))
			}
		}
		oc := opCase{code: opGatherNd, ins: []testTensor{in, i32t("i", []int{2, 2}, []int{1, 2, 0, 1})}, feed: feed,
			outs: []testTensor{tensorF("y", []int{2, 4}, nil)}}
		checkF(t, "gather_nd", run(oc)[0], ref)
	})
	t.Run("arg max min", func(t *testing.T) {
		v := []float32{3, 9, 1, 9, -2, 0, 5, -7}
		for _, code := range []int32{opArgMax, opArgMin} {
			oc := opCase{code: code, ins: []testTensor{tensorF("x", []int{2, 4}, nil), i32t("axis", []int{1}, []int{1})}, feed: [][]byte{f32bytes(v)},
				outs: []testTensor{{name: "y", typ: ttInt32, shape: []int32{2}}}}
			got := asI32(run(oc)[0])
			want := []int32{1, 2} // first maximum wins
			if code == opArgMin {
				want = []int32{2, 3}
			}
			if got[0] != want[0] || got[1] != want[1] {
				t.Fatalf("%s: got %v, want %v", opName(code, ""), got, want)
			}
		}
	})
	t.Run("shape fill", func(t *testing.T) {
		oc := opCase{code: opShape, ins: []testTensor{in}, feed: feed, outs: []testTensor{{name: "y", typ: ttInt32, shape: []int32{3}}}}
		if got := asI32(run(oc)[0]); got[0] != 2 || got[1] != 3 || got[2] != 4 {
			t.Fatalf("SHAPE gave %v", got)
		}
		fc := opCase{code: opFill, ins: []testTensor{i32t("dims", []int{2}, []int{2, 2}), tensorF("v", []int{}, nil)}, feed: [][]byte{f32bytes([]float32{2.5})},
			outs: []testTensor{tensorF("y", []int{2, 2}, nil)}}
		checkF(t, "fill", run(fc)[0], []float32{2.5, 2.5, 2.5, 2.5})
	})
	t.Run("reshape squeeze expand", func(t *testing.T) {
		for _, code := range []int32{opReshape, opSqueeze, opExpandDims} {
			oc := opCase{code: code, ins: []testTensor{in}, feed: feed, outs: []testTensor{tensorF("y", []int{6, 4}, nil)}}
			checkF(t, opName(code, ""), run(oc)[0], x)
		}
	})
}

func TestTypeOps(t *testing.T) {
	x := []float32{-1.5, -0.26, 0, 0.24, 0.26, 1, 100}
	q := qp{0.5, 3}
	qb := quantizeAll(x, q, ttInt8)
	run := func(oc opCase) []byte { return oc.run(t, runtime.Config{})[0] }
	t.Run("quantize dequantize", func(t *testing.T) {
		got := run(opCase{code: opQuantize, ins: []testTensor{tensorF("x", []int{7}, nil)}, feed: [][]byte{f32bytes(x)},
			outs: []testTensor{tensorQ("y", ttInt8, []int{7}, q, nil)}})
		if string(got) != string(qb) {
			t.Fatalf("QUANTIZE gave %v, want %v", asI8(got), asI8(qb))
		}
		deq := run(opCase{code: opDequantize, ins: []testTensor{tensorQ("x", ttInt8, []int{7}, q, nil)}, feed: [][]byte{qb},
			outs: []testTensor{tensorF("y", []int{7}, nil)}})
		checkF(t, "DEQUANTIZE", deq, dequantizeAll(qb, q, ttInt8))
		// int8 to uint8 requantization keeps the real values.
		q2 := qp{0.25, 128}
		rq := run(opCase{code: opQuantize, ins: []testTensor{tensorQ("x", ttInt8, []int{7}, q, nil)}, feed: [][]byte{qb},
			outs: []testTensor{tensorQ("y", ttUint8, []int{7}, q2, nil)}})
		checkQ(t, "requantize", rq, dequantizeAll(qb, q, ttInt8), q2, ttUint8, 0)
	})
	t.Run("cast", func(t *testing.T) {
		got := asI32(run(opCase{code: opCast, ins: []testTensor{tensorF("x", []int{7}, nil)}, feed: [][]byte{f32bytes(x)},
			outs: []testTensor{{name: "y", typ: ttInt32, shape: []int32{7}}}}))
		for i, v := range x {
			if got[i] != int32(v) {
				t.Fatalf("CAST gave %v for %v", got, x)
			}
		}
	})
	t.Run("prelu", func(t *testing.T) {
		xs := []float32{-2, -1, 0, 1, 2, -0.5}
		alpha := []float32{0.1, 0.2, 0.3}
		var ref []float32
		for i, v := range xs {
			if v < 0 {
				v *= alpha[i%3]
			}
			ref = append(ref, v)
		}
		fc := opCase{code: opPrelu, ins: []testTensor{tensorF("x", []int{2, 3}, nil), tensorF("a", []int{3}, alpha)}, feed: [][]byte{f32bytes(xs)},
			outs: []testTensor{tensorF("y", []int{2, 3}, nil)}}
		checkF(t, "prelu float", run(fc), ref)
		qx, qa, qy := qp{1.0 / 64, 0}, qp{1.0 / 256, 0}, qp{1.0 / 64, 0}
		xb, ab := quantizeAll(xs, qx, ttInt8), quantizeAll(alpha, qa, ttInt8)
		xr, ar := dequantizeAll(xb, qx, ttInt8), dequantizeAll(ab, qa, ttInt8)
		for i, v := range xr {
			if v < 0 {
				v *= ar[i%3]
			}
			ref[i] = v
		}
		qc := opCase{code: opPrelu, ins: []testTensor{tensorQ("x", ttInt8, []int{2, 3}, qx, nil), tensorQ("a", ttInt8, []int{3}, qa, ab)}, feed: [][]byte{xb},
			outs: []testTensor{tensorQ("y", ttInt8, []int{2, 3}, qy, nil)}}
		checkQ(t, "prelu int8", run(qc), ref, qy, ttInt8, 1)
	})
}

func TestMoreElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	a, b := randF(r, 12), randF(r, 12)
	for i := range b {
		if math.Abs(float64(b[i])) < 0.1 {
			b[i] = 0.5
		}
	}
	run := func(oc opCase) []byte { return oc.run(t, runtime.Config{})[0] }
	for _, code := range []int32{opDiv, opFloorDiv, opSquaredDifference} {
		ref := make([]float32, 12)
		for i := range ref {
			switch code {
			case opDiv:
				ref[i] = a[i] / b[i]
			case opFloorDiv:
				ref[i] = float32(math.Floor(float64(a[i] / b[i])))
			case opSquaredDifference:
				ref[i] = (a[i] - b[i]) * (a[i] - b[i])
			}
		}
		oc := opCase{code: code, ins: []testTensor{tensorF("a", []int{3, 4}, nil), tensorF("b", []int{3, 4}, nil)}, feed: [][]byte{f32bytes(a), f32bytes(b)},
			outs: []testTensor{tensorF("y", []int{3, 4}, nil)}}
		checkF(t, opName(code, ""), run(oc), ref)
	}
	pos := make([]float32, 12)
	for i := range pos {
		pos[i] = 0.1 + float32(i)
	}
	for _, code := range []int32{opSqrt, opRsqrt, opLog, opLeakyRelu} {
		f := unaryFunc(code, 0.2)
		ref := make([]float32, 12)
		in := pos
		if code == opLeakyRelu {
			in = a
		}
		for i, v := range in {
			ref[i] = f(v)
		}
		// Spot-check the table function itself against math.
		switch code {
		case opSqrt:
			if f(4) != 2 {
				t.Fatal("sqrt")
			}
		case opLeakyRelu:
			if f(-1) != -0.2 || f(3) != 3 {
				t.Fatal("leaky relu")
			}
		}
		oc := opCase{code: code, optsType: 74, opts: []optField{of(leakyAlpha, 0.2)}, ins: []testTensor{tensorF("x", []int{12}, nil)}, feed: [][]byte{f32bytes(in)},
			outs: []testTensor{tensorF("y", []int{12}, nil)}}
		checkF(t, opName(code, ""), run(oc), ref)
	}
	// SUM, REDUCE_MAX and REDUCE_MIN over the last axis.
	for _, code := range []int32{opSum, opReduceMax, opReduceMin} {
		ref := make([]float32, 3)
		for i := range 3 {
			row := a[i*4 : i*4+4]
			v := row[0]
			if code == opSum {
				v = 0
			}
			for j, x := range row {
				switch code {
				case opSum:
					v += x
				case opReduceMax:
					v = max(v, x)
				case opReduceMin:
					if j > 0 {
						v = min(v, x)
					}
				}
			}
			ref[i] = v
		}
		oc := opCase{code: code, optsType: 27, ins: []testTensor{tensorF("x", []int{3, 4}, nil), i32t("axes", []int{1}, []int{1})}, feed: [][]byte{f32bytes(a)},
			outs: []testTensor{tensorF("y", []int{3}, nil)}}
		checkF(t, opName(code, ""), run(oc), ref)
	}
}

func TestResizeKernels(t *testing.T) {
	x := seq(2 * 3 * 2) // [1,2,3,2]
	in := tensorF("x", []int{1, 2, 3, 2}, nil)
	size := i32t("size", []int{2}, []int{4, 6})
	// Nearest neighbour, no corner alignment: output (y, x) reads
	// input (floor(y·2/4), floor(x·3/6)).
	var ref []float32
	for y := range 4 {
		for xx := range 6 {
			for c := range 2 {
				ref = append(ref, x[((y/2)*3+xx/2)*2+c])
			}
		}
	}
	oc := opCase{code: opResizeNearestNeighbor, ins: []testTensor{in, size}, feed: [][]byte{f32bytes(x)}, outs: []testTensor{tensorF("y", []int{1, 4, 6, 2}, nil)}}
	checkF(t, "nearest", oc.run(t, runtime.Config{})[0], ref)
	// Bilinear with half-pixel centres on a linear ramp stays linear
	// inside and clamps at the borders.
	ramp := []float32{0, 10, 20, 30} // [1,1,4,1]
	bl := opCase{code: opResizeBilinear, optsType: 15, opts: []optField{ob(3, 1)},
		ins:  []testTensor{tensorF("x", []int{1, 1, 4, 1}, nil), i32t("size", []int{2}, []int{1, 8})},
		feed: [][]byte{f32bytes(ramp)}, outs: []testTensor{tensorF("y", []int{1, 1, 8, 1}, nil)}}
	want := []float32{0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30}
	checkF(t, "bilinear", bl.run(t, runtime.Config{})[0], want)
	// The int8 version lands within a step of the float one.
	q := qp{0.25, -60}
	qc := opCase{code: opResizeBilinear, optsType: 15, opts: []optField{ob(3, 1)},
		ins:  []testTensor{tensorQ("x", ttInt8, []int{1, 1, 4, 1}, q, nil), i32t("size", []int{2}, []int{1, 8})},
		feed: [][]byte{quantizeAll(ramp, q, ttInt8)}, outs: []testTensor{tensorQ("y", ttInt8, []int{1, 1, 8, 1}, q, nil)}}
	checkQ(t, "bilinear int8", qc.run(t, runtime.Config{})[0], want, q, ttInt8, 1)
}

func TestTransposeConvQuantized(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	h, w, c, oc, k, s := 3, 4, 2, 3, 3, 2
	oh, ow := (h-1)*s+k, (w-1)*s+k
	x, f := randF(r, h*w*c), randF(r, oc*k*k*c)
	qx, qf := qp{2.0 / 255, 5}, qp{1.0 / 127, 0}
	xb, fb := quantizeAll(x, qx, ttInt8), quantizeAll(f, qf, ttInt8)
	xr, fr := dequantizeAll(xb, qx, ttInt8), dequantizeAll(fb, qf, ttInt8)
	ref := make([]float32, oh*ow*oc)
	for iy := range h {
		for ix := range w {
			for ky := range k {
				for kx := range k {
					for o := range oc {
						for ic := range c {
							ref[((iy*s+ky)*ow+ix*s+kx)*oc+o] += xr[(iy*w+ix)*c+ic] * fr[((o*k+ky)*k+kx)*c+ic]
						}
					}
				}
			}
		}
	}
	qy := qp{float32(maxAbs(ref)/100 + 0.01), -3}
	shapeT := i32t("shape", []int{4}, []int{1, oh, ow, oc})
	tc := opCase{code: opTransposeConv, optsType: 49, opts: []optField{ob(tcPadding, padValid), oi(tcStrideW, int32(s)), oi(tcStrideH, int32(s))},
		ins:  []testTensor{shapeT, tensorQ("f", ttInt8, []int{oc, k, k, c}, qf, fb), tensorQ("x", ttInt8, []int{1, h, w, c}, qx, nil)},
		feed: [][]byte{xb}, outs: []testTensor{tensorQ("y", ttInt8, []int{1, oh, ow, oc}, qy, nil)}}
	for _, cfg := range arithModes {
		checkQ(t, "transpose conv int8 "+cfg.Settings["rounding"], tc.run(t, cfg)[0], ref, qy, ttInt8, 1)
	}
}

// TestFoldPad checks that a PAD feeding a VALID convolution is folded
// away and that the result equals running the PAD (kept when its output
// is also a graph output).
func TestFoldPad(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	for _, code := range []int32{opConv2d, opDepthwiseConv2d} {
		h, w, c := 5, 6, 8
		x := make([]byte, h*w*c)
		for i := range x {
			x[i] = byte(r.IntN(256))
		}
		qx := qp{0.05, -7}
		m := &testModel{}
		in := m.add(tensorQ("x", ttInt8, []int{1, h, w, c}, qx, nil))
		pads := m.add(i32t("pads", []int{4, 2}, []int{0, 0, 1, 2, 2, 1, 0, 0}))
		padded := m.add(tensorQ("p", ttInt8, []int{1, h + 3, w + 3, c}, qx, nil))
		fshape, otype := []int{8, 3, 3, c}, uint8(1)
		opts := []optField{ob(convPadding, padValid), oi(convStrideW, 2), oi(convStrideH, 1)}
		if code == opDepthwiseConv2d {
			fshape, otype = []int{1, 3, 3, c}, 2
			opts = []optField{ob(dwPadding, padValid), oi(dwStrideW, 2), oi(dwStrideH, 1), oi(dwMult, 1)}
		}
		fb := make([]byte, runtime.NumElements(fshape))
		for i := range fb {
			fb[i] = byte(r.IntN(255) + 1)
		}
		f := m.add(tensorQ("f", ttInt8, fshape, qp{0.01, 0}, fb))
		oh, ow := h+3-2, (w+3-3)/2+1
		out := m.add(tensorQ("y", ttInt8, []int{1, oh, ow, 8}, qp{0.1, 3}, nil))
		m.ops = []testOp{
			{code: opPad, inputs: []int32{in, pads}, outputs: []int32{padded}},
			{code: code, optsType: otype, opts: opts, inputs: []int32{padded, f, -1}, outputs: []int32{out}},
		}
		m.inputs, m.outputs = []int32{in}, []int32{out}
		for _, cfg := range arithModes {
			folded, err := New(cfg).Open(t.Context(), m.encode(), runtime.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if n := len(folded.(*Model).g.ops); n != 1 {
				t.Fatalf("%s: %d operators after folding, want 1", opName(code, ""), n)
			}
			m.outputs = []int32{out, padded}
			kept, err := New(cfg).Open(t.Context(), m.encode(), runtime.Options{})
			m.outputs = []int32{out}
			if err != nil {
				t.Fatal(err)
			}
			if n := len(kept.(*Model).g.ops); n != 2 {
				t.Fatalf("%s: PAD folded although its output is a graph output", opName(code, ""))
			}
			a := run1(t, folded.(*Model), x)[0]
			b := run1(t, kept.(*Model), x)[0]
			if string(a) != string(b) {
				t.Fatalf("%s %s: folded PAD gives %v, PAD then convolution %v", opName(code, ""), cfg.Settings["rounding"], asI8(a), asI8(b))
			}
		}
	}
}

// TestReferenceActivations checks the fixed-point int8 LOGISTIC and TANH
// tables (used when the output has the spec's fixed quantization) over
// every input value against the float functions.
func TestReferenceActivations(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, code := range []int32{opLogistic, opTanh} {
		qy := qp{1.0 / 256, -128}
		if code == opTanh {
			qy = qp{1.0 / 128, 0}
		}
		for _, qx := range []qp{{1.0 / 16, 0}, {0.05, -3}, {0.1, 20}} {
			var lut [256]byte
			if !refActivation(&lut, code, qx.scale, int32(qx.zp), qy.scale, int32(qy.zp)) {
				t.Fatalf("%s: reference table refused input scale %v", opName(code, ""), qx.scale)
			}
			f := unaryFunc(code, 0)
			ref := make([]float32, 256)
			for i, v := range dequantizeAll(all, qx, ttInt8) {
				ref[i] = f(v)
			}
			oc := opCase{code: code, ins: []testTensor{tensorQ("x", ttInt8, []int{256}, qx, nil)}, feed: [][]byte{all},
				outs: []testTensor{tensorQ("y", ttInt8, []int{256}, qy, nil)}}
			got := oc.run(t, runtime.Config{})[0]
			if string(got) != string(lut[:]) {
				t.Fatalf("%s: the kernel did not use the reference table", opName(code, ""))
			}
			checkQ(t, opName(code, "")+" reference", got, ref, qy, ttInt8, 1)
		}
	}
}
