package vibration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/edgefleet/edgefleet/models"
	"github.com/edgefleet/edgefleet/models/quant"
)

// splitmix is SplitMix64: tiny, and its output is fixed by its definition,
// unlike math/rand's across Go releases.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// uniform returns a float64 in [-1, 1).
func (s *splitmix) uniform() float64 {
	return float64(float64(s.next()>>11)/(1<<52)) - 1
}

// dot keeps each product rounded on its own (the explicit conversion stops
// the compiler from fusing multiply-adds on architectures that can), so the
// sums are the same everywhere.
func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += float64(a[i] * b[i])
	}
	return s
}

// peak is a Lorentzian line: no exp, so no platform-specific rounding.
func peak(bin, center, width float64) float64 {
	d := (bin - center) / width
	return 1 / (1 + float64(d*d))
}

const (
	runningBin = 5.0 // 1× running speed
	maxFeature = 3.9
)

// prototype is the clean spectrum of a machine state: a falling noise floor
// plus the lines each fault is known for — a strong 1× on the radial axis
// for imbalance, 2× and 3× on the axial axis for misalignment, a band of
// high-frequency lines for a bearing fault.
func prototype(class int) []float64 {
	v := make([]float64, Features)
	for a := range Axes {
		radial := a == 0
		for b := range Bins {
			fb := float64(b)
			x := 0.5/(1+float64(fb/8)) + 0.15
			switch class {
			case 0:
				x += float64(0.6 * peak(fb, runningBin, 0.7))
			case 1:
				amp := 1.3
				if radial {
					amp = 2.6
				}
				x += float64(amp * peak(fb, runningBin, 0.7))
			case 2:
				a2, a3 := 1.2, 0.7
				if !radial {
					a2, a3 = 2.2, 1.4
				}
				x += float64(0.7*peak(fb, runningBin, 0.7)) + float64(a2*peak(fb, 2*runningBin, 0.7)) + float64(a3*peak(fb, 3*runningBin, 0.7))
			case 3:
				x += float64(0.6*peak(fb, runningBin, 0.7)) + float64(0.9*peak(fb, 46, 6)) + float64(1.6*peak(fb, 43, 0.8)) + float64(1.2*peak(fb, 49, 0.8))
			}
			v[a*Bins+b] = min(x, maxFeature)
		}
	}
	return v
}

// Sample returns a noisy window of a class: the prototype scaled by a load
// factor in [0.85, 1.15) plus noise, in real units.
func Sample(class int, seed uint64) []float64 {
	rng := splitmix(seed)
	p := prototype(class)
	amp := 1 + float64(0.15*rng.uniform())
	for i := range p {
		p[i] = min(max(float64(p[i]*amp)+float64(0.1*rng.uniform()), 0), maxFeature)
	}
	return p
}

// calibration is the fixed set of windows the activation ranges come from.
func calibration() [][]float64 {
	var set [][]float64
	for c := range Classes {
		for i := range 16 {
			set = append(set, Sample(c, uint64(1000+100*c+i)))
		}
	}
	return set
}

type floatLayer struct {
	w    [][]float64 // units × depth
	b    []float64
	relu bool
}

func (l floatLayer) forward(x []float64) []float64 {
	y := make([]float64, len(l.w))
	for u, row := range l.w {
		y[u] = dot(row, x) + l.b[u]
		if l.relu {
			y[u] = max(y[u], 0)
		}
	}
	return y
}

func forward(net []floatLayer, x []float64) []float64 {
	for _, l := range net {
		x = l.forward(x)
	}
	return x
}

// logitTarget is the largest |logit| over the calibration set: large enough
// that the sample's class clearly wins, small enough that the softmax does
// not saturate every output to 0 or 1.
const logitTarget = 6.0

// floatNet builds the real-valued network: hidden units are matched filters
// for one class each (unit j for class j mod 4), deeper layers pool units of
// the same class and inhibit the others, the last layer sums per class.
// Noise from the spec's seed makes the versions differ.
func floatNet(s Spec, rng *splitmix) []floatLayer {
	protos := make([][]float64, Classes)
	mean := make([]float64, Features)
	for c := range protos {
		protos[c] = prototype(c)
		for i, v := range protos[c] {
			mean[i] += float64(v / Classes)
		}
	}
	dirs := make([][]float64, Classes)
	for c := range dirs {
		d := make([]float64, Features)
		for i := range d {
			d[i] = protos[c][i] - mean[i]
		}
		n := math.Sqrt(dot(d, d))
		for i := range d {
			d[i] /= n
		}
		dirs[c] = d
	}

	var net []floatLayer
	first := floatLayer{relu: true}
	for u := range s.Hidden[0] {
		w := make([]float64, Features)
		for i := range w {
			w[i] = float64(1.5*dirs[u%Classes][i]) + float64(0.05*rng.uniform())
		}
		first.w = append(first.w, w)
		first.b = append(first.b, -dot(w, mean)+0.1)
	}
	net = append(net, first)

	pool := func(units, depth int, relu bool) floatLayer {
		l := floatLayer{relu: relu}
		a := 2 / float64(depth/Classes)
		for u := range units {
			w := make([]float64, depth)
			for i := range w {
				v := -a / 3
				if i%Classes == u%Classes {
					v = a
				}
				w[i] = v + float64(0.1*a*rng.uniform())
			}
			l.w = append(l.w, w)
			l.b = append(l.b, 0.05*rng.uniform())
		}
		return l
	}
	for i := 1; i < len(s.Hidden); i++ {
		net = append(net, pool(s.Hidden[i], s.Hidden[i-1], true))
	}
	last := pool(Classes, s.Hidden[len(s.Hidden)-1], false)
	net = append(net, last)

	// Scale the last layer so the logits span ±logitTarget.
	var m float64
	for _, x := range calibration() {
		for _, v := range forward(net, x) {
			m = max(m, math.Abs(v))
		}
	}
	if m > 0 {
		k := logitTarget / m
		for u := range last.w {
			for i := range last.w[u] {
				last.w[u][i] *= k
			}
			last.b[u] *= k
		}
	}
	return net
}

