package quant

import (
	"math"
	"testing"
)

// lcg is a tiny deterministic generator for test inputs.
type lcg uint64

func (l *lcg) next() uint32 {
	*l = *l*6364136223846793005 + 1442695040888963407
	return uint32(*l >> 33)
}

func TestQuantizeMultiplier(t *testing.T) {
	cases := []struct {
		real float64
		want Multiplier
	}{
		{1, Multiplier{1 << 30, 1}},
		{0.5, Multiplier{1 << 30, 0}},
		{0.125, Multiplier{1 << 30, -2}},
		{0.75, Multiplier{1610612736, 0}},
		{0, Multiplier{}},
		{1e-12, Multiplier{}}, // below 2^-31 · 2^-31: flushed to zero
		// A significand that rounds up to 2^31 moves to the next exponent.
		{math.Nextafter(1, 0), Multiplier{1 << 30, 1}},
	}
	for _, c := range cases {
		if got := QuantizeMultiplier(c.real); got != c.want {
			t.Errorf("QuantizeMultiplier(%v) = %v, want %v", c.real, got, c.want)
		}
	}
}

func TestRoundingDivideByPOT(t *testing.T) {
	cases := []struct{ x, exp, want int32 }{
		{3, 1, 2}, {-3, 1, -2}, {5, 2, 1}, {6, 2, 2}, {-6, 2, -2}, {-5, 2, -1}, {7, 0, 7},
		{math.MaxInt32, 31, 1}, {math.MinInt32, 31, -1},
	}
	for _, c := range cases {
		if got := RoundingDivideByPOT(c.x, int(c.exp)); got != c.want {
			t.Errorf("RoundingDivideByPOT(%d, %d) = %d, want %d", c.x, c.exp, got, c.want)
		}
	}
}

func TestApplyDoubleRounding(t *testing.T) {
	// 3/8 = 0.375: double rounding gives round(round(1.5)/4) = 1, where a
	// single rounding would give 0. TFLite's default is double.
	if got := QuantizeMultiplier(0.125).Apply(3); got != 1 {
		t.Errorf("3·(1/8) = %d, want 1 (double rounding)", got)
	}
	one := QuantizeMultiplier(1)
	for _, x := range []int32{0, 1, -1, 127, -128, 1 << 20, -(1 << 20)} {
		if got := one.Apply(x); got != x {
			t.Errorf("1·%d = %d", x, got)
		}
	}
	if got := SaturatingRoundingDoublingHighMul(math.MinInt32, math.MinInt32); got != math.MaxInt32 {
		t.Errorf("SRDHM(min, min) = %d, want saturation", got)
	}
	// Against exact rational arithmetic with a tolerance of one step for the
	// double rounding.
	r := lcg(1)
	for range 100000 {
		x := int32(r.next()%(1<<24)) - 1<<23
		real := 0.0001 + float64(r.next()%10000)/10000
		m := QuantizeMultiplier(real)
		want := float64(x) * float64(m.M) * math.Ldexp(1, m.Shift-31)
		if d := math.Abs(float64(m.Apply(x)) - want); d > 1 {
			t.Fatalf("%d·%v = %d, exact %v", x, m, m.Apply(x), want)
		}
	}
}

func TestExpOnNegativeValues(t *testing.T) {
	for a := int32(0); a > -(31 << 26); a -= 1 << 19 {
		got := float64(expOnNegativeValues(a)) / (1 << 31)
		want := math.Exp(float64(a) / (1 << 26))
		// gemmlowp's 4th-order polynomial is good to about 2.3e-7 at the
		// ends of its quarter interval.
		if math.Abs(got-want) > 3e-7 {
			t.Fatalf("exp(%v) = %v, want %v", float64(a)/(1<<26), got, want)
		}
	}
}

func TestOneOverOnePlusX(t *testing.T) {
	for x := int32(0); x >= 0 && x < math.MaxInt32-(1<<20); x += 1 << 20 {
		got := float64(oneOverOnePlusX(x)) / (1 << 31)
		want := 1 / (1 + float64(x)/(1<<31))
		if math.Abs(got-want) > 1e-8 {
			t.Fatalf("1/(1+%v) = %v, want %v", float64(x)/(1<<31), got, want)
		}
	}
}

