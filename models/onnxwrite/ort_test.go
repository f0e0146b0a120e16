//go:build cgo

package onnxwrite_test

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/onnxrt"
	ow "github.com/edgefleet/edgefleet/models/onnxwrite"
)

// TestONNXRuntimeRunsWrittenGraphs runs graphs the writer encodes on ONNX
// Runtime, when its library is here, against plain float references: every
// attribute kind (int, ints, float) and initializer type the demo models
// use reaches the consumer as meant.
func TestONNXRuntimeRunsWrittenGraphs(t *testing.T) {
	be, err := runtime.New(onnxrt.Name, runtime.Config{Settings: map[string]string{onnxrt.SettingLibrary: ortLibrary(t)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Available(); err != nil {
		t.Skipf("ONNX Runtime not usable here: %v", err)
	}
	x := make([]float32, 2*3*5*4)
	for i := range x {
		x[i] = float32((i*37)%23)/8 - 1.3
	}
	cases := []struct {
		name  string
		build func(g *ow.Graph) []int // returns the input shape
		out   []int                   // the output shape it declares
		ref   func() []float32
	}{
		{"conv_strided_padded_dilated_grouped", func(g *ow.Graph) []int {
			g.Input("x", ow.Float32, []int{1, 2, 5, 6})
			g.Float32s("w", []int{4, 1, 2, 3}, seq(24, 0.25))
			g.Float32s("b", []int{4}, []float32{0.5, -0.5, 1, -1})
			g.Node("Conv", []string{"x", "w", "b"}, []string{"y"}, ow.Ints("strides", 2, 1), ow.Ints("pads", 1, 0, 0, 2),
				ow.Ints("dilations", 1, 2), ow.Int("group", 2))
			g.Output("y", ow.Float32, []int{1, 4, 3, 4})
			return []int{1, 2, 5, 6}
		}, []int{1, 4, 3, 4}, func() []float32 {
			return convNCHW(x[:60], []int{1, 2, 5, 6}, seq(24, 0.25), []int{4, 1, 2, 3}, []float32{0.5, -0.5, 1, -1}, 2, 1, [4]int{1, 0, 0, 2}, 1, 2, 2)
		}},
		{"gemm_alpha_beta_transB", func(g *ow.Graph) []int {
			g.Input("x", ow.Float32, []int{2, 5})
			g.Float32s("w", []int{3, 5}, seq(15, 0.1))
			g.Float32s("c", []int{3}, []float32{1, 2, 3})
			g.Node("Gemm", []string{"x", "w", "c"}, []string{"y"}, ow.Float("alpha", 0.5), ow.Float("beta", 2), ow.Int("transB", 1))
			g.Output("y", ow.Float32, []int{2, 3})
			return []int{2, 5}
		}, []int{2, 3}, func() []float32 {
			w := seq(15, 0.1)
			var y []float32
			for r := range 2 {
				for u := range 3 {
					acc := 0.0
					for d := range 5 {
						acc += float64(x[r*5+d]) * float64(w[u*5+d])
					}
					y = append(y, float32(0.5*acc+2*float64([]float32{1, 2, 3}[u])))
				}
			}
			return y
		}},
		{"reduce_mean_reshape", func(g *ow.Graph) []int {
			g.Input("x", ow.Float32, []int{2, 3, 4})
			g.Node("ReduceMean", []string{"x"}, []string{"m"}, ow.Ints("axes", 0, 2), ow.Int("keepdims", 1))
			b := make([]byte, 16)
			binary.LittleEndian.PutUint64(b, 3)
			binary.LittleEndian.PutUint64(b[8:], uint64(math.MaxUint64)) // -1
			g.Initializer("shape", ow.Int64, []int{2}, b)
			g.Node("Reshape", []string{"m", "shape"}, []string{"y"})
			g.Output("y", ow.Float32, []int{3, 1})
			return []int{2, 3, 4}
		}, []int{3, 1}, func() []float32 {
			y := make([]float32, 3)
			for i, v := range x[:24] {
				y[(i/4)%3] += v / 8
			}
			return y
		}},
		{"quantize_per_axis", func(g *ow.Graph) []int {
			g.Input("x", ow.Float32, []int{4, 3})
			g.Float32s("s", []int{3}, []float32{0.01, 0.02, 0.05})
			g.Int8s("z", []int{3}, []int8{0, -3, 7})
			g.Node("QuantizeLinear", []string{"x", "s", "z"}, []string{"q"}, ow.Int("axis", 1))
			g.Node("DequantizeLinear", []string{"q", "s", "z"}, []string{"y"}, ow.Int("axis", 1))
			g.Output("y", ow.Float32, []int{4, 3})
			return []int{4, 3}
		}, []int{4, 3}, func() []float32 {
			s, z := []float64{0.01, 0.02, 0.05}, []float64{0, -3, 7}
			y := make([]float32, 12)
			for i, v := range x[:12] {
				c := i % 3
				q := math.Min(math.Max(math.RoundToEven(float64(v)/s[c])+z[c], -128), 127)
				y[i] = float32((q - z[c]) * s[c])
			}
			return y
		}},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := ow.New(c.name, 13)
			inShape := c.build(g)
			file, err := g.Encode()
			if err != nil {
				t.Fatal(err)
			}
			m, err := be.Open(ctx, file, runtime.Options{})
			if err != nil {
				t.Fatalf("ONNX Runtime cannot open the written graph: %v", err)
			}
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			n := 1
			for _, d := range inShape {
				n *= d
			}
			out := []runtime.Tensor{{}}
			if err := s.Run(ctx, []runtime.Tensor{{DType: runtime.Float32, Shape: inShape, Data: f32bytes(x[:n])}}, out); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(out[0].Shape, c.out) {
				t.Fatalf("output shape %v, the graph declares %v", out[0].Shape, c.out)
			}
			got, want := bytesF32(out[0].Data), c.ref()
			if len(got) != len(want) {
				t.Fatalf("%d outputs (shape %v), reference %d", len(got), out[0].Shape, len(want))
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("output[%d] = %v, reference %v", i, got[i], want[i])
				}
			}
		})
	}
}

