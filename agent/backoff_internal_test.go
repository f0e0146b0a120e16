package agent

import (
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	a := &Agent{cfg: Config{ReconnectMin: 100 * time.Millisecond, ReconnectMax: 2 * time.Second}}
	for n := 1; n <= 40; n++ {
		base := min(100*time.Millisecond<<min(n-1, 20), 2*time.Second)
		lo, hi := base/2, base
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := a.backoff(n)
			if d < lo || d > hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, lo, hi)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Fatalf("attempt %d: only %d distinct waits in 200; jitter missing", n, len(seen))
		}
	}
}
