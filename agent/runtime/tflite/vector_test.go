package tflite

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// portableOnly switches every vector kernel off for the rest of the test.
func portableOnly(t *testing.T) {
	g, dw, rq := gemmI16, haveDWAsm, haveRequantAsm
	gemmI16, haveDWAsm, haveRequantAsm = gemmI16Go, false, false
	t.Cleanup(func() { gemmI16, haveDWAsm, haveRequantAsm = g, dw, rq })
}

// TestVectorPathsMatchPortable runs convolutions whose channel counts
// take the vector kernels (multiples of 8) with and without them, in every
// arithmetic, and requires identical bytes. On machines without the fast
// path both runs are portable and the test still checks determinism.
func TestVectorPathsMatchPortable(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for it := range 24 {
		depthwise := it%2 == 0
		h, w, c := 3+r.IntN(8), 3+r.IntN(8), 8*(1+r.IntN(3))
		kh, kw, s := 1+r.IntN(3), 1+r.IntN(3), 1+r.IntN(2)
		padding := r.IntN(2)
		oc := 8 * (1 + r.IntN(3))
		code, otype := opConv2d, uint8(1)
		opts := []optField{ob(convPadding, int32(padding)), oi(convStrideW, int32(s)), oi(convStrideH, int32(s)), ob(convAct, actRelu6)}
		fshape := []int{oc, kh, kw, c}
		if depthwise {
			oc = c
			code, otype = opDepthwiseConv2d, 2
			opts = []optField{ob(dwPadding, int32(padding)), oi(dwStrideW, int32(s)), oi(dwStrideH, int32(s)), oi(dwMult, 1), ob(dwAct, actRelu6)}
			fshape = []int{1, kh, kw, oc}
		}
		g := refGeom(h, w, kh, kw, s, s, 1, 1, padding)
		if g.oh <= 0 || g.ow <= 0 {
			continue
		}
		x := make([]byte, h*w*c)
		f := make([]byte, runtime.NumElements(fshape))
		for i := range x {
			x[i] = byte(r.IntN(256))
		}
		for i := range f {
			f[i] = byte(r.IntN(255) + 1)
		}
		bias := make([]int32, oc)
		fs := make([]float32, oc)
		for i := range oc {
			bias[i] = int32(r.IntN(2001) - 1000)
			fs[i] = 0.002 + r.Float32()*0.01
		}
		axis := int32(0)
		if depthwise {
			axis = 3
		}
		for _, typ := range []int8{ttInt8, ttUint8} {
			qx, qy := qp{0.02, int64(r.IntN(20) - 10)}, qp{0.05 + r.Float32()*0.1, int64(r.IntN(20) - 10)}
			ft := testTensor{name: "f", typ: ttInt8, shape: i32s(fshape), data: f, scale: fs, zp: make([]int64, oc), qdim: axis}
			if typ == ttUint8 {
				qx.zp, qy.zp = 128, 120
				ft = tensorQ("f", ttUint8, fshape, qp{0.01, 127}, f)
			}
			oc1 := opCase{code: code, optsType: otype, opts: opts,
				ins: []testTensor{tensorQ("x", typ, []int{1, h, w, c}, qx, nil), ft,
					{name: "b", typ: ttInt32, shape: []int32{int32(oc)}, data: i32bytes(bias), scale: []float32{1}, zp: []int64{0}}},
				feed: [][]byte{x}, outs: []testTensor{tensorQ("y", typ, []int{1, g.oh, g.ow, oc}, qy, nil)}}
			for _, cfg := range arithModes {
				what := fmt.Sprintf("case %d %s type %d %s", it, opName(code, ""), typ, cfg.Settings["rounding"])
				fast := oc1.run(t, cfg)[0]
				var slow []byte
				t.Run("portable", func(t *testing.T) {
					portableOnly(t)
					slow = oc1.run(t, cfg)[0]
				})
				if !bytes.Equal(fast, slow) {
					t.Fatalf("%s: vector and portable kernels differ", what)
				}
			}
		}
	}
}
