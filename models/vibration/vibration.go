// Package vibration builds the demo model edgefleet ships: a vibration
// anomaly classifier for gateway sensors. Its input is the int8-quantized
// spectrum of an accelerometer window (64 frequency bins on each of two
// axes); its output the int8 probabilities of four machine states. The
// network is FULLY_CONNECTED → RELU → ... → FULLY_CONNECTED → SOFTMAX with
// deterministic weights shaped so that the model really separates the four
// synthetic signatures.
//
// Each version is built from a Spec: same interface, different size, and one
// deliberately broken. The expected output of each sample comes from
// models/quant, the project's own integer reference, never from an engine.
//
// Everything is computed so that the bytes are the same on every machine:
// our own PRNG, no transcendental functions in the weights, explicit
// conversions that keep the compiler from fusing multiply-adds, and scales
// rounded to short binary fractions so float32 and float64 derivations of
// TFLite's multipliers agree. An expected output must also equal TFLite
// Micro's all-integer softmax, so it cannot depend on a platform's exp.
// (Checked: GOARCH=386, also with GO386=softfloat, regenerates the same
// bytes.)
package vibration

import (
	"fmt"
	"math"
	"slices"

	"github.com/edgefleet/edgefleet/models"
	"github.com/edgefleet/edgefleet/models/quant"
	"github.com/edgefleet/edgefleet/models/tflitewrite"
)

// Name is the model name in the registry.
const Name = "vibration-anomaly"

// Shape of the interface every version shares.
const (
	Bins     = 64
	Axes     = 2
	Features = Bins * Axes
	Classes  = 4
)

// Labels are the output classes, in order.
var Labels = []string{"normal", "imbalance", "misalignment", "bearing_fault"}

// SampleClass is the class of the sample input every version ships.
const SampleClass = 1

// sampleSeed picks the sample window of SampleClass.
const sampleSeed = 0x5eed

// Spec describes one version.
type Spec struct {
	Version string
	// Hidden are the hidden layer widths.
	Hidden []int
	// PerChannel quantizes weights per output unit instead of per tensor.
	PerChannel bool
	// StandaloneRelu writes each ReLU as its own RELU operator instead of
	// fusing it into the FULLY_CONNECTED before it, as converters do. The
	// outputs are the same bytes either way: the RELU keeps its input's
	// quantization, so it is an exact clamp at the zero point.
	StandaloneRelu bool
	// Seed varies the weight noise between versions.
	Seed uint64
	// Faulty ships the final layer with its class rows rotated, as a broken
	// export would: the file runs, but answers wrongly.
	Faulty  bool
	Purpose string
}

// Specs are the versions the generator writes.
func Specs() []Spec {
	return []Spec{
		{Version: "1.0.0", Hidden: []int{32}, Seed: 1, StandaloneRelu: true,
			Purpose: "baseline: the small model devices start with"},
		{Version: "2.0.0", Hidden: []int{96, 48}, PerChannel: true, Seed: 2, StandaloneRelu: true,
			Purpose: "good upgrade: heavier and slower than 1.0.0, same interface and answers; its rollout converges"},
		{Version: "3.0.0", Hidden: []int{96, 48}, PerChannel: true, Seed: 3, StandaloneRelu: true, Faulty: true,
			Purpose: "bad upgrade: wrong outputs for its own sample input, so the device self-test rejects it"},
		{Version: "4.0.0", Hidden: []int{512, 256}, PerChannel: true, Seed: 4,
			Purpose: "slow upgrade: right answers at many times 2.0.0's compute, for the latency gate"},
	}
}

// Model is one built version.
type Model struct {
	Spec   Spec
	TFLite []byte
	// SampleInput is the int8 [1, Features] sample, raw bytes.
	SampleInput []byte
	// ExpectedOutput is what the model should answer for the sample: the
	// reference run of the intended weights. For a faulty version the file
	// answers something else (Actual).
	ExpectedOutput []byte
	Meta           models.Meta
	// ONNX is the same network in ONNX's QDQ form, with its own sidecar.
	ONNX     []byte
	ONNXMeta models.Meta

	layers   []layer // as written in the file
	intended []layer // as meant; differs only when Faulty
	inQ      quant.Params
}

// layer is one FULLY_CONNECTED (+ RELU unless last) in quantized form.
type layer struct {
	fc   quant.FullyConnected
	relu bool
}

