package tflitewrite

import (
	"fmt"
	"slices"

	flatbuffers "github.com/google/flatbuffers/go"
)

// NoTensor stands for an omitted optional input: the bias of
// FULLY_CONNECTED (written as -1, as converters do) or of
// DEPTHWISE_CONV_2D (written as one input fewer, see convInputs).
const NoTensor Tensor = -2

// convInputs lists a convolution's inputs. Without a bias the operator gets
// two inputs, not a third of -1: TFLite's convolutions take "three inputs"
// to mean a bias is there and fail to prepare on -1 (LiteRT 2.5.3: "Tensor
// at index 2 was optional but was expected"), where FULLY_CONNECTED reads
// its bias as optional.
func convInputs(in, filter, bias Tensor) []Tensor {
	if bias == NoTensor {
		return []Tensor{in, filter}
	}
	return []Tensor{in, filter, bias}
}

// FullyConnectedOptions configure FullyConnected.
type FullyConnectedOptions struct {
	Activation Activation
	// KeepNumDims keeps the input's leading dimensions instead of folding
	// them into one batch dimension.
	KeepNumDims bool
	// Out is the output quantization, required for quantized inputs.
	Out *Quant
}

// FullyConnected adds out = in · weightsᵀ + bias. weights is [units, depth]
// where depth is the last dimension of in; bias is [units] or NoTensor.
// Quantized layers use int8 inputs with int8 symmetric weights (per-tensor,
// or per-channel along axis 0) or uint8 inputs with uint8 weights; biases
// are int32 with scale input·weight.
func (g *Graph) FullyConnected(name string, in, weights, bias Tensor, o FullyConnectedOptions) Tensor {
	what := "FULLY_CONNECTED " + name
	if !g.check(in, what+" input") || !g.check(weights, what+" weights") {
		return invalid
	}
	x, w := g.t(in), g.t(weights)
	if len(x.shape) == 0 {
		return g.fail("%s: input %q is a scalar", what, x.name)
	}
	if len(w.shape) != 2 {
		return g.fail("%s: weights %q have shape %v, want [units, depth]", what, w.name, w.shape)
	}
	depth := x.shape[len(x.shape)-1]
	units := w.shape[0]
	if w.shape[1] != depth {
		return g.fail("%s: weights %q have depth %d, input %q has %d", what, w.name, w.shape[1], x.name, depth)
	}
	if !g.weightsFit(what, x, w, 0) || !g.biasFits(what, x, w, bias, units) {
		return invalid
	}
	var shape []int
	if o.KeepNumDims {
		shape = append(slices.Clone(x.shape[:len(x.shape)-1]), units)
	} else {
		shape = []int{numElements(x.shape) / depth, units}
	}
	out := g.addTensor(name, x.typ, shape, o.Out, nil)
	if out == invalid {
		return invalid
	}
	keep := o.KeepNumDims
	act := o.Activation
	if !g.activationOK(what, act) {
		return invalid
	}
	g.addOp(opFullyConnected, x.typ, []Tensor{in, weights, bias}, out, options{optFullyConnected, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(fcNumFields)
		b.PrependInt8Slot(fcActivation, int8(act), 0)
		b.PrependBoolSlot(fcKeepNumDims, keep, false)
		return b.EndObject()
	}})
	return out
}

// Conv2DOptions configure Conv2D.
type Conv2DOptions struct {
	Padding              Padding
	StrideH, StrideW     int // 0 means 1
	DilationH, DilationW int // 0 means 1
	Activation           Activation
	Out                  *Quant
}

