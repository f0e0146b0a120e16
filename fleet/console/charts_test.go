package console

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestLineChart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ts := []time.Time{t0, t0.Add(time.Second), t0.Add(2 * time.Second)}
	nan := math.NaN()
	ch := lineChart("Latency", " ms", ts, []string{"p50", "p95"}, []string{"s1", "s2"}, [][]float64{{1, nan, 3}, {2, 4, 8}}, nil)
	if ch.Empty || len(ch.Series) != 2 {
		t.Fatalf("%+v", ch)
	}
	// A gap (NaN) is skipped, not drawn as zero.
	if n := len(strings.Fields(ch.Series[0].Points)); n != 2 {
		t.Errorf("p50 has %d points, want 2 (one gap): %q", n, ch.Series[0].Points)
	}
	if ch.Series[1].Last != "8 ms" || !strings.Contains(ch.Summary, "p95 8 ms") {
		t.Errorf("last %q, summary %q", ch.Series[1].Last, ch.Summary)
	}
	// Every point lies inside the box.
	for _, s := range ch.Series {
		for _, p := range strings.Fields(s.Points) {
			var x, y float64
			if _, err := fmt.Sscan(strings.Replace(p, ",", " ", 1), &x, &y); err != nil || x < 0 || x > chartW || y < 0 || y > chartH {
				t.Errorf("point %q outside the chart", p)
			}
		}
	}
	if empty := lineChart("x", "", nil, nil, nil, nil, nil); !empty.Empty {
		t.Error("no windows should give an empty chart")
	}
	one := lineChart("x", "", ts[:1], []string{"a"}, []string{"s1"}, [][]float64{{0}}, nil)
	if one.Empty || one.Series[0].Points == "" {
		t.Errorf("a single window: %+v", one)
	}
}

func TestGateBar(t *testing.T) {
	for _, c := range []struct {
		value, threshold float64
	}{{0.31, 0.05}, {0, 0.1}, {5, 3}, {math.NaN(), 1}, {math.Inf(1), 1}, {-1, 1}, {0, 0}} {
		b := gateBar("g", c.value, c.threshold, "pass", "")
		if b.ValueW < 0 || b.ValueW > BarW || b.ThresholdX < 0 || b.ThresholdX > BarW || math.IsNaN(b.ValueW) || math.IsNaN(b.ThresholdX) {
			t.Errorf("gateBar(%v, %v) = %+v", c.value, c.threshold, b)
		}
	}
	if b := gateBar("g", 0.31, 0.05, "breach", ""); b.ValueW <= b.ThresholdX {
		t.Errorf("a value above its threshold is drawn shorter: %+v", b)
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 3: "3", 0.31: "0.31", 0.0123: "0.0123", 2.345: "2.35", 150.4: "150", math.NaN(): "–"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}
