package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Magic starts every binary tensor frame; the digit is the frame version.
const Magic = "EFT1"

// Frame flags.
const (
	// FlagQuantize asks the server to quantize float32 inputs (see
	// JSONRequest.Quantize).
	FlagQuantize = 1 << 0
	// FlagDequantize asks for quantized outputs as float32.
	FlagDequantize = 1 << 1
	knownFlags     = FlagQuantize | FlagDequantize
)

// Frame is a decoded binary tensor frame:
//
//	magic   4 bytes  "EFT1"
//	flags   uint8    FlagQuantize | FlagDequantize (requests only)
//	_       uint8    0
//	count   uint16   number of tensors, at most MaxTensors
//	then per tensor:
//	  nameLen uint16, name (UTF-8, at most MaxName bytes)
//	  dtype   uint8    DType code (see DTypeCode)
//	  rank    uint8    at most MaxRank
//	  dims    rank × uint32
//	  dataLen uint64   must equal the byte size of dtype and dims
//	  data    dataLen bytes, little-endian, row-major
//
// All integers are little-endian. Nothing may follow the last tensor.
type Frame struct {
	Flags   uint8
	Tensors []Tensor
}

// dtypeCodes fixes the wire code of each dtype. The codes happen to equal
// runtime.DType's values today, but the table keeps the wire stable if
// runtime ever renumbers.
var dtypeCodes = map[runtime.DType]uint8{
	runtime.Float32: 1, runtime.Int8: 2, runtime.Uint8: 3, runtime.Int16: 4, runtime.Int32: 5,
	runtime.Int64: 6, runtime.Bool: 7, runtime.Float16: 8, runtime.Float64: 9, runtime.Uint16: 10,
	runtime.Uint32: 11, runtime.Uint64: 12,
}

var codeDTypes = func() map[uint8]runtime.DType {
	m := make(map[uint8]runtime.DType, len(dtypeCodes))
	for d, c := range dtypeCodes {
		m[c] = d
	}
	return m
}()

// DTypeCode returns the frame code of dt, or 0 if it has none.
func DTypeCode(dt runtime.DType) uint8 { return dtypeCodes[dt] }

// DecodeFrame parses a frame. The tensors' Data alias b.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if len(b) < 8 {
		return f, fmt.Errorf("%w: %d bytes, shorter than the 8-byte header", ErrFrame, len(b))
	}
	if string(b[:4]) != Magic {
		return f, fmt.Errorf("%w: starts with %q, want %q", ErrFrame, b[:4], Magic)
	}
	f.Flags = b[4]
	if f.Flags&^knownFlags != 0 || b[5] != 0 {
		return f, fmt.Errorf("%w: unknown flags %#x/%#x", ErrFrame, b[4], b[5])
	}
	count := int(binary.LittleEndian.Uint16(b[6:]))
	if count > MaxTensors {
		return f, fmt.Errorf("%w: %d tensors, at most %d allowed", ErrFrame, count, MaxTensors)
	}
	p := b[8:]
	f.Tensors = make([]Tensor, 0, count)
	for i := range count {
		t, rest, err := decodeTensor(p)
		if err != nil {
			return Frame{}, fmt.Errorf("tensor %d: %w", i, err)
		}
		f.Tensors = append(f.Tensors, t)
		p = rest
	}
	if len(p) != 0 {
		return Frame{}, fmt.Errorf("%w: %d bytes after the last tensor", ErrFrame, len(p))
	}
	return f, nil
}

func decodeTensor(p []byte) (Tensor, []byte, error) {
	var t Tensor
	if len(p) < 2 {
		return t, nil, fmt.Errorf("%w: truncated before the name length", ErrFrame)
	}
	n := int(binary.LittleEndian.Uint16(p))
	p = p[2:]
	if n > MaxName {
		return t, nil, fmt.Errorf("%w: name of %d bytes, at most %d allowed", ErrFrame, n, MaxName)
	}
	if len(p) < n+2 {
		return t, nil, fmt.Errorf("%w: truncated in the name", ErrFrame)
	}
	if !utf8.Valid(p[:n]) {
		return t, nil, fmt.Errorf("%w: name is not UTF-8", ErrFrame)
	}
	t.Name = string(p[:n])
	p = p[n:]
	dt, ok := codeDTypes[p[0]]
	if !ok {
		return t, nil, fmt.Errorf("%w: code %d in tensor %q", ErrDType, p[0], t.Name)
	}
	t.DType = dt
	rank := int(p[1])
	p = p[2:]
	if rank > MaxRank {
		return t, nil, fmt.Errorf("%w: tensor %q has rank %d, at most %d allowed", ErrFrame, t.Name, rank, MaxRank)
	}
	if len(p) < 4*rank+8 {
		return t, nil, fmt.Errorf("%w: tensor %q truncated in its shape", ErrFrame, t.Name)
	}
	t.Shape = make([]int, rank)
	for i := range rank {
		t.Shape[i] = int(binary.LittleEndian.Uint32(p[4*i:]))
	}
	p = p[4*rank:]
	dataLen := binary.LittleEndian.Uint64(p)
	p = p[8:]
	want := runtime.ByteSize(dt, t.Shape)
	if want < 0 || dataLen != uint64(want) {
		return t, nil, fmt.Errorf("%w: tensor %q declares %d data bytes, shape %v of %s needs %d", ErrSize, t.Name, dataLen, t.Shape, dt, want)
	}
	if uint64(len(p)) < dataLen {
		return t, nil, fmt.Errorf("%w: tensor %q has %d of its %d data bytes", ErrFrame, t.Name, len(p), dataLen)
	}
	t.Data = p[:dataLen:dataLen]
	return t, p[dataLen:], nil
}

// AppendFrame encodes f after dst.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if len(f.Tensors) > MaxTensors {
		return dst, fmt.Errorf("%w: %d tensors, at most %d allowed", ErrFrame, len(f.Tensors), MaxTensors)
	}
	if f.Flags&^knownFlags != 0 {
		return dst, fmt.Errorf("%w: unknown flags %#x", ErrFrame, f.Flags)
	}
	dst = append(dst, Magic...)
	dst = append(dst, f.Flags, 0)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(f.Tensors)))
	for _, t := range f.Tensors {
		code, ok := dtypeCodes[t.DType]
		if !ok {
			return dst, fmt.Errorf("%w: tensor %q has dtype %s", ErrDType, t.Name, t.DType)
		}
		if len(t.Name) > MaxName || len(t.Shape) > MaxRank {
			return dst, fmt.Errorf("%w: tensor %q: name or rank too long", ErrFrame, t.Name)
		}
		want := runtime.ByteSize(t.DType, t.Shape)
		if want != len(t.Data) {
			return dst, fmt.Errorf("%w: tensor %q has %d bytes, shape %v of %s needs %d", ErrSize, t.Name, len(t.Data), t.Shape, t.DType, want)
		}
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(t.Name)))
		dst = append(dst, t.Name...)
		dst = append(dst, code, uint8(len(t.Shape)))
		for _, d := range t.Shape {
			if d < 0 || uint64(d) > 0xffffffff {
				return dst, fmt.Errorf("%w: tensor %q has dimension %d", ErrFrame, t.Name, d)
			}
			dst = binary.LittleEndian.AppendUint32(dst, uint32(d))
		}
		dst = binary.LittleEndian.AppendUint64(dst, uint64(len(t.Data)))
		dst = append(dst, t.Data...)
	}
	return dst, nil
}