// Conv2D adds a 2-D convolution of an NHWC input with an [out, kh, kw, in]
// filter (int8 per-channel along axis 0 for int8 inputs) and an [out] bias,
// which TFLite requires for this operator.
func (g *Graph) Conv2D(name string, in, filter, bias Tensor, o Conv2DOptions) Tensor {
	what := "CONV_2D " + name
	if !g.check(in, what+" input") || !g.check(filter, what+" filter") {
		return invalid
	}
	x, f := g.t(in), g.t(filter)
	if len(x.shape) != 4 || len(f.shape) != 4 {
		return g.fail("%s: input %v and filter %v must both be rank 4 (NHWC, OHWI)", what, x.shape, f.shape)
	}
	if x.shape[3]%f.shape[3] != 0 {
		return g.fail("%s: input depth %d is not a multiple of filter depth %d", what, x.shape[3], f.shape[3])
	}
	sh, sw, dh, dw := orOne(o.StrideH), orOne(o.StrideW), orOne(o.DilationH), orOne(o.DilationW)
	oh, ok1 := outSize(x.shape[1], f.shape[1], sh, dh, o.Padding)
	ow, ok2 := outSize(x.shape[2], f.shape[2], sw, dw, o.Padding)
	if !ok1 || !ok2 || sh < 1 || sw < 1 || dh < 1 || dw < 1 {
		return g.fail("%s: input %v, filter %v, strides %dx%d, dilations %dx%d give no output", what, x.shape, f.shape, sh, sw, dh, dw)
	}
	cout := f.shape[0]
	if bias == NoTensor {
		// TFLite's CONV_2D kernel refuses to prepare without one (LiteRT
		// 2.5.3: "has_bias was not true").
		return g.fail("%s: no bias; TFLite's CONV_2D needs one (give zeros)", what)
	}
	if !g.weightsFit(what, x, f, 0) || !g.biasFits(what, x, f, bias, cout) || !g.activationOK(what, o.Activation) || !g.paddingOK(what, o.Padding) {
		return invalid
	}
	out := g.addTensor(name, x.typ, []int{x.shape[0], oh, ow, cout}, o.Out, nil)
	if out == invalid {
		return invalid
	}
	g.addOp(opConv2D, x.typ, convInputs(in, filter, bias), out, options{optConv2D, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(conv2DNumFields)
		b.PrependInt32Slot(conv2DDilationH, int32(dh), 1)
		b.PrependInt32Slot(conv2DDilationW, int32(dw), 1)
		b.PrependInt32Slot(conv2DStrideH, int32(sh), 0)
		b.PrependInt32Slot(conv2DStrideW, int32(sw), 0)
		b.PrependInt8Slot(conv2DActivation, int8(o.Activation), 0)
		b.PrependInt8Slot(conv2DPadding, int8(o.Padding), 0)
		return b.EndObject()
	}})
	return out
}

// DepthwiseConv2DOptions configure DepthwiseConv2D.
type DepthwiseConv2DOptions struct {
	Padding              Padding
	StrideH, StrideW     int // 0 means 1
	DilationH, DilationW int // 0 means 1
	// DepthMultiplier is output channels per input channel; 0 means 1.
	DepthMultiplier int
	Activation      Activation
	Out             *Quant
}

// DepthwiseConv2D adds a depthwise convolution of an NHWC input with a
// [1, kh, kw, in·multiplier] filter (int8 per-channel along axis 3 for
// int8 inputs) and an optional bias.
func (g *Graph) DepthwiseConv2D(name string, in, filter, bias Tensor, o DepthwiseConv2DOptions) Tensor {
	what := "DEPTHWISE_CONV_2D " + name
	if !g.check(in, what+" input") || !g.check(filter, what+" filter") {
		return invalid
	}
	x, f := g.t(in), g.t(filter)
	if len(x.shape) != 4 || len(f.shape) != 4 || f.shape[0] != 1 {
		return g.fail("%s: input %v must be NHWC and filter %v [1, kh, kw, channels]", what, x.shape, f.shape)
	}
	dm := orOne(o.DepthMultiplier)
	if dm < 1 || f.shape[3] != x.shape[3]*dm {
		return g.fail("%s: filter has %d channels, input %d × depth multiplier %d", what, f.shape[3], x.shape[3], dm)
	}
	sh, sw, dh, dw := orOne(o.StrideH), orOne(o.StrideW), orOne(o.DilationH), orOne(o.DilationW)
	oh, ok1 := outSize(x.shape[1], f.shape[1], sh, dh, o.Padding)
	ow, ok2 := outSize(x.shape[2], f.shape[2], sw, dw, o.Padding)
	if !ok1 || !ok2 || sh < 1 || sw < 1 || dh < 1 || dw < 1 {
		return g.fail("%s: input %v, filter %v, strides %dx%d, dilations %dx%d give no output", what, x.shape, f.shape, sh, sw, dh, dw)
	}
	cout := f.shape[3]
	if !g.weightsFit(what, x, f, 3) || !g.biasFits(what, x, f, bias, cout) || !g.activationOK(what, o.Activation) || !g.paddingOK(what, o.Padding) {
		return invalid
	}
	out := g.addTensor(name, x.typ, []int{x.shape[0], oh, ow, cout}, o.Out, nil)
	if out == invalid {
		return invalid
	}
	g.addOp(opDepthwiseConv2D, x.typ, convInputs(in, filter, bias), out, options{optDepthwiseConv2D, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(dwNumFields)
		b.PrependInt32Slot(dwDilationH, int32(dh), 1)
		b.PrependInt32Slot(dwDilationW, int32(dw), 1)
		b.PrependInt32Slot(dwDepthMultiplier, int32(dm), 0)
		b.PrependInt32Slot(dwStrideH, int32(sh), 0)
		b.PrependInt32Slot(dwStrideW, int32(sw), 0)
		b.PrependInt8Slot(dwActivation, int8(o.Activation), 0)
		b.PrependInt8Slot(dwPadding, int8(o.Padding), 0)
		return b.EndObject()
	}})
	return out
}

