// Package dscnn builds a benchmark network: the depthwise-separable CNN of
// keyword spotting on microcontrollers (DS-CNN small: a 10x4 CONV_2D, four
// DEPTHWISE 3x3 + 1x1 CONV_2D blocks, average pool, FULLY_CONNECTED,
// SOFTMAX; about 2.7 M multiply-accumulates), int8 with per-channel weights,
// written both as TFLite and as ONNX QDQ from the same integers. Its weights
// are pseudo-random: it is for measuring the built-in engine against ONNX
// Runtime on convolutions (issue 4 §5), not for recognising anything.
//
// The TFLite form's output is computed by models/quant as well, so tests can
// hold the engine to it byte for byte.
package dscnn

import (
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/models/onnxwrite"
	"github.com/edgefleet/edgefleet/models/quant"
	tw "github.com/edgefleet/edgefleet/models/tflitewrite"
)

// Shape of the network: a 49x10 MFCC-like input, 64 channels, 12 classes.
const (
	InH, InW = 49, 10
	Channels = 64
	Classes  = 12
	Blocks   = 4
)

// Net is the built network.
type Net struct {
	TFLite []byte
	ONNX   []byte
	// Input is a sample int8 input [1, 49, 10, 1], which is also the ONNX
	// input's NCHW [1, 1, 49, 10] memory layout.
	Input []byte
	// Expected is the reference output of the TFLite form for Input.
	Expected []byte
	MACs     int

	inQ    quant.Params
	convs  []quant.Conv2D // conv1, then dw, pw per block
	pool   quant.Pool
	fc     quant.FullyConnected
	shapes [][4]int // input shape of each conv
}

type lcg uint64

func (l *lcg) next() uint32 {
	*l = *l*6364136223846793005 + 1442695040888963407
	return uint32(*l >> 33)
}

func (l *lcg) weights(n int) []int8 {
	v := make([]int8, n)
	for i := range v {
		v[i] = int8(int32(l.next()%255) - 127)
	}
	return v
}

func (l *lcg) scales(n int, denom float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(8+l.next()%8) / denom
	}
	return v
}

func (l *lcg) biases(n int, r int32) []int32 {
	v := make([]int32, n)
	for i := range v {
		v[i] = int32(l.next()%uint32(2*r)) - r
	}
	return v
}

// Build makes the network from a seed. The scales are chosen so that every
// layer's output uses a good part of the int8 range for random inputs.
func Build(seed uint64) (*Net, error) {
	r := lcg(seed)
	n := &Net{inQ: quant.Params{Scale: 1.0 / 8, ZeroPoint: -10}}
	actQ := quant.Params{Scale: 1.0 / 16, ZeroPoint: -128}
	relu := float32(0)
	inf := float32(math.Inf(1))
	n.convs = append(n.convs, quant.Conv2D{
		Filter: r.weights(Channels * 10 * 4), FilterShape: [4]int{Channels, 10, 4, 1},
		WeightScale: r.scales(Channels, 4096), Bias: r.biases(Channels, 3000),
		StrideH: 2, StrideW: 2, DilH: 1, DilW: 1, Same: true,
		In: n.inQ, Out: actQ, ActMin: relu, ActMax: inf,
	})
	for range Blocks {
		n.convs = append(n.convs, quant.Conv2D{
			Filter: r.weights(3 * 3 * Channels), FilterShape: [4]int{1, 3, 3, Channels}, Depthwise: true, Multiplier: 1,
			WeightScale: r.scales(Channels, 2048), Bias: r.biases(Channels, 3000),
			StrideH: 1, StrideW: 1, DilH: 1, DilW: 1, Same: true,
			In: actQ, Out: actQ, ActMin: relu, ActMax: inf,
		}, quant.Conv2D{
			Filter: r.weights(Channels * Channels), FilterShape: [4]int{Channels, 1, 1, Channels},
			WeightScale: r.scales(Channels, 8192), Bias: r.biases(Channels, 3000),
			StrideH: 1, StrideW: 1, DilH: 1, DilW: 1, Same: true,
			In: actQ, Out: actQ, ActMin: relu, ActMax: inf,
		})
	}
	oh, _ := quant.OutSize(InH, 10, 2, 1, true)
	ow, _ := quant.OutSize(InW, 4, 2, 1, true)
	n.pool = quant.Pool{FilterH: oh, FilterW: ow, StrideH: 1, StrideW: 1}
	n.fc = quant.FullyConnected{Units: Classes, Depth: Channels, Weights: r.weights(Classes * Channels),
		WeightScale: r.scales(Classes, 2048), Bias: r.biases(Classes, 3000), In: actQ, Out: quant.Params{Scale: 1.0 / 8, ZeroPoint: 0}}

	in := make([]int8, InH*InW)
	for i := range in {
		in[i] = int8(r.next())
	}
	n.Input = int8Bytes(in)
	out, err := n.reference(in)
	if err != nil {
		return nil, err
	}
	n.Expected = int8Bytes(out)
	if n.TFLite, err = n.encodeTFLite(); err != nil {
		return nil, fmt.Errorf("dscnn tflite: %w", err)
	}
	if n.ONNX, err = n.encodeONNX(); err != nil {
		return nil, fmt.Errorf("dscnn onnx: %w", err)
	}
	return n, nil
}

