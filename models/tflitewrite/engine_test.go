package tflitewrite_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
	tw "github.com/edgefleet/edgefleet/models/tflitewrite"
)

// These tests run what the writer writes on the agent's engine, whose
// reader was written separately from the schema. They use float32 models
// and a plain float64 reference here, so a wrong option slot (a stride
// read as a dilation, a padding ignored) shows up as wrong numbers.
// LiteRT 2.5.3, run by hand on the same fourteen files, loads them all and
// matches the reference within 3e-7; it is what showed that TFLite's
// CONV_2D will not run without a bias.

type rng uint64

func (r *rng) float() float32 {
	*r = *r*6364136223846793005 + 1442695040888963407
	return float32(int32(uint32(*r>>32))) / float32(1<<30) // in [-2, 2)
}

func (r *rng) floats(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = r.float()
	}
	return v
}

// opCase is a one-operator float model with its reference.
type opCase struct {
	name   string
	op     string
	inputs [][]int
	build  func(g *tw.Graph, in []tw.Tensor, r *rng) (out tw.Tensor, ref func(in [][]float32) []float32)
}

func TestEngineRunsWrittenOps(t *testing.T) {
	be, err := runtime.New("tflite", runtime.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range opCases() {
		t.Run(c.name, func(t *testing.T) {
			r := rng(len(c.name))
			g := tw.New(c.name)
			var ins []tw.Tensor
			for i, s := range c.inputs {
				ins = append(ins, g.Input(string(rune('a'+i)), tw.Float32, s, nil))
			}
			out, ref := c.build(g, ins, &r)
			g.Output(out)
			file, err := g.Encode()
			if err != nil {
				t.Fatal(err)
			}
			m, err := be.Open(ctx, file, runtime.Options{})
			if errors.Is(err, runtime.ErrUnsupported) {
				t.Skipf("the engine does not implement %s yet: %v", c.op, err)
			}
			if err != nil {
				t.Fatalf("engine cannot open the written %s model: %v", c.op, err)
			}
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var vals [][]float32
			var tensors []runtime.Tensor
			for _, shape := range c.inputs {
				v := r.floats(numElements(shape))
				vals = append(vals, v)
				tensors = append(tensors, runtime.Tensor{DType: runtime.Float32, Shape: shape, Data: f32bytes(v)})
			}
			res := []runtime.Tensor{{}}
			if err := s.Run(ctx, tensors, res); err != nil {
				t.Fatalf("running the written %s model: %v", c.op, err)
			}
			want := ref(vals)
			got := bytesF32(res[0].Data)
			if len(got) != len(want) {
				t.Fatalf("%d outputs, reference has %d (shape %v)", len(got), len(want), res[0].Shape)
			}
			for i := range want {
				if d := math.Abs(float64(got[i]) - float64(want[i])); d > 2e-5*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("output[%d] = %v, reference %v", i, got[i], want[i])
				}
			}
		})
	}
}