var inputScale = niceScale(4.0 / 255)

func quantizeFeatures(x []float64, q quant.Params) []int8 {
	out := make([]int8, len(x))
	for i, v := range x {
		out[i] = q.Quantize(float32(v))
	}
	return out
}

// quantize turns the float network into TFLite's int8 scheme: symmetric
// weights (per unit or per tensor), int32 biases at input·weight scale,
// activations asymmetric per tensor with ranges from the calibration set.
// A RELU keeps its FULLY_CONNECTED's output quantization, so it is an exact
// clamp at the zero point in every engine.
func quantize(net []floatLayer, inQ quant.Params, perChannel bool, calib [][]float64) []layer {
	xs := make([][]float64, len(calib))
	for i, x := range calib {
		q := quantizeFeatures(x, inQ)
		xs[i] = make([]float64, len(q))
		for j, v := range q {
			xs[i][j] = float64(inQ.Dequantize(v))
		}
	}
	var out []layer
	in := inQ
	for _, fl := range net {
		units, depth := len(fl.w), len(fl.w[0])
		fc := quant.FullyConnected{Units: units, Depth: depth, In: in, Weights: make([]int8, units*depth), Bias: make([]int32, units)}
		if perChannel {
			fc.WeightScale = make([]float32, units)
			for u, row := range fl.w {
				fc.WeightScale[u] = niceScale(maxAbs(row) / 127)
			}
		} else {
			var m float64
			for _, row := range fl.w {
				m = max(m, maxAbs(row))
			}
			fc.WeightScale = []float32{niceScale(m / 127)}
		}
		for u, row := range fl.w {
			s := float64(fc.WeightScale[min(u, len(fc.WeightScale)-1)])
			for i, w := range row {
				fc.Weights[u*depth+i] = int8(min(max(math.Round(w/s), -127), 127))
			}
			fc.Bias[u] = int32(math.Round(fl.b[u] / (float64(in.Scale) * s)))
		}
		// Activation range from the calibration set, run in float on the
		// quantized inputs, widened by 10% and always containing 0.
		lo, hi := 0.0, 0.0
		pre := floatLayer{w: fl.w, b: fl.b}
		for i, x := range xs {
			y := pre.forward(x)
			for _, v := range y {
				lo, hi = min(lo, v), max(hi, v)
			}
			if fl.relu {
				for j := range y {
					y[j] = max(y[j], 0)
				}
			}
			xs[i] = y
		}
		lo, hi = float64(1.1*lo), float64(1.1*hi)
		scale := niceScale((hi - lo) / 255)
		zp := int32(min(max(math.Round(-128-lo/float64(scale)), -128), 127))
		fc.Out = quant.Params{Scale: scale, ZeroPoint: zp}
		out = append(out, layer{fc: fc, relu: fl.relu})
		in = fc.Out
	}
	return out
}

func maxAbs(v []float64) float64 {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}

// rotateUnits moves each output unit's weights and bias to the next unit:
// class c now answers with what was meant for class c-1.
func rotateUnits(fc quant.FullyConnected) quant.FullyConnected {
	r := fc
	r.Weights = make([]int8, len(fc.Weights))
	r.Bias = make([]int32, len(fc.Bias))
	r.WeightScale = make([]float32, len(fc.WeightScale))
	for u := range fc.Units {
		to := (u + 1) % fc.Units
		copy(r.Weights[to*fc.Depth:(to+1)*fc.Depth], fc.Weights[u*fc.Depth:(u+1)*fc.Depth])
		r.Bias[to] = fc.Bias[u]
	}
	if len(fc.WeightScale) == 1 {
		r.WeightScale[0] = fc.WeightScale[0]
	} else {
		for u := range fc.Units {
			r.WeightScale[(u+1)%fc.Units] = fc.WeightScale[u]
		}
	}
	return r
}

func marshalMeta(m models.Meta) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Input returns a window of a class (see Labels) as the int8 input tensor
// every version takes, e.g. for a simulator's traffic. Different seeds give
// different windows; the same seed always the same bytes.
func Input(class int, seed uint64) ([]byte, error) {
	if class < 0 || class >= Classes {
		return nil, fmt.Errorf("vibration: class %d, want 0..%d (%v)", class, Classes-1, Labels)
	}
	return int8Bytes(quantizeFeatures(Sample(class, seed), quant.Params{Scale: inputScale, ZeroPoint: -128})), nil
}
