package broker

import (
	"sync"
	"time"
)

// tokenBucket paces one connection's publishes. Waiting, rather than
// dropping, is the point: a device draining its offline queue is slowed
// down by a later PUBACK and loses nothing, while a client flooding the
// broker cannot make the server write faster than the rate.
type tokenBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// reserve takes a token and returns how long the caller must wait before
// using it (zero when one was available).
func (b *tokenBucket) reserve(now time.Time, rate float64, burst int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / rate * float64(time.Second))
}
