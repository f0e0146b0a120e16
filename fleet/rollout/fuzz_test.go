package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
)

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"profile=raspberry-pi-4,site=plant-7", "a=b", "", ",", "a==b", "profile=", "k=v,k=w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Fatalf("%q → %q does not parse back: %v", s, sel.String(), err)
		}
	})
}

func FuzzParsePhase(f *testing.F) {
	for _, s := range []string{"1%", "100%", "50", "0", "-1%", "1e3", "NaN%", "Inf%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePhase(s)
		if err != nil {
			return
		}
		if c := p.cumulative(1000, 0); c < 1 || c > 1000 {
			t.Fatalf("%q covers %d of 1000", s, c)
		}
	})
}

// FuzzSpecBody feeds request bodies to the create route's decoding and
// validation: nothing panics, and every refusal is a client error.
func FuzzSpecBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"kws","version":"1.0.0","selector":"site=a","phases":["1%","100%"],"bake":"30s","gates":{"max_error_rate":0.1}}`,
		`{"model":"kws","version":"1.0.0","devices":["a","b"],"window":{"start":"22:00","end":"04:00"}}`,
		`{"model":"kws"}`, `[]`, `{"bake":"forever"}`, `{"phases":[1]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var s Spec
		req := httptest.NewRequest("POST", "/api/v1/rollouts", bytes.NewReader(body))
		if err := decodeBody(req, &s, false); err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrLimit) {
				t.Fatalf("decode error is not a client error: %v", err)
			}
			return
		}
		if _, err := s.normalize(); err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrLimit) {
				t.Fatalf("validation error is not a client error: %v", err)
			}
			return
		}
		if _, err := json.Marshal(s); err != nil {
			t.Fatalf("valid spec does not encode: %v", err)
		}
	})
}
