package wire

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

func sampleFrame() Frame {
	return Frame{Flags: FlagQuantize, Tensors: []Tensor{
		{Name: "x", DType: runtime.Float32, Shape: []int{1, 2}, Data: []byte{0, 0, 128, 63, 0, 0, 0, 64}},
		{Name: "ids", DType: runtime.Int64, Shape: []int{1}, Data: []byte{7, 0, 0, 0, 0, 0, 0, 0}},
		{Name: "", DType: runtime.Int8, Shape: []int{}, Data: []byte{0xff}},
	}}
}

func TestFrameRoundTrip(t *testing.T) {
	f := sampleFrame()
	b, err := AppendFrame(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := DecodeFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if g.Flags != f.Flags || len(g.Tensors) != len(f.Tensors) {
		t.Fatalf("decoded %+v", g)
	}
	for i := range f.Tensors {
		a, b := f.Tensors[i], g.Tensors[i]
		if a.Name != b.Name || a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("tensor %d: %+v, want %+v", i, b, a)
		}
	}
}

func TestFrameMalformed(t *testing.T) {
	good, _ := AppendFrame(nil, sampleFrame())
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":         {nil, ErrFrame},
		"bad magic":     {append([]byte("EFT2"), good[4:]...), ErrFrame},
		"unknown flags": {append(append([]byte{}, good[:4]...), append([]byte{0x80}, good[5:]...)...), ErrFrame},
		"truncated":     {good[:len(good)-1], ErrFrame},
		"trailing":      {append(append([]byte{}, good...), 0), ErrFrame},
		"too many":      {[]byte{'E', 'F', 'T', '1', 0, 0, 0xff, 0xff}, ErrFrame},
		"bad dtype":     {[]byte{'E', 'F', 'T', '1', 0, 0, 1, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ErrDType},
		"size mismatch": {[]byte{'E', 'F', 'T', '1', 0, 0, 1, 0, 0, 0, 2, 1, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2}, ErrSize},
		"huge dims":     {[]byte{'E', 'F', 'T', '1', 0, 0, 1, 0, 0, 0, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, ErrSize},
		"rank too big":  {[]byte{'E', 'F', 'T', '1', 0, 0, 1, 0, 0, 0, 1, 9}, ErrFrame},
	}
	for name, tc := range cases {
		if _, err := DecodeFrame(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestJSONData(t *testing.T) {
	for _, tc := range []struct {
		dt   runtime.DType
		json string
	}{
		{runtime.Float32, "[1,-2.5,3e-07,0]"},
		{runtime.Int8, "[-128,127,0]"},
		{runtime.Uint8, "[0,255]"},
		{runtime.Int64, "[9007199254740993,-9223372036854775808]"},
		{runtime.Uint64, "[18446744073709551615]"},
		{runtime.Bool, "[1,0]"},
		{runtime.Float16, "[1,-2,0.5,65504]"},
		{runtime.Float64, "[0.1,1e+300]"},
	} {
		var n int
		for _, c := range tc.json {
			if c == ',' {
				n++
			}
		}
		b, err := DecodeData(tc.dt, []byte(tc.json), n+1)
		if err != nil {
			t.Errorf("%s %s: %v", tc.dt, tc.json, err)
			continue
		}
		back, err := EncodeData(tc.dt, b)
		if err != nil || string(back) != tc.json {
			t.Errorf("%s: %s → %s (%v)", tc.dt, tc.json, back, err)
		}
	}
	bad := []struct {
		dt   runtime.DType
		json string
		n    int
		want error
	}{
		{runtime.Int8, "[128]", 1, ErrRange},
		{runtime.Int8, "[1.5]", 1, ErrRange},
		{runtime.Uint8, "[-1]", 1, ErrRange},
		{runtime.Float32, "[1e39]", 1, ErrRange},
		{runtime.Float32, `["1"]`, 1, ErrJSON},
		{runtime.Float32, "[[1]]", 1, ErrJSON},
		{runtime.Float32, "{}", 1, ErrJSON},
		{runtime.Float32, "[1,2]", 1, ErrSize},
		{runtime.Float32, "[1]", 2, ErrSize},
		{runtime.Float32, "[1]", 1 << 40, ErrSize},
	}
	for _, tc := range bad {
		if _, err := DecodeData(tc.dt, []byte(tc.json), tc.n); !errors.Is(err, tc.want) {
			t.Errorf("%s %s n=%d: %v, want %v", tc.dt, tc.json, tc.n, err, tc.want)
		}
	}
}

func TestFloat16(t *testing.T) {
	for _, f := range []float32{0, 1, -1, 0.5, 65504, 6.1035156e-05, 5.9604645e-08, float32(math.Inf(1))} {
		if got := float16to32(float16bits(f)); got != f {
			t.Errorf("%v → %v", f, got)
		}
	}
}

// FuzzDecodeFrame: no input may panic, and whatever decodes must encode
// back to the same bytes.
func FuzzDecodeFrame(f *testing.F) {
	good, _ := AppendFrame(nil, sampleFrame())
	f.Add(good)
	f.Add(good[:12])
	f.Add([]byte("EFT1\x00\x00\x00\x00"))
	f.Add([]byte("EFT1\x00\x00\x01\x00\x01\x00x\x01\x02\x01\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x3f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeFrame(b)
		if err != nil {
			return
		}
		back, err := AppendFrame(nil, fr)
		if err != nil {
			t.Fatalf("decoded frame does not encode: %v", err)
		}
		if !bytes.Equal(back, b) {
			t.Fatalf("round trip changed the frame:\n%x\n%x", b, back)
		}
	})
}

// FuzzDecodeData: no JSON may panic or allocate beyond what its shape and
// length allow.
func FuzzDecodeData(f *testing.F) {
	f.Add(uint8(runtime.Float32), []byte("[1,2,3]"), 3)
	f.Add(uint8(runtime.Int8), []byte("[-128, 127]"), 2)
	f.Add(uint8(runtime.Bool), []byte("[true,false]"), 2)
	f.Add(uint8(runtime.Int64), []byte("[1e3]"), 1)
	f.Add(uint8(runtime.Float16), []byte("[null]"), 1)
	f.Fuzz(func(t *testing.T, dt uint8, raw []byte, n int) {
		b, err := DecodeData(runtime.DType(dt), raw, n)
		if err != nil {
			return
		}
		if len(b) != n*runtime.DType(dt).Size() {
			t.Fatalf("%d bytes for %d elements of %s", len(b), n, runtime.DType(dt))
		}
		if _, err := EncodeData(runtime.DType(dt), b); err != nil {
			t.Fatal(err)
		}
	})
}