func (n *Net) reference(in []int8) ([]int8, error) {
	x, s := in, [4]int{1, InH, InW, 1}
	n.shapes = nil
	n.MACs = 0
	for _, c := range n.convs {
		n.shapes = append(n.shapes, s)
		var err error
		if x, s, err = c.Run(x, s); err != nil {
			return nil, err
		}
		k := c.FilterShape[1] * c.FilterShape[2]
		if !c.Depthwise {
			k *= c.FilterShape[3]
		}
		n.MACs += s[1] * s[2] * s[3] * k
	}
	x, s = n.pool.Run(x, s)
	if s != [4]int{1, 1, 1, Channels} {
		return nil, fmt.Errorf("dscnn: pooled shape %v", s)
	}
	logits := make([]int8, Classes)
	if err := n.fc.Run(x, logits); err != nil {
		return nil, err
	}
	n.MACs += Classes * Channels
	out := make([]int8, Classes)
	quant.Softmax(logits, n.fc.Out.Scale, 1, out)
	return out, nil
}

func (n *Net) encodeTFLite() ([]byte, error) {
	g := tw.New("edgefleet dscnn benchmark")
	pt := func(p quant.Params) *tw.Quant { return tw.PerTensor(p.Scale, int64(p.ZeroPoint)) }
	pc := func(s []float32, in quant.Params, axis int) (*tw.Quant, *tw.Quant) {
		bs := make([]float32, len(s))
		for i := range s {
			bs[i] = in.Scale * s[i]
		}
		zero := make([]int64, len(s))
		return &tw.Quant{Scale: s, ZeroPoint: zero, Axis: axis}, &tw.Quant{Scale: bs, ZeroPoint: zero}
	}
	x := g.Input("input", tw.Int8, []int{1, InH, InW, 1}, pt(n.inQ))
	for i, c := range n.convs {
		name := fmt.Sprintf("conv_%d", i)
		axis := 0
		if c.Depthwise {
			axis = 3
		}
		wq, bq := pc(c.WeightScale, c.In, axis)
		f := g.ConstInt8(name+"/filter", c.FilterShape[:], wq, c.Filter)
		b := g.ConstInt32(name+"/bias", []int{len(c.Bias)}, bq, c.Bias)
		if c.Depthwise {
			x = g.DepthwiseConv2D(name, x, f, b, tw.DepthwiseConv2DOptions{Padding: tw.Same, Activation: tw.ActRelu, Out: pt(c.Out)})
		} else {
			x = g.Conv2D(name, x, f, b, tw.Conv2DOptions{Padding: tw.Same, StrideH: c.StrideH, StrideW: c.StrideW, Activation: tw.ActRelu, Out: pt(c.Out)})
		}
	}
	x = g.AveragePool2D("pool", x, tw.Pool2DOptions{Padding: tw.Valid, FilterH: n.pool.FilterH, FilterW: n.pool.FilterW})
	x = g.Reshape("flat", x, []int{1, Channels})
	wq, bq := pc(n.fc.WeightScale, n.fc.In, 0)
	x = g.FullyConnected("fc", x, g.ConstInt8("fc/weights", []int{Classes, Channels}, wq, n.fc.Weights),
		g.ConstInt32("fc/bias", []int{Classes}, bq, n.fc.Bias), tw.FullyConnectedOptions{Out: pt(n.fc.Out)})
	g.Output(g.Softmax("probabilities", x, 1, nil))
	return g.Encode()
}