// Build makes the model of a spec.
func Build(s Spec) (*Model, error) {
	if len(s.Hidden) == 0 {
		return nil, fmt.Errorf("vibration %s: no hidden layers", s.Version)
	}
	for _, h := range s.Hidden {
		if h < Classes || h%Classes != 0 || h > 4096 {
			return nil, fmt.Errorf("vibration %s: hidden width %d, want a multiple of %d up to 4096", s.Version, h, Classes)
		}
	}
	rng := splitmix(s.Seed)
	fl := floatNet(s, &rng)
	m := &Model{Spec: s, inQ: quant.Params{Scale: inputScale, ZeroPoint: -128}}
	m.intended = quantize(fl, m.inQ, s.PerChannel, calibration())
	m.layers = m.intended
	if s.Faulty {
		m.layers = slices.Clone(m.intended)
		last := m.layers[len(m.layers)-1]
		m.layers[len(m.layers)-1] = layer{fc: rotateUnits(last.fc), relu: last.relu}
	}

	sample := quantizeFeatures(Sample(SampleClass, sampleSeed), m.inQ)
	m.SampleInput = int8Bytes(sample)
	want, err := run(m.intended, sample)
	if err != nil {
		return nil, fmt.Errorf("vibration %s: sample input: %w", s.Version, err)
	}
	if _, err := run(m.layers, sample); err != nil {
		return nil, fmt.Errorf("vibration %s: sample input as shipped: %w", s.Version, err)
	}
	m.ExpectedOutput = int8Bytes(want)

	tfl, err := m.encode()
	if err != nil {
		return nil, fmt.Errorf("vibration %s: %w", s.Version, err)
	}
	m.TFLite = tfl
	m.Meta = m.meta()
	if m.ONNX, err = m.encodeONNX(); err != nil {
		return nil, fmt.Errorf("vibration %s: onnx: %w", s.Version, err)
	}
	m.ONNXMeta = m.meta()
	m.ONNXMeta.Format = "onnx"
	m.ONNXMeta.Backend = "onnxruntime"
	m.ONNXMeta.File = m.base() + ".onnx"
	m.ONNXMeta.Size = len(m.ONNX)
	m.ONNXMeta.SHA256 = models.SHA256(m.ONNX)
	m.ONNXMeta.Tolerance = ONNXTolerance
	m.ONNXMeta.Description += " ONNX QDQ form of the same int8 tensors (opset 13)."
	return m, nil
}

// Reference runs the network as written in the file on an int8 input.
func (m *Model) Reference(in []int8) ([]int8, error) {
	if len(in) != Features {
		return nil, fmt.Errorf("vibration: input has %d features, want %d", len(in), Features)
	}
	return run(m.layers, in)
}

// Actual is the reference output of the file for its own sample: equal to
// ExpectedOutput unless the version is faulty.
func (m *Model) Actual() []byte {
	out, err := m.Reference(bytesInt8(m.SampleInput))
	if err != nil {
		panic(err) // Build ran the same input through the same layers
	}
	return int8Bytes(out)
}

// MACs is the multiply-accumulates of one inference.
func (m *Model) MACs() int {
	n := 0
	for _, l := range m.layers {
		n += l.fc.Units * l.fc.Depth
	}
	return n
}

// Label returns the class an int8 output picks (the first maximum).
func Label(out []byte) string {
	best := 0
	for i := range out {
		if int8(out[i]) > int8(out[best]) {
			best = i
		}
	}
	if best < len(Labels) {
		return Labels[best]
	}
	return ""
}

// run is the integer reference of the whole network. It runs it the three
// ways TFLite runtimes do — TFLite Micro (fixed-point requantization and
// softmax), TFLite's builtin kernels (fixed-point requantization, float
// table softmax) and LiteRT's default XNNPACK path (float32 requantization,
// float table softmax) — and fails unless all three agree, so an expected
// output never depends on which one a device's engine follows.
func run(layers []layer, in []int8) ([]int8, error) {
	forward := func(liteRT bool) ([]int8, float32, error) {
		x := in
		for _, l := range layers {
			fc := l.fc
			fc.LiteRT = liteRT
			y := make([]int8, fc.Units)
			if err := fc.Run(x, y); err != nil {
				return nil, 0, err
			}
			if l.relu {
				quant.Relu(y, fc.Out, y, fc.Out)
			}
			x = y
		}
		return x, layers[len(layers)-1].fc.Out.Scale, nil
	}
	logits, scale, err := forward(false)
	if err != nil {
		return nil, err
	}
	micro := make([]int8, len(logits))
	quant.SoftmaxFixedPoint(logits, scale, 1, micro)
	builtin := make([]int8, len(logits))
	quant.Softmax(logits, scale, 1, builtin)
	lLogits, _, err := forward(true)
	if err != nil {
		return nil, err
	}
	lite := make([]int8, len(lLogits))
	quant.Softmax(lLogits, scale, 1, lite)
	if !slices.Equal(micro, builtin) || !slices.Equal(micro, lite) {
		return nil, fmt.Errorf("%w: logits %v give %v in TFLite Micro, %v with TFLite's builtin kernels; LiteRT's logits %v give %v",
			errAmbiguous, logits, micro, builtin, lLogits, lite)
	}
	return micro, nil
}

