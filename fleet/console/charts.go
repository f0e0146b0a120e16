package console

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Charts are drawn on the server as SVG: no script library, nothing
// fetched, and the figures are in the page for screen readers too (each
// chart has a title and a summary of its last values).

const chartW, chartH, chartPad = 560.0, 160.0, 4.0

// LineChart is a chart of one or more series over time.
type LineChart struct {
	Title   string
	Unit    string
	Series  []Series
	YMax    string
	From    string
	To      string
	Empty   bool
	Summary string
	W, H    float64
	// Threshold, when set, is drawn as a dashed line.
	Threshold  *float64
	ThresholdY float64
}

// Series is one line; Points is the SVG polyline attribute.
type Series struct {
	Name   string
	Class  string
	Points string
	Last   string
}

type point struct {
	t time.Time
	v float64
}

// lineChart scales the series into the chart box; ys are aligned with ts.
func lineChart(title, unit string, ts []time.Time, names, classes []string, ys [][]float64, threshold *float64) LineChart {
	ch := LineChart{Title: title, Unit: unit, W: chartW, H: chartH, Threshold: threshold}
	if len(ts) == 0 {
		ch.Empty = true
		return ch
	}
	maxY := 0.0
	for _, s := range ys {
		for _, v := range s {
			if !math.IsNaN(v) && v > maxY {
				maxY = v
			}
		}
	}
	if threshold != nil && *threshold > maxY {
		maxY = *threshold
	}
	if maxY == 0 {
		maxY = 1
	}
	maxY *= 1.1
	t0, t1 := ts[0], ts[len(ts)-1]
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 {
		if span <= 0 {
			return chartW / 2
		}
		return chartPad + (chartW-2*chartPad)*t.Sub(t0).Seconds()/span
	}
	y := func(v float64) float64 { return chartH - chartPad - (chartH-2*chartPad)*v/maxY }
	var summary []string
	for i, s := range ys {
		var b strings.Builder
		last := math.NaN()
		for j, v := range s {
			if math.IsNaN(v) || j >= len(ts) {
				continue
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", x(ts[j]), y(v))
			last = v
		}
		se := Series{Name: names[i], Class: classes[i], Points: strings.TrimSpace(b.String())}
		if !math.IsNaN(last) {
			se.Last = num(last) + unit
			summary = append(summary, names[i]+" "+se.Last)
		}
		ch.Series = append(ch.Series, se)
	}
	if threshold != nil {
		ch.ThresholdY = y(*threshold)
	}
	ch.YMax = num(maxY) + unit
	ch.From, ch.To = t0.UTC().Format("15:04:05"), t1.UTC().Format("15:04:05")
	ch.Summary = "latest: " + strings.Join(summary, ", ")
	return ch
}

// Bar is one gate: its value against its threshold.
type Bar struct {
	Name      string
	Value     string
	Threshold string
	Verdict   string
	Detail    string
	// ValueW and ThresholdX are in the 0..BarW range.
	ValueW     float64
	ThresholdX float64
}

// BarW is the width of a gate bar.
const BarW = 300.0

func gateBar(name string, value, threshold float64, verdict, detail string) Bar {
	top := math.Max(value, threshold) * 1.25
	if top <= 0 || math.IsNaN(top) || math.IsInf(top, 0) {
		top = 1
	}
	clampW := func(v float64) float64 {
		if math.IsNaN(v) || v < 0 {
			return 0
		}
		return math.Min(BarW, BarW*v/top)
	}
	return Bar{Name: name, Value: num(value), Threshold: num(threshold), Verdict: verdict, Detail: detail,
		ValueW: clampW(value), ThresholdX: clampW(threshold)}
}

// num prints a figure with as many digits as are useful.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v == math.Trunc(v) && math.Abs(v) < 1e12:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
