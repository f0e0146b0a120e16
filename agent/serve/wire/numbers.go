package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// RawNumbers is a JSON array of numbers kept undecoded until the dtype it
// stands for is known, so that int64 values survive exactly.
type RawNumbers = json.RawMessage

// DecodeData parses a JSON array of n numbers into little-endian elements of
// dtype dt. The error names the element that does not fit.
//
// It scans the array itself rather than through encoding/json's tokenizer,
// which costs microseconds per element: a 96×96 image is 9,216 of them.
func DecodeData(dt runtime.DType, raw RawNumbers, n int) ([]byte, error) {
	size := dt.Size()
	if size == 0 {
		return nil, fmt.Errorf("%w: dtype %s has no JSON form", ErrDType, dt)
	}
	// Each element takes at least two bytes of JSON ("0,"), so a count the
	// body could not hold is refused before anything is allocated for it.
	if n < 0 || n > len(raw)/2+1 {
		return nil, fmt.Errorf("%w: shape needs %d elements but data is %d bytes of JSON", ErrSize, n, len(raw))
	}
	p := skipSpace(raw, 0)
	if p >= len(raw) || raw[p] != '[' {
		return nil, fmt.Errorf("%w: data must be a flat array of numbers", ErrJSON)
	}
	p = skipSpace(raw, p+1)
	out := make([]byte, n*size)
	i := 0
	if p < len(raw) && raw[p] == ']' {
		p++
	} else {
		for {
			startTok := p
			for p < len(raw) && !isDelim(raw[p]) {
				p++
			}
			tok := raw[startTok:p]
			if len(tok) == 0 {
				return nil, fmt.Errorf("%w: data element %d is missing", ErrJSON, i)
			}
			if i >= n {
				return nil, fmt.Errorf("%w: data has more than the %d elements the shape needs", ErrSize, n)
			}
			if err := putElement(out[i*size:], dt, tok); err != nil {
				return nil, fmt.Errorf("data element %d: %w", i, err)
			}
			i++
			p = skipSpace(raw, p)
			if p >= len(raw) {
				return nil, fmt.Errorf("%w: data array is not closed", ErrJSON)
			}
			if raw[p] == ']' {
				p++
				break
			}
			if raw[p] != ',' {
				return nil, fmt.Errorf("%w: unexpected %q after data element %d", ErrJSON, raw[p], i-1)
			}
			p = skipSpace(raw, p+1)
		}
	}
	if p = skipSpace(raw, p); p != len(raw) {
		return nil, fmt.Errorf("%w: unexpected data after the array", ErrJSON)
	}
	if i != n {
		return nil, fmt.Errorf("%w: data has %d elements, shape needs %d", ErrSize, i, n)
	}
	return out, nil
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

func isDelim(c byte) bool {
	return c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// putElement writes one JSON literal as an element of dt. Only JSON
// numbers (and true/false for bool) are accepted: strconv alone would also
// take "0x1F", "Inf" or "1_000".
func putElement(b []byte, dt runtime.DType, tok []byte) error {
	if dt == runtime.Bool {
		switch string(tok) {
		case "true", "1":
			b[0] = 1
			return nil
		case "false", "0":
			b[0] = 0
			return nil
		}
		return fmt.Errorf("%w: %s is not a bool", ErrRange, tok)
	}
	if !isJSONNumber(tok) {
		return fmt.Errorf("%w: %q is not a number", ErrJSON, tok)
	}
	s := string(tok)
	switch dt {
	case runtime.Float32, runtime.Float16, runtime.Float64:
		bits := 64
		if dt != runtime.Float64 {
			bits = 32
		}
		f, err := strconv.ParseFloat(s, bits)
		if err != nil || (dt == runtime.Float16 && math.Abs(f) > 65504) {
			return fmt.Errorf("%w: %s is not a %s", ErrRange, s, dt)
		}
		switch dt {
		case runtime.Float32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(f)))
		case runtime.Float16:
			binary.LittleEndian.PutUint16(b, float16bits(float32(f)))
		default:
			binary.LittleEndian.PutUint64(b, math.Float64bits(f))
		}
		return nil
	case runtime.Uint8, runtime.Uint16, runtime.Uint32, runtime.Uint64:
		u, err := strconv.ParseUint(s, 10, dt.Size()*8)
		if err != nil {
			return fmt.Errorf("%w: %s is not a %s", ErrRange, s, dt)
		}
		putUint(b, dt.Size(), u)
		return nil
	default: // signed integers
		v, err := strconv.ParseInt(s, 10, dt.Size()*8)
		if err != nil {
			return fmt.Errorf("%w: %s is not a %s", ErrRange, s, dt)
		}
		putUint(b, dt.Size(), uint64(v))
		return nil
	}
}

// isJSONNumber reports whether tok is a number as JSON spells it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(tok []byte) bool {
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(tok) && tok[i] >= '0' && tok[i] <= '9' {
			i++
		}
		return i - j
	}
	if i < len(tok) && tok[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(tok)
}

func putUint(b []byte, size int, u uint64) {
	switch size {
	case 1:
		b[0] = byte(u)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(u))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(u))
	default:
		binary.LittleEndian.PutUint64(b, u)
	}
}

// EncodeData writes little-endian elements of dtype dt as a JSON array.
func EncodeData(dt runtime.DType, data []byte) (RawNumbers, error) {
	size := dt.Size()
	if size == 0 || len(data)%size != 0 {
		return nil, fmt.Errorf("%w: %d bytes are not whole %s elements", ErrSize, len(data), dt)
	}
	n := len(data) / size
	out := make([]byte, 0, 2+n*4)
	out = append(out, '[')
	for i := range n {
		if i > 0 {
			out = append(out, ',')
		}
		e := data[i*size:]
		switch dt {
		case runtime.Float32:
			out = appendFloat(out, float64(math.Float32frombits(binary.LittleEndian.Uint32(e))), 32)
		case runtime.Float16:
			out = appendFloat(out, float64(float16to32(binary.LittleEndian.Uint16(e))), 32)
		case runtime.Float64:
			out = appendFloat(out, math.Float64frombits(binary.LittleEndian.Uint64(e)), 64)
		case runtime.Int8:
			out = strconv.AppendInt(out, int64(int8(e[0])), 10)
		case runtime.Int16:
			out = strconv.AppendInt(out, int64(int16(binary.LittleEndian.Uint16(e))), 10)
		case runtime.Int32:
			out = strconv.AppendInt(out, int64(int32(binary.LittleEndian.Uint32(e))), 10)
		case runtime.Int64:
			out = strconv.AppendInt(out, int64(binary.LittleEndian.Uint64(e)), 10)
		case runtime.Uint8, runtime.Bool:
			out = strconv.AppendUint(out, uint64(e[0]), 10)
		case runtime.Uint16:
			out = strconv.AppendUint(out, uint64(binary.LittleEndian.Uint16(e)), 10)
		case runtime.Uint32:
			out = strconv.AppendUint(out, uint64(binary.LittleEndian.Uint32(e)), 10)
		case runtime.Uint64:
			out = strconv.AppendUint(out, binary.LittleEndian.Uint64(e), 10)
		}
	}
	return append(out, ']'), nil
}

// appendFloat writes f as JSON; NaN and infinities, which JSON lacks, are
// written as null so the body stays valid and the caller sees the gap.
func appendFloat(out []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(out, "null"...)
	}
	return strconv.AppendFloat(out, f, 'g', -1, bits)
}

// float16bits converts to IEEE 754 half precision, rounding to nearest even.
func float16bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case b>>23&0xff == 0xff: // inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func float16to32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(mant) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
