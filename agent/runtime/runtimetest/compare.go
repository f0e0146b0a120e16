package runtimetest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Tolerances of ../shared/models/README.md for float outputs.
const (
	relTol = 1e-5
	absTol = 1e-6
)

// diff is the outcome of comparing one output with its reference.
type diff struct {
	// mismatch says why the output is wrong; "" when it is within the rule.
	mismatch string
	// maxSteps is the largest integer difference seen (quantized outputs),
	// maxRel the largest relative float difference.
	maxSteps int64
	maxRel   float64
}

// compare checks got against want by the rule for format and dtype:
// float within relTol (absTol near zero); uint8 TFLite within steps;
// everything else byte for byte.
func compare(format string, got, want runtime.Tensor, steps int) diff {
	if got.DType != want.DType {
		return diff{mismatch: fmt.Sprintf("dtype %s, want %s", got.DType, want.DType)}
	}
	if !slices.Equal(got.Shape, want.Shape) {
		return diff{mismatch: fmt.Sprintf("shape %v, want %v", got.Shape, want.Shape)}
	}
	if len(got.Data) != len(want.Data) {
		return diff{mismatch: fmt.Sprintf("%d bytes, want %d", len(got.Data), len(want.Data))}
	}
	switch {
	case want.DType == runtime.Float32 || want.DType == runtime.Float64:
		return compareFloat(got, want)
	case want.DType == runtime.Uint8 && format == "tflite":
		return compareSteps(got.Data, want.Data, steps)
	}
	var d diff
	if !bytes.Equal(got.Data, want.Data) {
		var bad []string
		n := 0
		es := want.DType.Size()
		for i := 0; i+es <= len(want.Data); i += es {
			if !bytes.Equal(got.Data[i:i+es], want.Data[i:i+es]) {
				n++
				if len(bad) < 5 {
					bad = append(bad, fmt.Sprintf("[%d] got %s want %s", i/es, elem(want.DType, got.Data[i:i+es]), elem(want.DType, want.Data[i:i+es])))
				}
			}
		}
		d.mismatch = fmt.Sprintf("%d of %d elements differ (must be identical): %s", n, len(want.Data)/max(es, 1), strings.Join(bad, ", "))
	}
	return d
}

func compareSteps(got, want []byte, steps int) diff {
	var d diff
	n, first := 0, -1
	for i := range want {
		s := int64(got[i]) - int64(want[i])
		if s < 0 {
			s = -s
		}
		if s > d.maxSteps {
			d.maxSteps = s
		}
		if s > int64(steps) {
			n++
			if first < 0 {
				first = i
			}
		}
	}
	if n > 0 {
		d.mismatch = fmt.Sprintf("%d of %d elements differ by more than %d steps (largest %d; first at [%d]: got %d want %d)",
			n, len(want), steps, d.maxSteps, first, got[first], want[first])
	}
	return d
}

func compareFloat(got, want runtime.Tensor) diff {
	var d diff
	es := want.DType.Size()
	n, first := 0, ""
	for i := 0; i+es <= len(want.Data); i += es {
		g, w := floatAt(want.DType, got.Data[i:]), floatAt(want.DType, want.Data[i:])
		if math.IsNaN(g) && math.IsNaN(w) || g == w {
			continue
		}
		ad := math.Abs(g - w)
		if rel := ad / math.Max(math.Abs(w), absTol/relTol); rel > d.maxRel || math.IsNaN(rel) {
			d.maxRel = rel
		}
		if !(ad <= math.Max(relTol*math.Abs(w), absTol)) {
			n++
			if first == "" {
				first = fmt.Sprintf("[%d] got %g want %g", i/es, g, w)
			}
		}
	}
	if n > 0 {
		d.mismatch = fmt.Sprintf("%d of %d elements beyond %g relative / %g absolute (largest relative %.3g; first %s)",
			n, len(want.Data)/es, relTol, absTol, d.maxRel, first)
	}
	return d
}

func floatAt(dt runtime.DType, b []byte) float64 {
	if dt == runtime.Float64 {
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
}

// elem formats one element for a failure message.
func elem(dt runtime.DType, b []byte) string {
	switch dt {
	case runtime.Int8:
		return fmt.Sprint(int8(b[0]))
	case runtime.Uint8, runtime.Bool:
		return fmt.Sprint(b[0])
	case runtime.Int16:
		return fmt.Sprint(int16(binary.LittleEndian.Uint16(b)))
	case runtime.Uint16:
		return fmt.Sprint(binary.LittleEndian.Uint16(b))
	case runtime.Int32:
		return fmt.Sprint(int32(binary.LittleEndian.Uint32(b)))
	case runtime.Uint32:
		return fmt.Sprint(binary.LittleEndian.Uint32(b))
	case runtime.Int64:
		return fmt.Sprint(int64(binary.LittleEndian.Uint64(b)))
	case runtime.Uint64:
		return fmt.Sprint(binary.LittleEndian.Uint64(b))
	}
	return fmt.Sprintf("%x", b)
}