func TestSoftmaxAgainstFloat(t *testing.T) {
	r := lcg(7)
	in := make([]int8, 10)
	out := make([]int8, 10)
	lite := make([]int8, 10)
	differ := 0
	for n := range 2000 {
		scale := float32(0.01 + float64(r.next()%1000)/1000)
		for i := range in {
			in[i] = int8(r.next())
		}
		SoftmaxFixedPoint(in, scale, 1, out)
		Softmax(in, scale, 1, lite)
		for i := range out {
			if d := int(out[i]) - int(lite[i]); d < -1 || d > 1 {
				t.Fatalf("case %d: fixed-point %v and float-table %v softmax differ by more than one step", n, out, lite)
			}
			if out[i] != lite[i] {
				differ++
			}
		}
		maxv := math.Inf(-1)
		for _, x := range in {
			maxv = math.Max(maxv, float64(x)*float64(scale))
		}
		var sum float64
		p := make([]float64, len(in))
		for i, x := range in {
			p[i] = math.Exp(float64(x)*float64(scale) - maxv)
			sum += p[i]
		}
		for i := range in {
			want := math.Min(127, math.Round(p[i]/sum*256)-128)
			if d := math.Abs(float64(out[i]) - want); d > 1 {
				t.Fatalf("case %d: softmax%v·%v [%d] = %d, float says %v", n, in, scale, i, out[i], want)
			}
			if d := math.Abs(float64(lite[i]) - want); d > 0 && !(p[i]/sum*256 > 127.4) {
				// The float-table kernel is float32 all through: it may
				// only miss where the exact value is within float32 noise
				// of a rounding boundary.
				if frac := p[i]/sum*256 - math.Floor(p[i]/sum*256); math.Abs(frac-0.5) > 1e-4 {
					t.Fatalf("case %d: float-table softmax [%d] = %d, float64 says %v", n, i, lite[i], want)
				}
			}
		}
	}
	t.Logf("the two softmax kernels differ on %d of %d outputs", differ, 2000*len(in))
}

func TestFullyConnected(t *testing.T) {
	// Two units over three inputs, worked by hand: input real = (q+1)·0.5,
	// weights scale 0.25 (unit 0) and 0.5 (unit 1), output scale 1, zp 3.
	l := FullyConnected{
		Units: 2, Depth: 3,
		Weights:     []int8{4, -4, 8, 1, 2, 3},
		WeightScale: []float32{0.25, 0.5},
		Bias:        []int32{2, -4},
		In:          Params{Scale: 0.5, ZeroPoint: -1},
		Out:         Params{Scale: 1, ZeroPoint: 3},
	}
	out := make([]int8, 2)
	if err := l.Run([]int8{1, 3, -1}, out); err != nil {
		t.Fatal(err)
	}
	// unit 0: acc = 4·2 - 4·4 + 8·0 + 2 = -6, ·0.125 = -0.75 → -1, +3 = 2
	// unit 1: acc = 2 + 8 + 0 - 4 = 6, ·0.25 = 1.5 → 2, +3 = 5
	if out[0] != 2 || out[1] != 5 {
		t.Errorf("out = %v, want [2 5]", out)
	}
	l.Relu = true
	l.Out.ZeroPoint = 0
	if err := l.Run([]int8{1, 3, -1}, out); err != nil {
		t.Fatal(err)
	}
	if out[0] != 0 || out[1] != 2 {
		t.Errorf("with relu out = %v, want [0 2]", out)
	}
	if err := l.Run([]int8{1}, out); err == nil {
		t.Error("short input accepted")
	}
}

func TestRelu(t *testing.T) {
	q := Params{Scale: 0.1, ZeroPoint: -20}
	in := []int8{-128, -21, -20, -19, 127}
	out := make([]int8, len(in))
	Relu(in, q, out, q)
	want := []int8{-20, -20, -20, -19, 127}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("relu %v = %v, want %v", in, out, want)
		}
	}
}

