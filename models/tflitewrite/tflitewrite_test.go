package tflitewrite

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
)

// allOps builds a graph that uses every operator the writer supports.
func allOps(t testing.TB) *Graph {
	t.Helper()
	g := New("every op")
	in := g.Input("image", Float32, []int{1, 8, 8, 2}, nil)
	q := g.Quantize("image_q", in, Int8, PerTensor(0.05, -3))
	// CONV_2D with per-channel weights along axis 0.
	cw := make([]int8, 4*3*3*2)
	for i := range cw {
		cw[i] = int8(i%255 - 127)
	}
	filt := g.ConstInt8("conv/filter", []int{4, 3, 3, 2}, &Quant{Scale: []float32{0.01, 0.02, 0.03, 0.04}, ZeroPoint: []int64{0, 0, 0, 0}}, cw)
	bias := g.ConstInt32("conv/bias", []int{4}, &Quant{Scale: []float32{0.0005, 0.001, 0.0015, 0.002}, ZeroPoint: []int64{0, 0, 0, 0}, Axis: 0}, []int32{1, -2, 3, -4})
	c := g.Conv2D("conv", q, filt, bias, Conv2DOptions{Padding: Same, StrideH: 2, StrideW: 2, Activation: ActRelu6, Out: PerTensor(0.1, -128)})
	dwf := g.ConstInt8("dw/filter", []int{1, 3, 3, 8}, &Quant{Scale: []float32{1, 2, 3, 4, 5, 6, 7, 8}, ZeroPoint: make([]int64, 8), Axis: 3}, make([]int8, 72))
	dwb := g.ConstInt32("dw/bias", []int{8}, &Quant{Scale: []float32{1, 2, 3, 4, 5, 6, 7, 8}, ZeroPoint: make([]int64, 8)}, make([]int32, 8))
	d := g.DepthwiseConv2D("dw", c, dwf, dwb, DepthwiseConv2DOptions{Padding: Valid, DepthMultiplier: 2, DilationH: 1, Out: PerTensor(0.2, 5)})
	ap := g.AveragePool2D("avg", d, Pool2DOptions{Padding: Valid, FilterH: 2, FilterW: 2, StrideH: 1, StrideW: 1})
	mp := g.MaxPool2D("max", d, Pool2DOptions{Padding: Same, FilterH: 2, FilterW: 2, StrideH: 1, StrideW: 1})
	mp = g.AveragePool2D("max_small", mp, Pool2DOptions{Padding: Valid, FilterH: 2, FilterW: 2})
	sum := g.Add("sum", ap, mp, ActNone, PerTensor(0.4, 0))
	mean := g.Mean("mean", sum, []int{1, 2}, false, PerTensor(0.4, 0))
	fw := g.ConstInt8("fc/weights", []int{3, 8}, PerTensor(0.01, 0), make([]int8, 24))
	fb := g.ConstInt32("fc/bias", []int{3}, PerTensor(0.004, 0), []int32{7, 8, 9})
	fc := g.FullyConnected("fc", mean, fw, fb, FullyConnectedOptions{Activation: ActNone, Out: PerTensor(0.3, 2)})
	r := g.Relu("relu", fc, nil)
	rs := g.Reshape("flat", r, []int{-1})
	sm := g.Softmax("probs", rs, 1, nil)
	lg := g.Logistic("sig", rs, nil)
	g.Output(g.Dequantize("probs_f", sm))
	g.Output(lg)
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestEncodeReparses(t *testing.T) {
	g := allOps(t)
	data, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Identifier != "TFL3" || m.Version != 3 || m.Description != "every op" {
		t.Errorf("header: identifier %q version %d description %q", m.Identifier, m.Version, m.Description)
	}
	if len(m.Buffers) == 0 || len(m.Buffers[0]) != 0 {
		t.Fatalf("buffer 0 must exist and be empty, got %d buffers", len(m.Buffers))
	}
	for i, b := range m.Buffers {
		if len(b) > 0 && m.BufferPos[i]%bufferAlign != 0 {
			t.Errorf("buffer %d data at offset %d, not %d-aligned", i, m.BufferPos[i], bufferAlign)
		}
	}

	var names []string
	for _, op := range m.Ops {
		if op.Code < opPlaceholderForGreaterOpCodes && int32(op.Deprecated) != op.Code {
			t.Errorf("%s: deprecated_builtin_code %d, want %d", opNames[op.Code], op.Deprecated, op.Code)
		}
		if op.Code > opPlaceholderForGreaterOpCodes && op.Deprecated != opPlaceholderForGreaterOpCodes {
			t.Errorf("%s: deprecated_builtin_code %d, want the placeholder 127", opNames[op.Code], op.Deprecated)
		}
		names = append(names, opNames[op.Code])
	}
	want := []string{"QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D",
		"ADD", "MEAN", "FULLY_CONNECTED", "RELU", "RESHAPE", "SOFTMAX", "LOGISTIC", "DEQUANTIZE"}
	if !slices.Equal(names, want) {
		t.Errorf("ops %v\nwant %v", names, want)
	}

	byName := map[string]parsedTensor{}
	for _, pt := range m.Tensors {
		byName[pt.Name] = pt
	}
	conv := byName["conv/filter"]
	if conv.Type != Int8 || !slices.Equal(conv.Shape, []int32{4, 3, 3, 2}) || conv.Axis != 0 ||
		!slices.Equal(conv.Scale, []float32{0.01, 0.02, 0.03, 0.04}) || !slices.Equal(conv.ZeroPoint, []int64{0, 0, 0, 0}) {
		t.Errorf("conv/filter read back as %+v", conv)
	}
	if got := m.Buffers[conv.Buffer]; len(got) != 72 || int8(got[0]) != -127 || int8(got[71]) != 71-127 {
		t.Errorf("conv/filter data read back wrong: %d bytes, first %d", len(got), int8(got[0]))
	}
	if dw := byName["dw/filter"]; dw.Axis != 3 || len(dw.Scale) != 8 {
		t.Errorf("dw/filter quantization read back as axis %d, %d scales", dw.Axis, len(dw.Scale))
	}
	bias := byName["fc/bias"]
	if bias.Type != Int32 || binary.LittleEndian.Uint32(m.Buffers[bias.Buffer][8:]) != 9 {
		t.Errorf("fc/bias read back as %+v", bias)
	}
	if out := byName["dw"]; !slices.Equal(out.Shape, []int32{1, 2, 2, 8}) || out.Buffer != 0 {
		t.Errorf("dw output shape %v buffer %d, want [1 2 2 8] and no buffer", out.Shape, out.Buffer)
	}
	if p := byName["probs"]; p.Scale[0] != 1.0/256 || p.ZeroPoint[0] != -128 {
		t.Errorf("softmax output quantization %v/%v, want 1/256, -128", p.Scale, p.ZeroPoint)
	}
	if fc := byName["fc"]; !slices.Equal(fc.Shape, []int32{1, 3}) {
		t.Errorf("fc shape %v, want [1 3]", fc.Shape)
	}

	conv2d := m.Ops[1]
	if conv2d.OptionsType != optConv2D || conv2d.Options.int32(conv2DStrideH, 0) != 2 ||
		conv2d.Options.int8(conv2DActivation, 0) != int8(ActRelu6) || conv2d.Options.int32(conv2DDilationW, 1) != 1 {
		t.Errorf("CONV_2D options read back wrong (type %d)", conv2d.OptionsType)
	}
	if dw := m.Ops[2]; dw.Options.int32(dwDepthMultiplier, 0) != 2 || dw.Options.int8(dwPadding, 0) != int8(Valid) {
		t.Errorf("DEPTHWISE_CONV_2D options read back wrong")
	}
	if sm := m.Ops[11]; sm.OptionsType != optSoftmax || sm.Options.float32(softmaxBeta, 0) != 1 {
		t.Errorf("SOFTMAX options read back wrong")
	}
	rs := m.Ops[10]
	if rs.OptionsType != optReshape || !slices.Equal(rs.Options.int32s(reshapeNewShape), []int32{3}) || len(rs.Inputs) != 2 {
		t.Errorf("RESHAPE read back with options type %d, new_shape %v, inputs %v", rs.OptionsType, rs.Options.int32s(reshapeNewShape), rs.Inputs)
	}
	if mean := m.Ops[7]; mean.OptionsType != optReducer || mean.Options.bool(reducerKeepDims) {
		t.Errorf("MEAN options read back wrong")
	}
	if len(m.Inputs) != 1 || len(m.Outputs) != 2 || m.Tensors[m.Inputs[0]].Name != "image" {
		t.Errorf("graph inputs %v outputs %v", m.Inputs, m.Outputs)
	}
}

func TestOptionalBiasWrittenAsMinusOne(t *testing.T) {
	g := New("")
	in := g.Input("x", Float32, []int{2, 4}, nil)
	w := g.ConstFloat32("w", []int{3, 4}, make([]float32, 12))
	g.Output(g.FullyConnected("y", in, w, NoTensor, FullyConnectedOptions{KeepNumDims: true}))
	data, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Ops[0].Inputs; !slices.Equal(got, []int32{0, 1, -1}) {
		t.Errorf("inputs %v, want [0 1 -1]", got)
	}
	if !m.Ops[0].Options.bool(fcKeepNumDims) || m.Ops[0].Version != 1 {
		t.Errorf("keep_num_dims or version wrong")
	}
}

func TestEncodeDeterministic(t *testing.T) {
	a, err := allOps(t).Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := allOps(t).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same graph differ")
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name  string
		build func(g *Graph)
		want  string
	}{
		{"int8 without quant", func(g *Graph) { g.Input("x", Int8, []int{1}, nil) }, "needs quantization"},
		{"float with quant", func(g *Graph) { g.Input("x", Float32, []int{1}, PerTensor(1, 0)) }, "cannot be quantized"},
		{"zero dim", func(g *Graph) { g.Input("x", Float32, []int{1, 0}, nil) }, "dimension below 1"},
		{"huge", func(g *Graph) { g.Input("x", Float32, []int{1 << 20, 1 << 20}, nil) }, "more than"},
		{"duplicate name", func(g *Graph) { g.Input("x", Float32, []int{1}, nil); g.Input("x", Float32, []int{1}, nil) }, "used twice"},
		{"bad zero point", func(g *Graph) { g.Input("x", Int8, []int{1}, PerTensor(1, 200)) }, "zero point"},
		{"bad scale", func(g *Graph) { g.Input("x", Int8, []int{1}, PerTensor(0, 0)) }, "scale[0]"},
		{"per-channel count", func(g *Graph) {
			g.Input("x", Int8, []int{2, 3}, &Quant{Scale: []float32{1, 1}, ZeroPoint: []int64{0, 0}, Axis: 1})
		}, "per-channel scales"},
		{"data size", func(g *Graph) { g.ConstFloat32("w", []int{2, 2}, []float32{1}) }, "needs 16"},
		{"unknown tensor", func(g *Graph) { g.Relu("r", Tensor(7), nil) }, "no tensor 7"},
		{"fc depth", func(g *Graph) {
			x := g.Input("x", Float32, []int{1, 4}, nil)
			g.FullyConnected("y", x, g.ConstFloat32("w", []int{2, 5}, make([]float32, 10)), NoTensor, FullyConnectedOptions{})
		}, "depth 5"},
		{"fc weights -128", func(g *Graph) {
			x := g.Input("x", Int8, []int{1, 2}, PerTensor(1, 0))
			w := g.ConstInt8("w", []int{1, 2}, PerTensor(1, 0), []int8{1, -128})
			g.FullyConnected("y", x, w, NoTensor, FullyConnectedOptions{Out: PerTensor(1, 0)})
		}, "-128"},
		{"fc weights asymmetric", func(g *Graph) {
			x := g.Input("x", Int8, []int{1, 2}, PerTensor(1, 0))
			w := g.ConstInt8("w", []int{1, 2}, PerTensor(1, 3), []int8{1, 2})
			g.FullyConnected("y", x, w, NoTensor, FullyConnectedOptions{Out: PerTensor(1, 0)})
		}, "symmetric"},
		{"fc non-constant weights", func(g *Graph) {
			x := g.Input("x", Float32, []int{1, 2}, nil)
			w := g.Input("w", Float32, []int{1, 2}, nil)
			g.FullyConnected("y", x, w, NoTensor, FullyConnectedOptions{})
		}, "not constant"},
		{"fc missing out quant", func(g *Graph) {
			x := g.Input("x", Int8, []int{1, 2}, PerTensor(1, 0))
			w := g.ConstInt8("w", []int{1, 2}, PerTensor(1, 0), []int8{1, 2})
			g.FullyConnected("y", x, w, NoTensor, FullyConnectedOptions{})
		}, "needs quantization"},
		{"fc float bias", func(g *Graph) {
			x := g.Input("x", Int8, []int{1, 2}, PerTensor(1, 0))
			w := g.ConstInt8("w", []int{1, 2}, PerTensor(1, 0), []int8{1, 2})
			b := g.ConstFloat32("b", []int{1}, []float32{1})
			g.FullyConnected("y", x, w, b, FullyConnectedOptions{Out: PerTensor(1, 0)})
		}, "want quantized int32"},
		{"conv ranks", func(g *Graph) {
			x := g.Input("x", Float32, []int{1, 4, 4}, nil)
			g.Conv2D("y", x, g.ConstFloat32("w", []int{1, 1, 1, 1}, []float32{1}), NoTensor, Conv2DOptions{})
		}, "rank 4"},
		{"conv too small", func(g *Graph) {
			x := g.Input("x", Float32, []int{1, 2, 2, 1}, nil)
			g.Conv2D("y", x, g.ConstFloat32("w", []int{1, 3, 3, 1}, make([]float32, 9)), NoTensor, Conv2DOptions{Padding: Valid})
		}, "give no output"},
		{"dw multiplier", func(g *Graph) {
			x := g.Input("x", Float32, []int{1, 4, 4, 2}, nil)
			g.DepthwiseConv2D("y", x, g.ConstFloat32("w", []int{1, 1, 1, 3}, make([]float32, 3)), NoTensor, DepthwiseConv2DOptions{})
		}, "depth multiplier"},
		{"maxpool requant", func(g *Graph) {
			x := g.Input("x", Int8, []int{1, 2, 2, 1}, PerTensor(1, 0))
			g.MaxPool2D("y", x, Pool2DOptions{FilterH: 2, FilterW: 2, Out: PerTensor(2, 0)})
		}, "requires to be equal"},
		{"reshape count", func(g *Graph) { g.Reshape("y", g.Input("x", Float32, []int{2, 3}, nil), []int{4}) }, "cannot reshape"},
		{"add broadcast", func(g *Graph) {
			g.Add("y", g.Input("a", Float32, []int{2, 3}, nil), g.Input("b", Float32, []int{2}, nil), ActNone, nil)
		}, "do not broadcast"},
		{"add types", func(g *Graph) {
			g.Add("y", g.Input("a", Float32, []int{2}, nil), g.Input("b", Int8, []int{2}, PerTensor(1, 0)), ActNone, nil)
		}, "differ in type"},
		{"mean axis", func(g *Graph) { g.Mean("y", g.Input("x", Float32, []int{2, 3}, nil), []int{2}, false, nil) }, "outside rank"},
		{"softmax beta", func(g *Graph) { g.Softmax("y", g.Input("x", Float32, []int{3}, nil), 0, nil) }, "beta"},
		{"dequantize float", func(g *Graph) { g.Dequantize("y", g.Input("x", Float32, []int{3}, nil)) }, "want int8 or uint8"},
		{"quantize to float", func(g *Graph) { g.Quantize("y", g.Input("x", Float32, []int{3}, nil), Float32, nil) }, "want int8 or uint8"},
		{"activation", func(g *Graph) {
			g.Add("y", g.Input("a", Float32, []int{2}, nil), g.Input("b", Float32, []int{2}, nil), Activation(9), nil)
		}, "fused activation"},
		{"no outputs", func(g *Graph) { g.Input("x", Float32, []int{1}, nil) }, "0 outputs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := New("bad")
			c.build(g)
			data, err := g.Encode()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode = %d bytes, %v; want ErrInvalid", len(data), err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

func TestFirstErrorWins(t *testing.T) {
	g := New("")
	g.Input("x", Int8, []int{1}, nil)
	g.Input("y", Float32, []int{0}, nil)
	_, err := g.Encode()
	if err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("error %v, want the first mistake (tensor \"x\")", err)
	}
}

func BenchmarkEncode(b *testing.B) {
	g := allOps(b)
	for b.Loop() {
		if _, err := g.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestConvBias(t *testing.T) {
	g := New("")
	in := g.Input("x", Float32, []int{1, 3, 3, 2}, nil)
	g.Output(g.DepthwiseConv2D("z", in, g.ConstFloat32("d", []int{1, 1, 1, 2}, make([]float32, 2)), NoTensor, DepthwiseConv2DOptions{}))
	data, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseModel(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Ops[0].Inputs; len(got) != 2 {
		t.Errorf("DEPTHWISE_CONV_2D without bias has inputs %v, want two", got)
	}
	g = New("")
	in = g.Input("x", Float32, []int{1, 3, 3, 2}, nil)
	g.Output(g.Conv2D("y", in, g.ConstFloat32("w", []int{4, 1, 1, 2}, make([]float32, 8)), NoTensor, Conv2DOptions{}))
	if _, err := g.Encode(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "needs one") {
		t.Errorf("CONV_2D without bias: %v, want an error saying TFLite needs one", err)
	}
}
