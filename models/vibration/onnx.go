package vibration

import (
	"fmt"

	"github.com/edgefleet/edgefleet/models/onnxwrite"
	"github.com/edgefleet/edgefleet/models/quant"
)

// onnxOpset is the opset of the ONNX variant: 13 has per-axis
// DequantizeLinear and Softmax over the last axis.
const onnxOpset = 13

// ONNXTolerance is how many quantization steps ONNX Runtime may differ from
// the TFLite bytes on the ONNX variant. The network and its int8 tensors
// are the same, but ONNX Runtime requantizes in float with round half to
// even and has its own softmax, where TFLite uses fixed-point multipliers
// rounding half away from zero.
const ONNXTolerance = 1

// encodeONNX writes the same network in ONNX's QDQ form: the int8 tensors
// of the TFLite file (input, weights, biases, activations, output) with
// DequantizeLinear/QuantizeLinear around float Gemm, Relu and Softmax
// nodes, which ONNX Runtime fuses into its integer kernels. Its input and
// output are the same int8 tensors as the TFLite file's.
func (m *Model) encodeONNX() ([]byte, error) {
	g := onnxwrite.New(Name, onnxOpset)
	g.Doc(fmt.Sprintf("edgefleet %s %s: %s", Name, m.Spec.Version, m.Spec.Purpose))
	g.Metadata("name", Name)
	g.Metadata("version", m.Spec.Version)

	scalar := func(name string, p quant.Params) (string, string) {
		g.Float32s(name+"/scale", nil, []float32{p.Scale})
		g.Int8s(name+"/zero_point", nil, []int8{int8(p.ZeroPoint)})
		return name + "/scale", name + "/zero_point"
	}
	g.Input("features", onnxwrite.Int8, []int{1, Features})
	s, z := scalar("features", m.inQ)
	g.Node("DequantizeLinear", []string{"features", s, z}, []string{"features/real"})
	x := "features/real"

	for i, l := range m.layers {
		name := fmt.Sprintf("dense_%d", i+1)
		fc := l.fc
		units := []int{fc.Units}
		g.Int8s(name+"/weights", []int{fc.Units, fc.Depth}, fc.Weights)
		wz := make([]int8, len(fc.WeightScale))
		bs := make([]float32, len(fc.WeightScale))
		for j, ws := range fc.WeightScale {
			bs[j] = fc.In.Scale * ws
		}
		bz := make([]int32, len(bs))
		var axis []onnxwrite.Attribute
		shape := units
		if len(fc.WeightScale) == 1 {
			shape = nil // per-tensor: scalar scale and zero point
		} else {
			axis = []onnxwrite.Attribute{onnxwrite.Int("axis", 0)}
		}
		g.Float32s(name+"/weights/scale", shape, fc.WeightScale)
		g.Int8s(name+"/weights/zero_point", shape, wz)
		g.Node("DequantizeLinear", []string{name + "/weights", name + "/weights/scale", name + "/weights/zero_point"}, []string{name + "/weights/real"}, axis...)
		g.Int32s(name+"/bias", units, fc.Bias)
		g.Float32s(name+"/bias/scale", shape, bs)
		g.Int32s(name+"/bias/zero_point", shape, bz)
		g.Node("DequantizeLinear", []string{name + "/bias", name + "/bias/scale", name + "/bias/zero_point"}, []string{name + "/bias/real"}, axis...)
		g.Node("Gemm", []string{x, name + "/weights/real", name + "/bias/real"}, []string{name + "/gemm"}, onnxwrite.Int("transB", 1))
		y := name + "/gemm"
		if l.relu {
			g.Node("Relu", []string{y}, []string{name + "/relu"})
			y = name + "/relu"
		}
		s, z := scalar(name, fc.Out)
		g.Node("QuantizeLinear", []string{y, s, z}, []string{name})
		g.Node("DequantizeLinear", []string{name, s, z}, []string{name + "/real"})
		x = name + "/real"
	}
	g.Node("Softmax", []string{x}, []string{"probabilities/real"}, onnxwrite.Int("axis", -1))
	s, z = scalar("probabilities", quant.SoftmaxOut)
	g.Node("QuantizeLinear", []string{"probabilities/real", s, z}, []string{"probabilities"})
	g.Output("probabilities", onnxwrite.Int8, []int{1, Classes})
	return g.Encode()
}
