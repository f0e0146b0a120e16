package models

import "testing"

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"2.0.0", "10.0.0", true}, {"10.0.0", "9.0.0", false}, {"1.0.0", "1.0.1", true},
		{"1.0", "1.0.0", true}, {"1.0.0", "1.0.0", false}, {"1.0.0-rc1", "1.0.0-rc2", true},
	} {
		if got := versionLess(c.a, c.b); got != c.want {
			t.Errorf("versionLess(%s, %s) = %v", c.a, c.b, got)
		}
	}
}