// Pool2DOptions configure AveragePool2D and MaxPool2D.
type Pool2DOptions struct {
	Padding          Padding
	StrideH, StrideW int // 0 means 1
	FilterH, FilterW int
	Activation       Activation
	// Out defaults to the input's quantization, which TFLite requires.
	Out *Quant
}

// AveragePool2D adds an average pool over an NHWC input.
func (g *Graph) AveragePool2D(name string, in Tensor, o Pool2DOptions) Tensor {
	return g.pool(opAveragePool2D, "AVERAGE_POOL_2D "+name, name, in, o)
}

// MaxPool2D adds a max pool over an NHWC input.
func (g *Graph) MaxPool2D(name string, in Tensor, o Pool2DOptions) Tensor {
	return g.pool(opMaxPool2D, "MAX_POOL_2D "+name, name, in, o)
}

func (g *Graph) pool(code int32, what, name string, in Tensor, o Pool2DOptions) Tensor {
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if len(x.shape) != 4 {
		return g.fail("%s: input %q has shape %v, want NHWC", what, x.name, x.shape)
	}
	if x.typ == Int32 {
		return g.fail("%s: input %q is int32; pools take float32, int8 or uint8", what, x.name)
	}
	sh, sw := orOne(o.StrideH), orOne(o.StrideW)
	if o.FilterH < 1 || o.FilterW < 1 {
		return g.fail("%s: filter %dx%d, want at least 1x1", what, o.FilterH, o.FilterW)
	}
	oh, ok1 := outSize(x.shape[1], o.FilterH, sh, 1, o.Padding)
	ow, ok2 := outSize(x.shape[2], o.FilterW, sw, 1, o.Padding)
	if !ok1 || !ok2 || sh < 1 || sw < 1 {
		return g.fail("%s: input %v, filter %dx%d, strides %dx%d give no output", what, x.shape, o.FilterH, o.FilterW, sh, sw)
	}
	if !g.activationOK(what, o.Activation) || !g.paddingOK(what, o.Padding) || !g.sameQuant(what, x, o.Out) {
		return invalid
	}
	out := g.addTensor(name, x.typ, []int{x.shape[0], oh, ow, x.shape[3]}, orQuant(o.Out, x.quant), nil)
	if out == invalid {
		return invalid
	}
	g.addOp(code, x.typ, []Tensor{in}, out, options{optPool2D, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(poolNumFields)
		b.PrependInt32Slot(poolFilterHeight, int32(o.FilterH), 0)
		b.PrependInt32Slot(poolFilterWidth, int32(o.FilterW), 0)
		b.PrependInt32Slot(poolStrideH, int32(sh), 0)
		b.PrependInt32Slot(poolStrideW, int32(sw), 0)
		b.PrependInt8Slot(poolActivation, int8(o.Activation), 0)
		b.PrependInt8Slot(poolPadding, int8(o.Padding), 0)
		return b.EndObject()
	}})
	return out
}