func (m *Model) encode() ([]byte, error) {
	g := tflitewrite.New(fmt.Sprintf("edgefleet %s %s", Name, m.Spec.Version))
	x := g.Input("features", tflitewrite.Int8, []int{1, Features}, tflitewrite.PerTensor(m.inQ.Scale, int64(m.inQ.ZeroPoint)))
	for i, l := range m.layers {
		name := fmt.Sprintf("dense_%d", i+1)
		fc := l.fc
		wq := &tflitewrite.Quant{Scale: fc.WeightScale, ZeroPoint: make([]int64, len(fc.WeightScale))}
		bs := make([]float32, len(fc.WeightScale))
		for j, s := range fc.WeightScale {
			bs[j] = fc.In.Scale * s // exact: both are short binary fractions
		}
		bq := &tflitewrite.Quant{Scale: bs, ZeroPoint: make([]int64, len(bs))}
		w := g.ConstInt8(name+"/weights", []int{fc.Units, fc.Depth}, wq, fc.Weights)
		b := g.ConstInt32(name+"/bias", []int{fc.Units}, bq, fc.Bias)
		act := tflitewrite.ActNone
		if l.relu && !m.Spec.StandaloneRelu {
			act = tflitewrite.ActRelu
		}
		x = g.FullyConnected(name, x, w, b, tflitewrite.FullyConnectedOptions{
			Activation: act,
			Out:        tflitewrite.PerTensor(fc.Out.Scale, int64(fc.Out.ZeroPoint)),
		})
		if l.relu && m.Spec.StandaloneRelu {
			x = g.Relu(name+"/relu", x, nil)
		}
	}
	g.Output(g.Softmax("probabilities", x, 1, nil))
	return g.Encode()
}

func (m *Model) meta() models.Meta {
	desc := fmt.Sprintf("Vibration anomaly classifier: int8 spectrum of an accelerometer window (%d bins × %d axes) → ", Bins, Axes)
	for i, l := range m.layers {
		if i > 0 {
			desc += " → "
		}
		desc += fmt.Sprintf("FC %d", l.fc.Units)
		switch {
		case l.relu && m.Spec.StandaloneRelu:
			desc += " → RELU"
		case l.relu:
			desc += " (fused RELU)"
		}
	}
	desc += " → SOFTMAX."
	if m.Spec.PerChannel {
		desc += " Weights int8 per-channel."
	} else {
		desc += " Weights int8 per-tensor."
	}
	return models.Meta{
		Name: Name, Version: m.Spec.Version, Format: "tflite", Precision: "int8", Backend: "tflite",
		File: m.FileName(), Size: len(m.TFLite), SHA256: models.SHA256(m.TFLite),
		Purpose: m.Spec.Purpose, Description: desc,
		Inputs: []models.TensorMeta{{
			Name: "features", DType: "int8", Shape: []int{1, Features},
			Quantization: &models.QuantizationMeta{Scale: []float32{m.inQ.Scale}, ZeroPoint: []int64{int64(m.inQ.ZeroPoint)}},
			Description:  fmt.Sprintf("spectral magnitude of a 1 s accelerometer window, %d bins of the radial axis then %d of the axial axis, real range [0, 4)", Bins, Bins),
		}},
		Outputs: []models.TensorMeta{{
			Name: "probabilities", DType: "int8", Shape: []int{1, Classes},
			Quantization: &models.QuantizationMeta{Scale: []float32{quant.SoftmaxOut.Scale}, ZeroPoint: []int64{int64(quant.SoftmaxOut.ZeroPoint)}},
			Description:  "probability of each machine state",
			Labels:       Labels,
		}},
		SampleInput:    m.base() + ".input.bin",
		ExpectedOutput: m.base() + ".expected.bin",
		ExpectedLabel:  Label(m.ExpectedOutput),
		MACs:           m.MACs(),
		Generator:      "go run ./models/cmd/gen",
	}
}

func (m *Model) base() string { return Name + "-" + m.Spec.Version }

// FileName is the model file's name.
func (m *Model) FileName() string { return m.base() + ".tflite" }

// Files returns every file of the version by name: model, sidecar, sample
// input and expected output.
func (m *Model) Files() (map[string][]byte, error) {
	side, err := marshalMeta(m.Meta)
	if err != nil {
		return nil, err
	}
	onnxSide, err := marshalMeta(m.ONNXMeta)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		m.FileName():            m.TFLite,
		m.base() + ".json":      side,
		m.ONNXMeta.File:         m.ONNX,
		m.base() + ".onnx.json": onnxSide,
		m.Meta.SampleInput:      m.SampleInput,
		m.Meta.ExpectedOutput:   m.ExpectedOutput,
	}, nil
}

func int8Bytes(v []int8) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func bytesInt8(b []byte) []int8 {
	v := make([]int8, len(b))
	for i, x := range b {
		v[i] = int8(x)
	}
	return v
}

// niceScale rounds a positive scale up to a binary fraction with a 6-bit
// significand, so that products of two scales are exact in float32.
func niceScale(x float64) float32 {
	if !(x > 0) || math.IsInf(x, 0) {
		return 1
	}
	frac, exp := math.Frexp(x) // x = frac·2^exp, frac in [0.5, 1)
	frac = math.Ceil(frac*64) / 64
	return float32(math.Ldexp(frac, exp))
}

// Generate builds every version and returns all their files by name, as
// they belong in models/demo.
func Generate() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, s := range Specs() {
		m, err := Build(s)
		if err != nil {
			return nil, err
		}
		fs, err := m.Files()
		if err != nil {
			return nil, err
		}
		for name, b := range fs {
			files[name] = b
		}
	}
	return files, nil
}