func TestPoolRounding(t *testing.T) {
	avg := Pool{FilterH: 1, FilterW: 2, StrideH: 1, StrideW: 2}
	got, shape := avg.Run([]int8{1, 2, -1, -2, 5, 5, -128, 127}, [4]int{1, 1, 8, 1})
	// Halves round away from zero: 1.5 → 2, -1.5 → -2, -0.5 → -1.
	if want := []int8{2, -2, 5, -1}; shape != [4]int{1, 1, 4, 1} || string(int8Bytes(got)) != string(int8Bytes(want)) {
		t.Errorf("average pool = %v %v, want %v", got, shape, want)
	}
	mp := Pool{FilterH: 2, FilterW: 2, StrideH: 2, StrideW: 2, Same: true, Max: true}
	got, shape = mp.Run([]int8{1, -5, 3, 7, 2, -9}, [4]int{1, 2, 3, 1})
	if want := []int8{7, 3}; shape != [4]int{1, 1, 2, 1} || string(int8Bytes(got)) != string(int8Bytes(want)) {
		t.Errorf("max pool = %v %v, want %v", got, shape, want)
	}
}

func TestConvMatchesFullyConnected(t *testing.T) {
	// A 1x1 convolution over one pixel is a fully connected layer.
	r := lcg(3)
	w := make([]int8, 4*6)
	for i := range w {
		w[i] = int8(r.next()%255) - 127
	}
	in := make([]int8, 6)
	for i := range in {
		in[i] = int8(r.next())
	}
	scales := []float32{1.0 / 64, 1.0 / 32, 3.0 / 128, 1.0 / 16}
	bias := []int32{100, -200, 300, -400}
	q, outQ := Params{Scale: 0.5, ZeroPoint: 3}, Params{Scale: 2, ZeroPoint: -7}
	c := Conv2D{Filter: w, FilterShape: [4]int{4, 1, 1, 6}, WeightScale: scales, Bias: bias, StrideH: 1, StrideW: 1, DilH: 1, DilW: 1,
		In: q, Out: outQ, ActMin: float32(math.Inf(-1)), ActMax: float32(math.Inf(1))}
	got, shape, err := c.Run(in, [4]int{1, 1, 1, 6})
	if err != nil {
		t.Fatal(err)
	}
	fc := FullyConnected{Units: 4, Depth: 6, Weights: w, WeightScale: scales, Bias: bias, In: q, Out: outQ}
	want := make([]int8, 4)
	if err := fc.Run(in, want); err != nil {
		t.Fatal(err)
	}
	if shape != [4]int{1, 1, 1, 4} || string(int8Bytes(got)) != string(int8Bytes(want)) {
		t.Errorf("1x1 conv = %v %v, fully connected %v", got, shape, want)
	}
	if _, _, err := c.Run(in, [4]int{1, 1, 1, 5}); err == nil {
		t.Error("conv accepted 5 input channels for a 6-channel filter")
	}
}

func TestActivationRange(t *testing.T) {
	q := Params{Scale: 0.1, ZeroPoint: -20}
	if lo, hi := ActivationRange(0, 6, q); lo != -20 || hi != 40 {
		t.Errorf("RELU6 range = [%d, %d], want [-20, 40]", lo, hi)
	}
	if lo, hi := ActivationRange(float32(math.Inf(-1)), float32(math.Inf(1)), q); lo != -128 || hi != 127 {
		t.Errorf("no activation = [%d, %d]", lo, hi)
	}
}

func int8Bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func TestAdd(t *testing.T) {
	one := Params{Scale: 1}
	a := Add{In1: one, In2: one, Out: one, ActMin: float32(math.Inf(-1)), ActMax: float32(math.Inf(1))}
	got, err := a.Run([]int8{3, -100, 100, -5}, []int8{4, -100, 100, 5})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int8{7, -128, 127, 0}; string(int8Bytes(got)) != string(int8Bytes(want)) {
		t.Errorf("add = %v, want %v (saturating)", got, want)
	}
	// Different scales: 10·0.5 + 10·0.25 = 7.5 → 15 at scale 0.5, zp 1 → 16.
	b := Add{In1: Params{Scale: 0.5}, In2: Params{Scale: 0.25, ZeroPoint: -2}, Out: Params{Scale: 0.5, ZeroPoint: 1},
		ActMin: 0, ActMax: float32(math.Inf(1))}
	got, _ = b.Run([]int8{10, -20}, []int8{8, -2})
	if want := []int8{16, 1}; string(int8Bytes(got)) != string(int8Bytes(want)) {
		t.Errorf("add = %v, want %v (RELU clamps the second at the zero point)", got, want)
	}
	if _, err := a.Run([]int8{1}, []int8{1, 2}); err == nil {
		t.Error("add of different sizes accepted")
	}
}
