package broker

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	var b tokenBucket
	t0 := time.Unix(1000, 0)
	for i := range 5 {
		if w := b.reserve(t0, 10, 5); w != 0 {
			t.Fatalf("burst token %d: wait %v", i, w)
		}
	}
	if w := b.reserve(t0, 10, 5); w != 100*time.Millisecond {
		t.Fatalf("6th at once: wait %v, want 100ms", w)
	}
	if w := b.reserve(t0, 10, 5); w != 200*time.Millisecond {
		t.Fatalf("7th at once: wait %v, want 200ms", w)
	}
	// After a long pause the bucket is full again, not fuller.
	t1 := t0.Add(time.Hour)
	for i := range 5 {
		if w := b.reserve(t1, 10, 5); w != 0 {
			t.Fatalf("after refill, token %d: wait %v", i, w)
		}
	}
	if w := b.reserve(t1, 10, 5); w == 0 {
		t.Fatal("bucket held more than its burst")
	}
}
