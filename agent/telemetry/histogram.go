// Package telemetry measures what the agent does and ships it to the fleet:
// per-model inference figures (requests, errors by kind, a latency
// histogram with p50/p95/p99), process and system figures, built into one
// numbered window per interval, and a bounded, persistent queue that keeps
// windows while the broker is unreachable and drops the oldest first when
// it is full.
package telemetry

import (
	"math"
	"strconv"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// Bounds are the upper bounds, in milliseconds, of the latency histogram
// buckets, the same on every device so the fleet can add histograms up.
// They grow by 2^(1/4) (19 %) from 0.05 ms to 10 s. Interpolating inside a
// bucket keeps a percentile of a smooth latency distribution within about
// 1 % of the true value (a tight cluster narrower than a bucket can be off
// by up to the bucket's width), close enough to gate a rollout on "p95
// over 1.5x the control's".
var Bounds = makeBounds()

const (
	minBoundMs  = 0.05
	maxBoundMs  = 10_000
	stepsPerOct = 4
)

func makeBounds() []float64 {
	var b []float64
	for i := 0; ; i++ {
		v := minBoundMs * math.Pow(2, float64(i)/stepsPerOct)
		// Four significant digits keep the wire form short and readable.
		v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
		if v >= maxBoundMs {
			return append(b, maxBoundMs)
		}
		b = append(b, v)
	}
}

// Histogram counts latencies in Bounds buckets. The zero value is empty and
// ready; it is not safe for concurrent use (Recorder locks around it).
type Histogram struct {
	counts []uint64 // len(Bounds)+1 once used; the last is overflow
	n      uint64
	sumMs  float64
	minMs  float64
	maxMs  float64
}

// Observe adds one latency.
func (h *Histogram) Observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 0 || math.IsNaN(ms) {
		ms = 0
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(Bounds)+1)
	}
	h.counts[bucket(ms)]++
	if h.n == 0 || ms < h.minMs {
		h.minMs = ms
	}
	if ms > h.maxMs {
		h.maxMs = ms
	}
	h.n++
	h.sumMs += ms
}

// bucket is the index of the first bound >= ms, by binary search.
func bucket(ms float64) int {
	lo, hi := 0, len(Bounds)
	for lo < hi {
		m := (lo + hi) / 2
		if Bounds[m] >= ms {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Quantile returns the q-quantile (0 < q <= 1) in milliseconds, linearly
// interpolated inside its bucket and clamped to the smallest and largest
// observation, or 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) float64 {
	return quantile(Bounds, h.counts, h.n, q, h.minMs, h.maxMs)
}

// Quantile computes the q-quantile of a histogram as carried in telemetry,
// the way the fleet server gates on it: without the exact minimum and
// maximum, the first bucket starts at 0 and the overflow bucket is
// reported as the last bound.
func Quantile(lh *proto.LatencyHistogram, q float64) float64 {
	var n uint64
	for _, c := range lh.GetCounts() {
		n += c
	}
	return quantile(lh.GetBoundsMs(), lh.GetCounts(), n, q, 0, math.Inf(1))
}

func quantile(bounds []float64, counts []uint64, n uint64, q, minMs, maxMs float64) float64 {
	if n == 0 || len(counts) != len(bounds)+1 || len(bounds) == 0 {
		return 0
	}
	q = math.Max(0, math.Min(1, q))
	rank := q * float64(n)
	var cum float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			var hi float64
			if i < len(bounds) {
				hi = bounds[i]
			} else {
				hi = math.Min(maxMs, math.Max(lo, maxMs))
				if math.IsInf(hi, 1) {
					return lo
				}
			}
			lo = math.Max(lo, minMs)
			hi = math.Min(hi, maxMs)
			if hi < lo {
				hi = lo
			}
			frac := (rank - cum) / float64(c)
			return lo + frac*(hi-lo)
		}
		cum += float64(c)
	}
	return math.Min(bounds[len(bounds)-1], maxMs)
}

// Proto returns the histogram in its wire form. Bounds are shared and
// must not be modified by the receiver.
func (h *Histogram) Proto() *proto.LatencyHistogram {
	counts := h.counts
	if counts == nil {
		counts = make([]uint64, len(Bounds)+1)
	}
	return &proto.LatencyHistogram{
		BoundsMs: Bounds,
		Counts:   append([]uint64(nil), counts...),
		SumMs:    h.sumMs,
	}
}

// Reset empties the histogram, keeping its memory.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.n, h.sumMs, h.minMs, h.maxMs = 0, 0, 0, 0
}