// encodeONNX writes the same integers in NCHW QDQ form. With one input
// channel, the NHWC input and the 10x4 filter have the same bytes in both
// layouts; depthwise filters are transposed to [C, 1, kh, kw].
func (n *Net) encodeONNX() ([]byte, error) {
	g := onnxwrite.New("dscnn", 13)
	g.Doc("edgefleet dscnn benchmark: the TFLite network's integers in QDQ form")
	qdq := func(name string, p quant.Params) (string, string) {
		g.Float32s(name+"/scale", nil, []float32{p.Scale})
		g.Int8s(name+"/zero_point", nil, []int8{int8(p.ZeroPoint)})
		return name + "/scale", name + "/zero_point"
	}
	g.Input("input", onnxwrite.Int8, []int{1, 1, InH, InW})
	s, z := qdq("input", n.inQ)
	g.Node("DequantizeLinear", []string{"input", s, z}, []string{"input/real"})
	x := "input/real"
	for i, c := range n.convs {
		name := fmt.Sprintf("conv_%d", i)
		kh, kw := c.FilterShape[1], c.FilterShape[2]
		oc := c.FilterShape[0]
		w := c.Filter
		shape := []int{oc, c.FilterShape[3], kh, kw}
		group := 1
		if c.Depthwise {
			oc = c.FilterShape[3]
			shape = []int{oc, 1, kh, kw}
			group = oc
			w = make([]int8, len(c.Filter))
			for ch := range oc {
				for k := range kh * kw {
					w[ch*kh*kw+k] = c.Filter[k*oc+ch]
				}
			}
		} else if c.FilterShape[3] != 1 && (kh != 1 || kw != 1) {
			return nil, fmt.Errorf("%s: OHWI to OIHW for %v is not needed by this network and not written", name, c.FilterShape)
		}
		g.Int8s(name+"/filter", shape, w)
		g.Float32s(name+"/filter/scale", []int{oc}, c.WeightScale)
		g.Int8s(name+"/filter/zero_point", []int{oc}, make([]int8, oc))
		g.Node("DequantizeLinear", []string{name + "/filter", name + "/filter/scale", name + "/filter/zero_point"}, []string{name + "/filter/real"}, onnxwrite.Int("axis", 0))
		bs := make([]float32, oc)
		for j := range bs {
			bs[j] = c.In.Scale * c.WeightScale[j]
		}
		g.Int32s(name+"/bias", []int{oc}, c.Bias)
		g.Float32s(name+"/bias/scale", []int{oc}, bs)
		g.Int32s(name+"/bias/zero_point", []int{oc}, make([]int32, oc))
		g.Node("DequantizeLinear", []string{name + "/bias", name + "/bias/scale", name + "/bias/zero_point"}, []string{name + "/bias/real"}, onnxwrite.Int("axis", 0))
		in := n.shapes[i]
		_, pt := quant.OutSize(in[1], kh, c.StrideH, 1, true)
		_, pl := quant.OutSize(in[2], kw, c.StrideW, 1, true)
		oh, _ := quant.OutSize(in[1], kh, c.StrideH, 1, true)
		ow, _ := quant.OutSize(in[2], kw, c.StrideW, 1, true)
		pb := max((oh-1)*c.StrideH+kh-in[1], 0) - pt
		pr := max((ow-1)*c.StrideW+kw-in[2], 0) - pl
		g.Node("Conv", []string{x, name + "/filter/real", name + "/bias/real"}, []string{name + "/conv"},
			onnxwrite.Ints("kernel_shape", int64(kh), int64(kw)), onnxwrite.Ints("strides", int64(c.StrideH), int64(c.StrideW)),
			onnxwrite.Ints("pads", int64(pt), int64(pl), int64(pb), int64(pr)), onnxwrite.Int("group", int64(group)))
		g.Node("Relu", []string{name + "/conv"}, []string{name + "/relu"})
		s, z := qdq(name, c.Out)
		g.Node("QuantizeLinear", []string{name + "/relu", s, z}, []string{name})
		g.Node("DequantizeLinear", []string{name, s, z}, []string{name + "/real"})
		x = name + "/real"
	}
	g.Node("GlobalAveragePool", []string{x}, []string{"pool"})
	s, z = qdq("pool", n.fc.In)
	g.Node("QuantizeLinear", []string{"pool", s, z}, []string{"pool/q"})
	g.Node("DequantizeLinear", []string{"pool/q", s, z}, []string{"pool/real"})
	shape := make([]byte, 16)
	shape[0], shape[8] = 1, Channels
	g.Initializer("flat/shape", onnxwrite.Int64, []int{2}, shape)
	g.Node("Reshape", []string{"pool/real", "flat/shape"}, []string{"flat"})
	g.Int8s("fc/weights", []int{Classes, Channels}, n.fc.Weights)
	g.Float32s("fc/weights/scale", []int{Classes}, n.fc.WeightScale)
	g.Int8s("fc/weights/zero_point", []int{Classes}, make([]int8, Classes))
	g.Node("DequantizeLinear", []string{"fc/weights", "fc/weights/scale", "fc/weights/zero_point"}, []string{"fc/weights/real"}, onnxwrite.Int("axis", 0))
	bs := make([]float32, Classes)
	for j := range bs {
		bs[j] = n.fc.In.Scale * n.fc.WeightScale[j]
	}
	g.Int32s("fc/bias", []int{Classes}, n.fc.Bias)
	g.Float32s("fc/bias/scale", []int{Classes}, bs)
	g.Int32s("fc/bias/zero_point", []int{Classes}, make([]int32, Classes))
	g.Node("DequantizeLinear", []string{"fc/bias", "fc/bias/scale", "fc/bias/zero_point"}, []string{"fc/bias/real"}, onnxwrite.Int("axis", 0))
	g.Node("Gemm", []string{"flat", "fc/weights/real", "fc/bias/real"}, []string{"fc/gemm"}, onnxwrite.Int("transB", 1))
	s, z = qdq("fc", n.fc.Out)
	g.Node("QuantizeLinear", []string{"fc/gemm", s, z}, []string{"fc"})
	g.Node("DequantizeLinear", []string{"fc", s, z}, []string{"fc/real"})
	g.Node("Softmax", []string{"fc/real"}, []string{"probabilities/real"}, onnxwrite.Int("axis", -1))
	s, z = qdq("probabilities", quant.SoftmaxOut)
	g.Node("QuantizeLinear", []string{"probabilities/real", s, z}, []string{"probabilities"})
	g.Output("probabilities", onnxwrite.Int8, []int{1, Classes})
	return g.Encode()
}

func int8Bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}
