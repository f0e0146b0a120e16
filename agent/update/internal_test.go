package update

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

func TestVerdict(t *testing.T) {
	p := HealthPolicy{}
	if err := p.defaults(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		cur, prev Figures
		breach    string
	}{
		{"healthy", Figures{Requests: 100, Errors: 1, P95Ms: 7}, Figures{Requests: 100, Errors: 1, P95Ms: 7}, ""},
		{"errors within the allowance", Figures{Requests: 100, Errors: 5, P95Ms: 7}, Figures{Requests: 100, Errors: 1, P95Ms: 7}, ""},
		{"30% errors", Figures{Requests: 100, Errors: 30, P95Ms: 7}, Figures{Requests: 100, Errors: 1, P95Ms: 7}, "error rate 30.0%"},
		{"errors without a baseline", Figures{Requests: 100, Errors: 30}, Figures{}, "error rate 30.0%"},
		{"p95 three times", Figures{Requests: 100, P95Ms: 21}, Figures{Requests: 100, P95Ms: 7}, "3.0x over the allowed 2.0x"},
		{"slow but no latency baseline", Figures{Requests: 100, P95Ms: 21}, Figures{Requests: 5, P95Ms: 7}, ""},
		{"too little evidence", Figures{Requests: 19, Errors: 19}, Figures{Requests: 100}, ""},
	}
	for _, c := range cases {
		err := p.verdict(c.cur, c.prev)
		switch {
		case c.breach == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.breach != "" && (!errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), c.breach)):
			t.Errorf("%s: %v, want a breach mentioning %q", c.name, err, c.breach)
		}
	}
	bad := HealthPolicy{MaxLatencyRatio: 0.5}
	if err := bad.defaults(); !errors.Is(err, ErrConfig) {
		t.Errorf("latency ratio 0.5: %v", err)
	}
}

func TestHealthCountsPerVersion(t *testing.T) {
	h := health{m: map[versionKey]*versionStats{}}
	for i := 0; i < 10; i++ {
		h.observe("m", "1", time.Millisecond, false)
		h.observe("m", "2", 3*time.Millisecond, i%2 == 0)
	}
	h.observe("m", "0", time.Millisecond, false)
	if f := h.figures("m", "2"); f.Requests != 10 || f.Errors != 5 || f.P95Ms < 2.5 || f.P95Ms > 3.5 {
		t.Errorf("m@2: %+v", f)
	}
	h.reset("m", "2", "1")
	if f := h.figures("m", "2"); f.Requests != 0 {
		t.Errorf("after reset m@2: %+v", f)
	}
	if f := h.figures("m", "1"); f.Requests != 10 {
		t.Errorf("kept m@1: %+v", f)
	}
	if f := h.figures("m", "0"); f.Requests != 0 {
		t.Errorf("m@0 should be forgotten: %+v", f)
	}
	for i := 0; i < 2*maxTracked; i++ {
		h.observe("x", string(rune('a'+i%26))+strings.Repeat("z", i/26), 0, false)
	}
	if len(h.m) > maxTracked {
		t.Errorf("tracking %d versions, bound %d", len(h.m), maxTracked)
	}
}

func TestRangeStart(t *testing.T) {
	for in, want := range map[string]uint64{"bytes 20-99/100": 20, "bytes 0-0/1": 0} {
		if got, err := rangeStart(in); err != nil || got != want {
			t.Errorf("%q: %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "bytes", "bytes -5/10", "items 1-2/3", "bytes x-1/2", "bytes 99999999999999999999-1/2"} {
		if _, err := rangeStart(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func FuzzRangeStart(f *testing.F) {
	for _, s := range []string{"bytes 20-99/100", "bytes */100", "bytes 1-", "", "bytes 18446744073709551615-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := rangeStart(s); err == nil && !strings.HasPrefix(s, "bytes ") {
			t.Errorf("%q parsed as %d without the unit", s, n)
		}
	})
}

func TestCompare(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		b := make([]byte, 4*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	got := runtime.Tensor{DType: runtime.Float32, Shape: []int{1, 2}, Data: f32(0.5, 0.25)}
	if err := compare(got, f32(0.5, 0.25), 0); err != nil {
		t.Error(err)
	}
	if err := compare(got, f32(0.5, 0.26), 0.02); err != nil {
		t.Error(err)
	}
	if err := compare(got, f32(0.5, 0.3), 0.02); err == nil || !strings.Contains(err.Error(), "element 1") {
		t.Errorf("0.25 vs 0.3 within 0.02: %v", err)
	}
	if err := compare(got, f32(0.5), 0); err == nil {
		t.Error("size mismatch accepted")
	}
	i8 := runtime.Tensor{DType: runtime.Int8, Data: []byte{0x90, 0xbe}}
	if err := compare(i8, []byte{0xbe, 0x90}, 0); err == nil || !strings.Contains(err.Error(), "[-112 -66]") {
		t.Errorf("int8 mismatch message: %v", err)
	}
}

func FuzzCompare(f *testing.F) {
	f.Add(uint8(runtime.Float32), []byte{0, 0, 128, 63}, []byte{0, 0, 128, 63}, 0.0)
	f.Add(uint8(runtime.Int8), []byte{1, 2}, []byte{1, 3}, 1.0)
	f.Add(uint8(200), []byte{1}, []byte{1}, 0.5)
	f.Fuzz(func(t *testing.T, dt uint8, got, want []byte, tol float64) {
		err := compare(runtime.Tensor{DType: runtime.DType(dt), Data: got}, want, tol)
		if len(got) != len(want) && err == nil {
			t.Errorf("%d bytes matched %d", len(got), len(want))
		}
	})
}

func TestConcreteShape(t *testing.T) {
	info := runtime.TensorInfo{DType: runtime.Int8, Shape: []int{-1, 128}}
	if s, err := concreteShape(info, 256); err != nil || s[0] != 2 {
		t.Errorf("%v %v", s, err)
	}
	if _, err := concreteShape(info, 100); err == nil {
		t.Error("100 bytes fit [-1 128]")
	}
	if _, err := concreteShape(runtime.TensorInfo{DType: runtime.Int8, Shape: []int{-1, -1}}, 4); err == nil {
		t.Error("two unknown dimensions accepted")
	}
	if s, err := concreteShape(runtime.TensorInfo{DType: runtime.Float32, Shape: []int{1, 4}}, 16); err != nil || s[1] != 4 {
		t.Errorf("%v %v", s, err)
	}
}

func TestSelfTestURL(t *testing.T) {
	u, err := selfTestURL("http://127.0.0.1:8080/artifacts/abc?x=1", "def")
	if err != nil || u != "http://127.0.0.1:8080/artifacts/def" {
		t.Errorf("%s %v", u, err)
	}
	if _, err := selfTestURL("https://bucket.example/sha256/abc?X-Amz-Signature=1", "def"); err == nil {
		t.Error("a presigned URL cannot locate self-test tensors")
	}
}