// Reshape adds a reshape to shape, in which one dimension may be -1. The
// output keeps the input's type and quantization. The new shape is written
// both as a constant second input and as ReshapeOptions.new_shape, as the
// converter does.
func (g *Graph) Reshape(name string, in Tensor, shape []int) Tensor {
	what := "RESHAPE " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	n := numElements(x.shape)
	resolved := slices.Clone(shape)
	unknown, known := -1, 1
	for i, d := range shape {
		switch {
		case d == -1 && unknown < 0:
			unknown = i
		case d >= 1:
			known *= d
		default:
			return g.fail("%s: shape %v: dimension %d is %d", what, shape, i, d)
		}
	}
	if unknown >= 0 {
		if known == 0 || n%known != 0 {
			return g.fail("%s: cannot reshape %v to %v", what, x.shape, shape)
		}
		resolved[unknown] = n / known
	} else if known != n {
		return g.fail("%s: cannot reshape %v (%d elements) to %v", what, x.shape, n, shape)
	}
	ns := make([]int32, len(resolved))
	for i, d := range resolved {
		ns[i] = int32(d)
	}
	st := g.ConstInt32(name+"/shape", []int{len(ns)}, nil, ns)
	out := g.addTensor(name, x.typ, resolved, x.quant, nil)
	if st == invalid || out == invalid {
		return invalid
	}
	g.addOp(opReshape, x.typ, []Tensor{in, st}, out, options{optReshape, func(e *encoder) flatbuffers.UOffsetT {
		v := e.int32s(ns)
		b := e.b
		b.StartObject(reshapeNumFields)
		b.PrependUOffsetTSlot(reshapeNewShape, v, 0)
		return b.EndObject()
	}})
	return out
}

// Softmax adds a softmax over the last dimension. For int8 the output
// quantization defaults to scale 1/256, zero point -128, the only one TFLite
// accepts; for uint8 to 1/256, 0.
func (g *Graph) Softmax(name string, in Tensor, beta float32, out *Quant) Tensor {
	what := "SOFTMAX " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if len(x.shape) == 0 || x.typ == Int32 {
		return g.fail("%s: input %q is %s%v; want float32, int8 or uint8 of rank 1 or more", what, x.name, x.typ, x.shape)
	}
	if !(beta > 0) {
		return g.fail("%s: beta %v, want above 0", what, beta)
	}
	o := g.addTensor(name, x.typ, x.shape, orQuant(out, probabilityQuant(x.typ)), nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opSoftmax, x.typ, []Tensor{in}, o, options{optSoftmax, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(softmaxNumFields)
		b.PrependFloat32Slot(softmaxBeta, beta, 0)
		return b.EndObject()
	}})
	return o
}

// Logistic adds a sigmoid. Quantized outputs default to scale 1/256 and
// zero point -128 (int8) or 0 (uint8), as TFLite requires.
func (g *Graph) Logistic(name string, in Tensor, out *Quant) Tensor {
	what := "LOGISTIC " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if x.typ == Int32 {
		return g.fail("%s: input %q is int32", what, x.name)
	}
	o := g.addTensor(name, x.typ, x.shape, orQuant(out, probabilityQuant(x.typ)), nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opLogistic, x.typ, []Tensor{in}, o, options{})
	return o
}

// Relu adds max(x, 0). The output quantization defaults to the input's.
func (g *Graph) Relu(name string, in Tensor, out *Quant) Tensor {
	what := "RELU " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if x.typ == Int32 {
		return g.fail("%s: input %q is int32", what, x.name)
	}
	o := g.addTensor(name, x.typ, x.shape, orQuant(out, x.quant), nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opRelu, x.typ, []Tensor{in}, o, options{})
	return o
}

// Add adds a + b with numpy broadcasting. Quantized inputs need out.
func (g *Graph) Add(name string, a, b Tensor, act Activation, out *Quant) Tensor {
	what := "ADD " + name
	if !g.check(a, what+" input 0") || !g.check(b, what+" input 1") {
		return invalid
	}
	x, y := g.t(a), g.t(b)
	if x.typ != y.typ {
		return g.fail("%s: inputs %q (%s) and %q (%s) differ in type", what, x.name, x.typ, y.name, y.typ)
	}
	shape, ok := broadcast(x.shape, y.shape)
	if !ok {
		return g.fail("%s: shapes %v and %v do not broadcast", what, x.shape, y.shape)
	}
	if !g.activationOK(what, act) {
		return invalid
	}
	o := g.addTensor(name, x.typ, shape, out, nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opAdd, x.typ, []Tensor{a, b}, o, options{optAdd, func(e *encoder) flatbuffers.UOffsetT {
		bb := e.b
		bb.StartObject(addNumFields)
		bb.PrependInt8Slot(addActivation, int8(act), 0)
		return bb.EndObject()
	}})
	return o
}

// Mean adds a mean over axes (negative axes count from the end), written as
// a constant int32 second input. The output quantization defaults to the
// input's.
func (g *Graph) Mean(name string, in Tensor, axes []int, keepDims bool, out *Quant) Tensor {
	what := "MEAN " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if x.typ == Int32 {
		return g.fail("%s: input %q is int32", what, x.name)
	}
	if len(axes) == 0 {
		return g.fail("%s: no axes", what)
	}
	reduce := make([]bool, len(x.shape))
	ax := make([]int32, len(axes))
	for i, a := range axes {
		if a < -len(x.shape) || a >= len(x.shape) {
			return g.fail("%s: axis %d outside rank %d", what, a, len(x.shape))
		}
		if a < 0 {
			a += len(x.shape)
		}
		if reduce[a] {
			return g.fail("%s: axis %d given twice", what, a)
		}
		reduce[a] = true
		ax[i] = int32(a)
	}
	var shape []int
	for i, d := range x.shape {
		switch {
		case !reduce[i]:
			shape = append(shape, d)
		case keepDims:
			shape = append(shape, 1)
		}
	}
	at := g.ConstInt32(name+"/axes", []int{len(ax)}, nil, ax)
	o := g.addTensor(name, x.typ, shape, orQuant(out, x.quant), nil)
	if at == invalid || o == invalid {
		return invalid
	}
	g.addOp(opMean, x.typ, []Tensor{in, at}, o, options{optReducer, func(e *encoder) flatbuffers.UOffsetT {
		b := e.b
		b.StartObject(reducerNumFields)
		b.PrependBoolSlot(reducerKeepDims, keepDims, false)
		return b.EndObject()
	}})
	return o
}

// Quantize adds a conversion of a float32 (or quantized) input to the
// quantized type typ with quantization out.
func (g *Graph) Quantize(name string, in Tensor, typ TensorType, out *Quant) Tensor {
	what := "QUANTIZE " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if typ != Int8 && typ != Uint8 {
		return g.fail("%s: output type %s, want int8 or uint8", what, typ)
	}
	if x.typ == Int32 {
		return g.fail("%s: input %q is int32", what, x.name)
	}
	o := g.addTensor(name, typ, x.shape, out, nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opQuantize, x.typ, []Tensor{in}, o, options{})
	return o
}

// Dequantize adds a conversion of an int8 or uint8 input to float32.
func (g *Graph) Dequantize(name string, in Tensor) Tensor {
	what := "DEQUANTIZE " + name
	if !g.check(in, what+" input") {
		return invalid
	}
	x := g.t(in)
	if x.typ != Int8 && x.typ != Uint8 {
		return g.fail("%s: input %q is %s, want int8 or uint8", what, x.name, x.typ)
	}
	o := g.addTensor(name, Float32, x.shape, nil, nil)
	if o == invalid {
		return invalid
	}
	g.addOp(opDequantize, x.typ, []Tensor{in}, o, options{})
	return o
}

// weightsFit checks a constant weight tensor against its input: the same
// family of types, and for int8 the symmetric scheme TFLite requires
// (zero points 0, values in [-127, 127], per-channel only along axis).
func (g *Graph) weightsFit(what string, x, w *tensor, axis int) bool {
	if w.buffer == 0 {
		g.fail("%s: weights %q are not constant", what, w.name)
		return false
	}
	if x.typ == Int32 || x.typ != w.typ {
		g.fail("%s: input %q is %s and weights %q %s; want both float32, int8 or uint8", what, x.name, x.typ, w.name, w.typ)
		return false
	}
	if x.typ != Int8 {
		if w.quant != nil && len(w.quant.Scale) > 1 {
			g.fail("%s: %s weights %q cannot be per-channel", what, w.typ, w.name)
			return false
		}
		return true
	}
	if len(w.quant.Scale) > 1 && w.quant.Axis != axis {
		g.fail("%s: weights %q are per-channel along axis %d, want %d", what, w.name, w.quant.Axis, axis)
		return false
	}
	for _, z := range w.quant.ZeroPoint {
		if z != 0 {
			g.fail("%s: int8 weights %q have zero point %d, want 0 (symmetric)", what, w.name, z)
			return false
		}
	}
	for i, v := range g.buffers[w.buffer] {
		if int8(v) == -128 {
			g.fail("%s: int8 weights %q hold -128 at %d, want [-127, 127]", what, w.name, i)
			return false
		}
	}
	return true
}

