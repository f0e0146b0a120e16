package tflite

import (
	"fmt"
	"math"

	flatbuffers "github.com/google/flatbuffers/go"
)

// The flatbuffer accessors below are written by hand from schema.fbs rather
// than generated: generated readers trust every offset in the file, and a
// model comes from the network. Every position is checked against the
// buffer before flatbuffers.Table reads it, so a hostile file yields an
// error, not a panic.

// fbuf is a whole flatbuffer file.
type fbuf struct {
	b []byte
}

// table is a validated flatbuffer table: its vtable and object lie inside
// the buffer, and every field offset the vtable holds lies inside the
// object.
type table struct {
	t      flatbuffers.Table
	vtLen  int // vtable length in bytes
	objLen int // object length in bytes
	what   string
}

// Vectors cannot be longer than the file that holds them, which bounds every
// allocation the reader makes by the file size.
func (f *fbuf) errf(what, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errBadModel, what, fmt.Sprintf(format, args...))
}

// tableAt validates the table whose start is at pos.
func (f *fbuf) tableAt(pos int, what string) (table, error) {
	if pos < 0 || pos+4 > len(f.b) {
		return table{}, f.errf(what, "table offset %d outside the file (%d bytes)", pos, len(f.b))
	}
	soff := int(int32(le32(f.b[pos:])))
	vt := pos - soff
	if vt < 0 || vt+4 > len(f.b) {
		return table{}, f.errf(what, "vtable offset %d outside the file", vt)
	}
	vtLen := int(le16(f.b[vt:]))
	objLen := int(le16(f.b[vt+2:]))
	if vtLen < 4 || vtLen%2 != 0 || vt+vtLen > len(f.b) {
		return table{}, f.errf(what, "vtable at %d has bad length %d", vt, vtLen)
	}
	if objLen < 4 || pos+objLen > len(f.b) {
		return table{}, f.errf(what, "table at %d has bad size %d", pos, objLen)
	}
	for i := 4; i < vtLen; i += 2 {
		off := int(le16(f.b[vt+i:]))
		if off != 0 && (off < 4 || off >= objLen) {
			return table{}, f.errf(what, "field %d offset %d beyond table size %d", (i-4)/2, off, objLen)
		}
	}
	return table{t: flatbuffers.Table{Bytes: f.b, Pos: flatbuffers.UOffsetT(pos)}, vtLen: vtLen, objLen: objLen, what: what}, nil
}

// field returns the offset of a field inside the table, 0 when absent.
func (t *table) field(slot int) int {
	vo := 4 + 2*slot
	if vo+2 > t.vtLen {
		return 0
	}
	return int(t.t.Offset(flatbuffers.VOffsetT(vo)))
}

// scalar checks that size bytes at field slot fit in the object and returns
// the absolute position, or -1 when the field is absent.
func (f *fbuf) scalar(t *table, slot, size int) (int, error) {
	off := t.field(slot)
	if off == 0 {
		return -1, nil
	}
	if off+size > t.objLen {
		return 0, f.errf(t.what, "field %d (%d bytes) overruns the table", slot, size)
	}
	return int(t.t.Pos) + off, nil
}

func (f *fbuf) u8(t *table, slot int, def uint8) (uint8, error) {
	p, err := f.scalar(t, slot, 1)
	if err != nil || p < 0 {
		return def, err
	}
	return f.b[p], nil
}

func (f *fbuf) i32(t *table, slot int, def int32) (int32, error) {
	p, err := f.scalar(t, slot, 4)
	if err != nil || p < 0 {
		return def, err
	}
	return int32(le32(f.b[p:])), nil
}

func (f *fbuf) u64(t *table, slot int, def uint64) (uint64, error) {
	p, err := f.scalar(t, slot, 8)
	if err != nil || p < 0 {
		return def, err
	}
	return le64(f.b[p:]), nil
}

func (f *fbuf) f32(t *table, slot int, def float32) (float32, error) {
	p, err := f.scalar(t, slot, 4)
	if err != nil || p < 0 {
		return def, err
	}
	return math.Float32frombits(le32(f.b[p:])), nil
}

// indirect follows the uoffset stored at field slot; -1 when absent.
func (f *fbuf) indirect(t *table, slot int) (int, error) {
	p, err := f.scalar(t, slot, 4)
	if err != nil || p < 0 {
		return -1, err
	}
	target := p + int(le32(f.b[p:]))
	if target < 0 || target >= len(f.b) {
		return 0, f.errf(t.what, "field %d points to %d, outside the file", slot, target)
	}
	return target, nil
}

// subtable returns the table referenced by field slot; ok is false when
// the field is absent.
func (f *fbuf) subtable(t *table, slot int, what string) (table, bool, error) {
	p, err := f.indirect(t, slot)
	if err != nil || p < 0 {
		return table{}, false, err
	}
	st, err := f.tableAt(p, what)
	return st, err == nil, err
}

// vector returns the start of the elements and the element count of the
// vector at field slot, with every element inside the file.
func (f *fbuf) vector(t *table, slot, elemSize int, what string) (start, n int, err error) {
	p, err := f.indirect(t, slot)
	if err != nil || p < 0 {
		return 0, 0, err
	}
	if p+4 > len(f.b) {
		return 0, 0, f.errf(what, "vector header at %d outside the file", p)
	}
	n64 := uint64(le32(f.b[p:]))
	if n64*uint64(elemSize) > uint64(len(f.b)-p-4) {
		return 0, 0, f.errf(what, "vector of %d elements of %d bytes overruns the file", n64, elemSize)
	}
	return p + 4, int(n64), nil
}

// tables returns the tables of a vector of tables.
func (f *fbuf) tables(t *table, slot int, what string) ([]table, error) {
	start, n, err := f.vector(t, slot, 4, what)
	if err != nil {
		return nil, err
	}
	out := make([]table, n)
	for i := range n {
		p := start + 4*i
		target := p + int(le32(f.b[p:]))
		w := fmt.Sprintf("%s[%d]", what, i)
		if out[i], err = f.tableAt(target, w); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ints reads a vector of int32.
func (f *fbuf) ints(t *table, slot int, what string) ([]int32, error) {
	start, n, err := f.vector(t, slot, 4, what)
	if err != nil || n == 0 {
		return nil, err
	}
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(le32(f.b[start+4*i:]))
	}
	return out, nil
}

func (f *fbuf) bytes(t *table, slot int, what string) ([]byte, error) {
	start, n, err := f.vector(t, slot, 1, what)
	if err != nil {
		return nil, err
	}
	return f.b[start : start+n : start+n], nil
}

func (f *fbuf) str(t *table, slot int, what string) (string, error) {
	b, err := f.bytes(t, slot, what)
	return string(b), err
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }
