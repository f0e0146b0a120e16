package enroll_test

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkAuthenticate is the cost the broker adds to every connect
// (twice: at CONNECT and once the session is registered), with 2,000
// enrolled devices.
func BenchmarkAuthenticate(b *testing.B) {
	ctx := context.Background()
	e, _ := open(b)
	var secret string
	for i := range 2_000 {
		c, err := e.Preauthorize(ctx, fmt.Sprintf("gw-%05d", i), nil)
		if err != nil {
			b.Fatal(err)
		}
		if i == 1000 {
			secret = string(c.Secret)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if err := e.Authenticate(ctx, "gw-01000", []byte(secret)); err != nil {
			b.Fatal(err)
		}
	}
}