// biasFits checks an optional bias: [units], float32 for float layers, int32
// with zero point 0 and one scale per weight scale for quantized ones.
func (g *Graph) biasFits(what string, x, w *tensor, bias Tensor, units int) bool {
	if bias == NoTensor {
		return true
	}
	if !g.check(bias, what+" bias") {
		return false
	}
	b := g.t(bias)
	if len(b.shape) != 1 || b.shape[0] != units {
		g.fail("%s: bias %q has shape %v, want [%d]", what, b.name, b.shape, units)
		return false
	}
	if x.typ == Float32 {
		if b.typ != Float32 {
			g.fail("%s: bias %q is %s, want float32", what, b.name, b.typ)
			return false
		}
		return true
	}
	if b.typ != Int32 || b.quant == nil {
		g.fail("%s: bias %q is %s, want quantized int32", what, b.name, b.typ)
		return false
	}
	if len(b.quant.Scale) != len(w.quant.Scale) {
		g.fail("%s: bias %q has %d scales, weights %q %d", what, b.name, len(b.quant.Scale), w.name, len(w.quant.Scale))
		return false
	}
	for i, z := range b.quant.ZeroPoint {
		if z != 0 {
			g.fail("%s: bias %q has zero point %d at %d, want 0", what, b.name, z, i)
			return false
		}
	}
	return true
}

func (g *Graph) activationOK(what string, a Activation) bool {
	switch a {
	case ActNone, ActRelu, ActRelu6:
		return true
	}
	g.fail("%s: unknown fused activation %d", what, a)
	return false
}

func (g *Graph) paddingOK(what string, p Padding) bool {
	if p == Same || p == Valid {
		return true
	}
	g.fail("%s: unknown padding %d", what, p)
	return false
}

// sameQuant checks that an explicit output quantization equals the input's,
// for ops where TFLite requires it.
func (g *Graph) sameQuant(what string, x *tensor, out *Quant) bool {
	if out == nil || x.quant == nil {
		return true
	}
	if !slices.Equal(out.Scale, x.quant.Scale) || !slices.Equal(out.ZeroPoint, x.quant.ZeroPoint) {
		g.fail("%s: output quantization %v/%v differs from input %q's %v/%v, which TFLite requires to be equal",
			what, out.Scale, out.ZeroPoint, x.name, x.quant.Scale, x.quant.ZeroPoint)
		return false
	}
	return true
}

func (g *Graph) addOp(code int32, typ TensorType, inputs []Tensor, out Tensor, o options) {
	g.ops = append(g.ops, operator{code: code, version: opVersion(code, typ), inputs: inputs, outputs: []Tensor{out}, options: o})
}

// opVersion gives the operator version the converter writes for the
// features used here: 1 for float, the first version with int8 (or uint8)
// support otherwise. Engines should not depend on it; it is kept plausible
// so the files look like converter output to other tools.
func opVersion(code int32, typ TensorType) int32 {
	if typ == Float32 {
		return 1
	}
	switch code {
	case opFullyConnected:
		if typ == Int8 {
			return 4
		}
	case opConv2D, opDepthwiseConv2D:
		if typ == Int8 {
			return 3
		}
	case opAdd, opAveragePool2D, opMaxPool2D, opSoftmax, opMean, opLogistic, opRelu, opDequantize, opQuantize:
		if typ == Int8 {
			return 2
		}
	}
	return 1
}

func probabilityQuant(t TensorType) *Quant {
	switch t {
	case Int8:
		return PerTensor(1.0/256, -128)
	case Uint8:
		return PerTensor(1.0/256, 0)
	}
	return nil
}

func orQuant(q, def *Quant) *Quant {
	if q != nil {
		return q
	}
	return def
}

func orOne(v int) int {
	if v == 0 {
		return 1
	}
	return v
}

// outSize is TFLite's output size along one spatial dimension.
func outSize(in, k, stride, dilation int, p Padding) (int, bool) {
	if stride < 1 || dilation < 1 || k < 1 {
		return 0, false
	}
	eff := (k-1)*dilation + 1
	var n int
	if p == Same {
		n = (in + stride - 1) / stride
	} else {
		n = (in - eff + stride) / stride
		if in < eff {
			n = 0
		}
	}
	return n, n >= 1
}

func broadcast(a, b []int) ([]int, bool) {
	n := max(len(a), len(b))
	out := make([]int, n)
	for i := range n {
		da, db := 1, 1
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db || db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, false
		}
	}
	return out, true
}

func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// String lists the operators, for errors and debugging.
func (g *Graph) String() string {
	s := fmt.Sprintf("tflite graph %q: %d tensors, %d operators", g.description, len(g.tensors), len(g.ops))
	for i, op := range g.ops {
		s += fmt.Sprintf("\n  %d %s -> %s", i, opNames[op.code], g.tensors[op.outputs[0]].name)
	}
	return s
}