func seq(n int, step float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%7-3) * step
	}
	return v
}

// convNCHW is a direct grouped convolution with pads [top, left, bottom,
// right] (ONNX's begin-then-end order).
func convNCHW(x []float32, xs []int, w []float32, ws []int, b []float32, sh, sw int, pads [4]int, dh, dw, groups int) []float32 {
	h, wd := xs[2], xs[3]
	oc, icg, kh, kw := ws[0], ws[1], ws[2], ws[3]
	oh := (h+pads[0]+pads[2]-((kh-1)*dh+1))/sh + 1
	ow := (wd+pads[1]+pads[3]-((kw-1)*dw+1))/sw + 1
	var y []float32
	for o := range oc {
		g := o / (oc / groups)
		for oy := range oh {
			for ox := range ow {
				acc := float64(b[o])
				for ic := range icg {
					for ky := range kh {
						for kx := range kw {
							iy, ix := oy*sh-pads[0]+ky*dh, ox*sw-pads[1]+kx*dw
							if iy < 0 || iy >= h || ix < 0 || ix >= wd {
								continue
							}
							acc += float64(x[((g*icg+ic)*h+iy)*wd+ix]) * float64(w[((o*icg+ic)*kh+ky)*kw+kx])
						}
					}
				}
				y = append(y, float32(acc))
			}
		}
	}
	return y
}

func ortLibrary(t *testing.T) string {
	if p := os.Getenv(onnxrt.EnvLibrary); p != "" {
		return p
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
	found, _ := filepath.Glob(filepath.Join("..", "..", ".cache", "onnxruntime", "*", "linux-"+arch, "libonnxruntime.so.1"))
	if len(found) == 0 {
		t.Skipf("ONNX Runtime library not found: set $%s, or run deploy/onnxruntime/fetch.sh", onnxrt.EnvLibrary)
	}
	sort.Strings(found)
	return found[len(found)-1]
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
