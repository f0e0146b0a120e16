package models_test

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/models/quant"
	tw "github.com/edgefleet/edgefleet/models/tflitewrite"
)

type lcg uint64

func (l *lcg) next() uint32 {
	*l = *l*6364136223846793005 + 1442695040888963407
	return uint32(*l >> 33)
}

func (l *lcg) int8s(n int, lo int32) []int8 {
	v := make([]int8, n)
	for i := range v {
		v[i] = int8(lo + int32(l.next()%uint32(128-lo)))
	}
	return v
}

// scales returns n per-channel weight scales that are short binary
// fractions, as the demo generator makes them.
func (l *lcg) scales(n int, denom float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(8+l.next()%8) / denom
	}
	return v
}

func (l *lcg) int32s(n int, r int32) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(l.next()%uint32(2*r)) - r
	}
	return v
}

// TestRoundTripInt8CNN writes a small int8 CNN with the writer — per-channel
// CONV_2D (SAME, strided, dilated, RELU6), DEPTHWISE_CONV_2D (multiplier 2,
// VALID, dilated, RELU), a 1x1 CONV_2D branch joined by ADD (inputs of
// different scales, RELU), AVERAGE_POOL_2D, MAX_POOL_2D, RESHAPE,
// FULLY_CONNECTED, SOFTMAX — and checks that the agent's engine gives, byte
// for byte, what models/quant computes from the same integers.
func TestRoundTripInt8CNN(t *testing.T) {
	r := lcg(42)
	inShape := [4]int{1, 12, 10, 3}
	inQ := quant.Params{Scale: 1.0 / 32, ZeroPoint: -5}
	convQ := quant.Params{Scale: 1.0 / 16, ZeroPoint: -100}
	dwQ := quant.Params{Scale: 1.0 / 8, ZeroPoint: -128}
	fcQ := quant.Params{Scale: 1.0 / 16, ZeroPoint: 0}

	conv := quant.Conv2D{
		Filter: r.int8s(6*3*3*3, -127), FilterShape: [4]int{6, 3, 3, 3},
		WeightScale: r.scales(6, 4096), Bias: r.int32s(6, 2000),
		StrideH: 2, StrideW: 1, DilH: 1, DilW: 2, Same: true,
		In: inQ, Out: convQ, ActMin: 0, ActMax: 6,
	}
	dw := quant.Conv2D{
		Filter: r.int8s(3*2*12, -127), FilterShape: [4]int{1, 3, 2, 12}, Depthwise: true, Multiplier: 2,
		WeightScale: r.scales(12, 2048), Bias: r.int32s(12, 2000),
		StrideH: 1, StrideW: 1, DilH: 2, DilW: 1,
		In: convQ, Out: dwQ, ActMin: 0, ActMax: float32(inf()),
	}
	branchQ := quant.Params{Scale: 1.0 / 4, ZeroPoint: -30}
	addQ := quant.Params{Scale: 3.0 / 16, ZeroPoint: -100}
	branch := quant.Conv2D{
		Filter: r.int8s(12*12, -127), FilterShape: [4]int{12, 1, 1, 12},
		WeightScale: r.scales(12, 4096), Bias: r.int32s(12, 2000),
		StrideH: 1, StrideW: 1, DilH: 1, DilW: 1,
		In: dwQ, Out: branchQ, ActMin: float32(-inf()), ActMax: float32(inf()),
	}
	add := quant.Add{In1: dwQ, In2: branchQ, Out: addQ, ActMin: 0, ActMax: float32(inf())}
	avg := quant.Pool{FilterH: 2, FilterW: 2, StrideH: 2, StrideW: 2, Same: true}
	mp := quant.Pool{FilterH: 1, FilterW: 2, StrideH: 1, StrideW: 1, Max: true}
	fc := quant.FullyConnected{Units: 5, Depth: 48, Weights: r.int8s(5*48, -127), WeightScale: r.scales(5, 2048), Bias: r.int32s(5, 3000), In: addQ, Out: fcQ}
	input := r.int8s(1*12*10*3, -128)

	// The reference.
	x, s, err := conv.Run(input, inShape)
	if err != nil {
		t.Fatal(err)
	}
	if distinct(x) < 20 {
		t.Fatalf("conv output has %d distinct values; retune the scales so the test exercises the arithmetic", distinct(x))
	}
	if x, s, err = dw.Run(x, s); err != nil {
		t.Fatal(err)
	}
	if distinct(x) < 20 {
		t.Fatalf("depthwise output has %d distinct values; retune the scales", distinct(x))
	}
	b, _, err := branch.Run(x, s)
	if err != nil {
		t.Fatal(err)
	}
	if x, err = add.Run(x, b); err != nil {
		t.Fatal(err)
	}
	if distinct(x) < 20 {
		t.Fatalf("add output has %d distinct values; retune the scales", distinct(x))
	}
	x, s = avg.Run(x, s)
	x, s = mp.Run(x, s)
	if s != [4]int{1, 1, 4, 12} {
		t.Fatalf("reference shape %v", s)
	}
	logits := make([]int8, 5)
	if err := fc.Run(x, logits); err != nil {
		t.Fatal(err)
	}
	want := make([]int8, 5)
	quant.Softmax(logits, fcQ.Scale, 1, want)
	t.Logf("reference logits %v, probabilities %v", logits, want)

	// The file.
	pt := func(p quant.Params) *tw.Quant { return tw.PerTensor(p.Scale, int64(p.ZeroPoint)) }
	pc := func(s []float32, in quant.Params, axis int) (*tw.Quant, *tw.Quant) {
		bs := make([]float32, len(s))
		for i := range s {
			bs[i] = in.Scale * s[i]
		}
		return &tw.Quant{Scale: s, ZeroPoint: make([]int64, len(s)), Axis: axis}, &tw.Quant{Scale: bs, ZeroPoint: make([]int64, len(s))}
	}
	g := tw.New("int8 cnn")
	in := g.Input("image", tw.Int8, inShape[:], pt(inQ))
	wq, bq := pc(conv.WeightScale, inQ, 0)
	y := g.Conv2D("conv", in, g.ConstInt8("conv/filter", conv.FilterShape[:], wq, conv.Filter), g.ConstInt32("conv/bias", []int{6}, bq, conv.Bias),
		tw.Conv2DOptions{Padding: tw.Same, StrideH: 2, StrideW: 1, DilationH: 1, DilationW: 2, Activation: tw.ActRelu6, Out: pt(convQ)})
	wq, bq = pc(dw.WeightScale, convQ, 3)
	y = g.DepthwiseConv2D("dw", y, g.ConstInt8("dw/filter", dw.FilterShape[:], wq, dw.Filter), g.ConstInt32("dw/bias", []int{12}, bq, dw.Bias),
		tw.DepthwiseConv2DOptions{Padding: tw.Valid, DilationH: 2, DepthMultiplier: 2, Activation: tw.ActRelu, Out: pt(dwQ)})
	wq, bq = pc(branch.WeightScale, dwQ, 0)
	br := g.Conv2D("branch", y, g.ConstInt8("branch/filter", branch.FilterShape[:], wq, branch.Filter), g.ConstInt32("branch/bias", []int{12}, bq, branch.Bias),
		tw.Conv2DOptions{Padding: tw.Valid, Out: pt(branchQ)})
	y = g.Add("residual", y, br, tw.ActRelu, pt(addQ))
	y = g.AveragePool2D("avg", y, tw.Pool2DOptions{Padding: tw.Same, FilterH: 2, FilterW: 2, StrideH: 2, StrideW: 2})
	y = g.MaxPool2D("max", y, tw.Pool2DOptions{Padding: tw.Valid, FilterH: 1, FilterW: 2})
	y = g.Reshape("flat", y, []int{1, -1})
	wq, bq = pc(fc.WeightScale, addQ, 0)
	y = g.FullyConnected("fc", y, g.ConstInt8("fc/weights", []int{5, 48}, wq, fc.Weights), g.ConstInt32("fc/bias", []int{5}, bq, fc.Bias),
		tw.FullyConnectedOptions{Out: pt(fcQ)})
	g.Output(g.Softmax("probabilities", y, 1, nil))
	file, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}

	// LiteRT 2.5.3, run by hand on this file, gave the same bytes; so does
	// the engine in both its arithmetics.
	for _, rounding := range []string{"", "litert"} {
		be, err := runtime.New("tflite", runtime.Config{Settings: map[string]string{"rounding": rounding}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		m, err := be.Open(ctx, file, runtime.Options{})
		if err != nil {
			t.Fatalf("engine cannot open the written CNN: %v", err)
		}
		defer m.Close()
		sess, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		out := []runtime.Tensor{{}}
		if err := sess.Run(ctx, []runtime.Tensor{{DType: runtime.Int8, Shape: inShape[:], Data: int8Bytes(input)}}, out); err != nil {
			t.Fatal(err)
		}
		if got := asInt8(out[0].Data); !slices.Equal(got, want) {
			t.Fatalf("engine (rounding %q) answers %v, models/quant says %v", rounding, got, want)
		}
	}
	if slices.Max(want) == slices.Min(want) {
		t.Fatal("reference output is flat; the test would prove little")
	}
}

func int8Bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func inf() float64 { return math.Inf(1) }

func distinct(v []int8) int {
	seen := map[int8]bool{}
	for _, x := range v {
		seen[x] = true
	}
	return len(seen)
}

// TestRoundTripUint8FC checks the older asymmetric uint8 scheme the writer
// also writes: uint8 input, weights with a non-zero zero point, int32 bias,
// fused RELU, against the reference formula computed here.
func TestRoundTripUint8FC(t *testing.T) {
	r := lcg(7)
	const units, depth = 6, 20
	inQ := quant.Params{Scale: 1.0 / 32, ZeroPoint: 131}
	wScale, wZP := float32(1.0/256), int32(119)
	outQ := quant.Params{Scale: 1.0 / 8, ZeroPoint: 60}
	w := make([]byte, units*depth)
	for i := range w {
		w[i] = byte(r.next())
	}
	in := make([]byte, depth)
	for i := range in {
		in[i] = byte(r.next())
	}
	bias := r.int32s(units, 5000)

	mult := quant.QuantizeMultiplier(float64(inQ.Scale) * float64(wScale) / float64(outQ.Scale))
	want := make([]byte, units)
	for u := range units {
		var acc int32
		for d := range depth {
			acc += (int32(w[u*depth+d]) - wZP) * (int32(in[d]) - inQ.ZeroPoint)
		}
		v := mult.Apply(acc+bias[u]) + outQ.ZeroPoint
		want[u] = byte(min(max(v, outQ.ZeroPoint), 255)) // RELU clamps at the zero point
	}

	g := tw.New("uint8 fc")
	x := g.Input("x", tw.Uint8, []int{1, depth}, tw.PerTensor(inQ.Scale, int64(inQ.ZeroPoint)))
	wt := g.Const("w", tw.Uint8, []int{units, depth}, tw.PerTensor(wScale, int64(wZP)), w)
	bt := g.ConstInt32("b", []int{units}, tw.PerTensor(inQ.Scale*wScale, 0), bias)
	g.Output(g.FullyConnected("y", x, wt, bt, tw.FullyConnectedOptions{Activation: tw.ActRelu, Out: tw.PerTensor(outQ.Scale, int64(outQ.ZeroPoint))}))
	file, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	be, err := runtime.New("tflite", runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := be.Open(ctx, file, runtime.Options{})
	if err != nil {
		t.Fatalf("engine cannot open the written uint8 model: %v", err)
	}
	defer m.Close()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := []runtime.Tensor{{}}
	if err := s.Run(ctx, []runtime.Tensor{{DType: runtime.Uint8, Shape: []int{1, depth}, Data: in}}, out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out[0].Data, want) {
		t.Fatalf("engine answers %v, reference %v", out[0].Data, want)
	}
	if slices.Max(want) == slices.Min(want) {
		t.Fatal("reference output is flat; the test would prove little")
	}
	t.Logf("uint8 outputs %v", want)
}