func opCases() []opCase {
	return []opCase{
		{"conv_same_strided_dilated", "CONV_2D", [][]int{{1, 7, 9, 3}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			f, b := r.floats(4*3*2*3), r.floats(4)
			o := tw.Conv2DOptions{Padding: tw.Same, StrideH: 2, StrideW: 1, DilationH: 1, DilationW: 2, Activation: tw.ActRelu6}
			out := g.Conv2D("y", in[0], g.ConstFloat32("f", []int{4, 3, 2, 3}, f), g.ConstFloat32("b", []int{4}, b), o)
			return out, func(x [][]float32) []float32 {
				return conv(x[0], []int{1, 7, 9, 3}, f, []int{4, 3, 2, 3}, b, 2, 1, 1, 2, true, false, 1, relu6)
			}
		}},
		{"conv_valid", "CONV_2D", [][]int{{2, 6, 5, 2}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			f, b := r.floats(3*2*3*2), r.floats(3)
			o := tw.Conv2DOptions{Padding: tw.Valid, StrideH: 1, StrideW: 2}
			out := g.Conv2D("y", in[0], g.ConstFloat32("f", []int{3, 2, 3, 2}, f), g.ConstFloat32("b", []int{3}, b), o)
			return out, func(x [][]float32) []float32 {
				return conv(x[0], []int{2, 6, 5, 2}, f, []int{3, 2, 3, 2}, b, 1, 2, 1, 1, false, false, 1, identity)
			}
		}},
		{"depthwise_no_bias", "DEPTHWISE_CONV_2D", [][]int{{1, 4, 4, 3}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			f := r.floats(2 * 2 * 3)
			out := g.DepthwiseConv2D("y", in[0], g.ConstFloat32("f", []int{1, 2, 2, 3}, f), tw.NoTensor, tw.DepthwiseConv2DOptions{Padding: tw.Valid})
			return out, func(x [][]float32) []float32 {
				return conv(x[0], []int{1, 4, 4, 3}, f, []int{1, 2, 2, 3}, nil, 1, 1, 1, 1, false, true, 1, identity)
			}
		}},
		{"depthwise", "DEPTHWISE_CONV_2D", [][]int{{1, 6, 5, 2}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			f, b := r.floats(3*3*4), r.floats(4)
			o := tw.DepthwiseConv2DOptions{Padding: tw.Same, StrideH: 1, StrideW: 2, DilationH: 2, DilationW: 1, DepthMultiplier: 2, Activation: tw.ActRelu}
			out := g.DepthwiseConv2D("y", in[0], g.ConstFloat32("f", []int{1, 3, 3, 4}, f), g.ConstFloat32("b", []int{4}, b), o)
			return out, func(x [][]float32) []float32 {
				return conv(x[0], []int{1, 6, 5, 2}, f, []int{1, 3, 3, 4}, b, 1, 2, 2, 1, true, true, 2, relu)
			}
		}},
		{"average_pool_same", "AVERAGE_POOL_2D", [][]int{{1, 5, 6, 3}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			out := g.AveragePool2D("y", in[0], tw.Pool2DOptions{Padding: tw.Same, FilterH: 2, FilterW: 3, StrideH: 2, StrideW: 1})
			return out, func(x [][]float32) []float32 { return pool(x[0], []int{1, 5, 6, 3}, 2, 3, 2, 1, true, false) }
		}},
		{"max_pool_valid", "MAX_POOL_2D", [][]int{{1, 5, 6, 3}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			out := g.MaxPool2D("y", in[0], tw.Pool2DOptions{Padding: tw.Valid, FilterH: 3, FilterW: 2, StrideH: 1, StrideW: 2})
			return out, func(x [][]float32) []float32 { return pool(x[0], []int{1, 5, 6, 3}, 3, 2, 1, 2, false, true) }
		}},
		{"fully_connected", "FULLY_CONNECTED", [][]int{{2, 2, 5}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			w, b := r.floats(3*5), r.floats(3)
			out := g.FullyConnected("y", in[0], g.ConstFloat32("w", []int{3, 5}, w), g.ConstFloat32("b", []int{3}, b), tw.FullyConnectedOptions{Activation: tw.ActRelu})
			return out, func(x [][]float32) []float32 {
				var y []float32
				for row := range 4 {
					for u := range 3 {
						acc := float64(b[u])
						for d := range 5 {
							acc += float64(w[u*5+d]) * float64(x[0][row*5+d])
						}
						y = append(y, relu(float32(acc)))
					}
				}
				return y
			}
		}},
		{"reshape", "RESHAPE", [][]int{{1, 2, 3, 4}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Reshape("y", in[0], []int{4, -1}), func(x [][]float32) []float32 { return x[0] }
		}},
		{"softmax", "SOFTMAX", [][]int{{2, 5}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Softmax("y", in[0], 0.5, nil), func(x [][]float32) []float32 {
				var y []float32
				for row := range 2 {
					v := x[0][row*5 : row*5+5]
					mx := math.Inf(-1)
					for _, e := range v {
						mx = math.Max(mx, float64(e))
					}
					var sum float64
					for _, e := range v {
						sum += math.Exp((float64(e) - mx) * 0.5)
					}
					for _, e := range v {
						y = append(y, float32(math.Exp((float64(e)-mx)*0.5)/sum))
					}
				}
				return y
			}
		}},
		{"add_broadcast", "ADD", [][]int{{2, 3, 4}, {3, 1}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Add("y", in[0], in[1], tw.ActNone, nil), func(x [][]float32) []float32 {
				y := make([]float32, 24)
				for i := range y {
					y[i] = x[0][i] + x[1][(i/4)%3]
				}
				return y
			}
		}},
		{"mean", "MEAN", [][]int{{2, 3, 4}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Mean("y", in[0], []int{0, -1}, true, nil), func(x [][]float32) []float32 {
				y := make([]float32, 3)
				for i, v := range x[0] {
					y[(i/4)%3] += v / 8
				}
				return y
			}
		}},
		{"logistic", "LOGISTIC", [][]int{{10}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Logistic("y", in[0], nil), func(x [][]float32) []float32 {
				y := make([]float32, len(x[0]))
				for i, v := range x[0] {
					y[i] = float32(1 / (1 + math.Exp(-float64(v))))
				}
				return y
			}
		}},
		{"relu", "RELU", [][]int{{10}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			return g.Relu("y", in[0], nil), func(x [][]float32) []float32 {
				y := make([]float32, len(x[0]))
				for i, v := range x[0] {
					y[i] = relu(v)
				}
				return y
			}
		}},
		{"quantize_dequantize", "QUANTIZE", [][]int{{12}}, func(g *tw.Graph, in []tw.Tensor, r *rng) (tw.Tensor, func([][]float32) []float32) {
			q := g.Quantize("q", in[0], tw.Int8, tw.PerTensor(0.0125, 7))
			return g.Dequantize("y", q), func(x [][]float32) []float32 {
				y := make([]float32, len(x[0]))
				for i, v := range x[0] {
					qv := min(max(math.Round(float64(v/0.0125))+7, -128), 127)
					y[i] = float32(qv-7) * 0.0125
				}
				return y
			}
		}},
	}
}

