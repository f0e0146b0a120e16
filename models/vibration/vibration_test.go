package vibration

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func build(t *testing.T, s Spec) *Model {
	t.Helper()
	m, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestClassifiesHeldOutWindows checks that the weights are sensible: good
// versions classify windows they were not calibrated on, the faulty one
// does not.
func TestClassifiesHeldOutWindows(t *testing.T) {
	for _, s := range Specs() {
		m := build(t, s)
		right, ambiguous, n := 0, 0, 0
		for c := range Classes {
			for i := range 50 {
				out, err := m.Reference(quantizeFeatures(Sample(c, uint64(90000+1000*c+i)), m.inQ))
				if errors.Is(err, errAmbiguous) {
					ambiguous++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				n++
				if Label(int8Bytes(out)) == Labels[c] {
					right++
				}
			}
		}
		acc := float64(right) / float64(n)
		t.Logf("%s: %d of %d held-out windows right (%d where TFLite runtimes would disagree skipped), %d MACs", s.Version, right, n, ambiguous, m.MACs())
		if n < 190 {
			t.Errorf("%s: only %d windows usable", s.Version, n)
		}
		if s.Faulty && acc > 0.5 {
			t.Errorf("faulty %s is right on %.0f%% of windows", s.Version, 100*acc)
		}
		if !s.Faulty && acc < 0.95 {
			t.Errorf("%s is right on only %.0f%% of windows", s.Version, 100*acc)
		}
	}
}

func TestSampleAndExpectedOutput(t *testing.T) {
	for _, s := range Specs() {
		m := build(t, s)
		if len(m.SampleInput) != Features || len(m.ExpectedOutput) != Classes {
			t.Fatalf("%s: sample %d bytes, expected output %d", s.Version, len(m.SampleInput), len(m.ExpectedOutput))
		}
		if got := Label(m.ExpectedOutput); got != Labels[SampleClass] {
			t.Errorf("%s: expected output %v picks %q, want %q", s.Version, m.ExpectedOutput, got, Labels[SampleClass])
		}
		actual := m.Actual()
		if s.Faulty {
			if bytes.Equal(actual, m.ExpectedOutput) || Label(actual) == Labels[SampleClass] {
				t.Errorf("faulty %s answers %v (%s) for its sample, the expected output is %v", s.Version, actual, Label(actual), m.ExpectedOutput)
			}
		} else if !bytes.Equal(actual, m.ExpectedOutput) {
			t.Errorf("%s answers %v, expected %v", s.Version, actual, m.ExpectedOutput)
		}
		if m.Meta.SHA256 == "" || m.Meta.Size != len(m.TFLite) || m.Meta.ExpectedLabel != Labels[SampleClass] {
			t.Errorf("%s: sidecar %+v", s.Version, m.Meta)
		}
	}
}

func TestVersionsKeepTheInterfaceAndGrow(t *testing.T) {
	var prev *Model
	for _, s := range Specs() {
		m := build(t, s)
		if prev != nil {
			if !bytes.Equal(m.SampleInput, prev.SampleInput) {
				t.Errorf("%s ships a different sample input than %s", s.Version, prev.Spec.Version)
			}
			if m.Meta.Inputs[0].Quantization.Scale[0] != prev.Meta.Inputs[0].Quantization.Scale[0] {
				t.Errorf("%s changes the input quantization", s.Version)
			}
		}
		prev = m
	}
	v2, v4 := build(t, Specs()[1]), build(t, Specs()[3])
	if v4.MACs() < 5*v2.MACs() {
		t.Errorf("slow 4.0.0 has %d MACs, 2.0.0 %d: want at least 5x for the latency gate", v4.MACs(), v2.MACs())
	}
	if v1 := build(t, Specs()[0]); v2.MACs() <= v1.MACs() {
		t.Errorf("2.0.0 (%d MACs) is not heavier than 1.0.0 (%d)", v2.MACs(), v1.MACs())
	}
}

func TestBuildDeterministic(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 6*len(Specs()) {
		t.Errorf("%d files for %d versions", len(a), len(Specs()))
	}
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Errorf("%s differs between two runs", name)
		}
	}
}

func TestBadSpec(t *testing.T) {
	for _, s := range []Spec{{Version: "x"}, {Version: "y", Hidden: []int{6}}, {Version: "z", Hidden: []int{8192}}} {
		if _, err := Build(s); err == nil || !strings.Contains(err.Error(), s.Version) {
			t.Errorf("Build(%+v) = %v, want an error naming the version", s, err)
		}
	}
	m := build(t, Specs()[0])
	if _, err := m.Reference(make([]int8, 3)); err == nil {
		t.Error("Reference accepted 3 features")
	}
}

func TestInput(t *testing.T) {
	m := build(t, Specs()[1])
	for c := range Classes {
		in, err := Input(c, 7)
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Reference(bytesInt8(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := Label(int8Bytes(out)); got != Labels[c] {
			t.Errorf("a %s window is classified %s", Labels[c], got)
		}
	}
	if in, _ := Input(SampleClass, sampleSeed); !bytes.Equal(in, m.SampleInput) {
		t.Error("Input(SampleClass, sampleSeed) is not the shipped sample")
	}
	if _, err := Input(4, 1); err == nil {
		t.Error("class 4 accepted")
	}
}