func identity(x float32) float32 { return x }
func relu(x float32) float32     { return max(x, 0) }
func relu6(x float32) float32    { return min(max(x, 0), 6) }

// conv is a direct NHWC convolution with an [oc, kh, kw, ic] filter, or a
// depthwise one with a [1, kh, kw, c·dm] filter.
func conv(x []float32, xs []int, f []float32, fs []int, bias []float32, sh, sw, dh, dw int, same, depthwise bool, dm int, act func(float32) float32) []float32 {
	n, h, w, c := xs[0], xs[1], xs[2], xs[3]
	kh, kw := fs[1], fs[2]
	oc := fs[0]
	if depthwise {
		oc = fs[3]
	}
	oh, padT := outPad(h, kh, sh, dh, same)
	ow, padL := outPad(w, kw, sw, dw, same)
	var y []float32
	for b := range n {
		for oy := range oh {
			for ox := range ow {
				for o := range oc {
					acc := 0.0
					if bias != nil {
						acc = float64(bias[o])
					}
					for ky := range kh {
						for kx := range kw {
							iy, ix := oy*sh-padT+ky*dh, ox*sw-padL+kx*dw
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							if depthwise {
								ic := o / dm
								acc += float64(x[((b*h+iy)*w+ix)*c+ic]) * float64(f[(ky*kw+kx)*oc+o])
								continue
							}
							for ic := range c {
								acc += float64(x[((b*h+iy)*w+ix)*c+ic]) * float64(f[((o*kh+ky)*kw+kx)*c+ic])
							}
						}
					}
					y = append(y, act(float32(acc)))
				}
			}
		}
	}
	return y
}

// outPad is TFLite's output size and leading padding along one dimension.
func outPad(in, k, stride, dilation int, same bool) (out, pad int) {
	eff := (k-1)*dilation + 1
	if same {
		out = (in + stride - 1) / stride
		pad = max((out-1)*stride+eff-in, 0) / 2
		return out, pad
	}
	return (in-eff)/stride + 1, 0
}

// pool averages (over the in-bounds part of each window, as TFLite does) or
// takes the maximum.
func pool(x []float32, xs []int, kh, kw, sh, sw int, same, isMax bool) []float32 {
	n, h, w, c := xs[0], xs[1], xs[2], xs[3]
	oh, padT := outPad(h, kh, sh, 1, same)
	ow, padL := outPad(w, kw, sw, 1, same)
	var y []float32
	for b := range n {
		for oy := range oh {
			for ox := range ow {
				for ch := range c {
					sum, count, mx := 0.0, 0, math.Inf(-1)
					for ky := range kh {
						for kx := range kw {
							iy, ix := oy*sh-padT+ky, ox*sw-padL+kx
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							v := float64(x[((b*h+iy)*w+ix)*c+ch])
							sum += v
							count++
							mx = math.Max(mx, v)
						}
					}
					if isMax {
						y = append(y, float32(mx))
					} else {
						y = append(y, float32(sum/float64(count)))
					}
				}
			}
		}
	}
	return y
}

func numElements(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
