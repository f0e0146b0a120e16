package tflite

import (
	"fmt"
	"slices"
	"unsafe"
)

// arenaAlign keeps every buffer on a 16-byte boundary so kernels can view
// any buffer as []int32 or []float32 and vector code can load it aligned.
const arenaAlign = 16

// plan places every tensor computed at run time, and every kernel scratch
// buffer, in one arena. A buffer lives from the operator that writes it
// (or the start, for graph inputs) to the last operator that reads it (or
// the end, for graph outputs); buffers whose lives do not overlap share
// memory. Placement is greedy, largest first, at the lowest offset that
// fits, like TFLite Micro's GreedyMemoryPlanner.
func (m *Model) plan(scratchOp []int) error {
	g := m.g
	nt := len(g.tensors)
	n := len(m.sizes)
	first := make([]int, n)
	last := make([]int, n)
	for i := range first {
		first[i], last[i] = -2, -2
	}
	end := len(g.ops)
	for _, idx := range g.inputs {
		first[idx], last[idx] = -1, max(last[idx], -1)
	}
	for i := range g.ops {
		op := &g.ops[i]
		for _, idx := range op.inputs {
			if idx < 0 || g.tensors[idx].data != nil {
				continue
			}
			if first[idx] == -2 {
				t := &g.tensors[idx]
				return fmt.Errorf("%w: operator %d (%s) reads tensor %d (%q), which nothing writes", errBadModel, i, opName(op.code, op.custom), idx, t.name)
			}
			last[idx] = max(last[idx], i)
		}
		for _, idx := range op.outputs {
			if first[idx] == -2 {
				first[idx] = i
			}
			last[idx] = max(last[idx], i)
		}
	}
	for _, idx := range g.outputs {
		if g.tensors[idx].data != nil {
			continue
		}
		if first[idx] == -2 {
			return fmt.Errorf("%w: graph output %d (%q) is never written", errBadModel, idx, g.tensors[idx].name)
		}
		last[idx] = end
	}
	for j, op := range scratchOp {
		first[nt+j], last[nt+j] = op, op
	}

	order := make([]int, 0, n)
	for i := range n {
		m.place[i] = -1
		if first[i] != -2 && (i >= nt || g.tensors[i].data == nil) {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return m.sizes[b] - m.sizes[a] })
	type placed struct{ off, size, first, last int }
	var done []placed
	total := 0
	for _, i := range order {
		size := (m.sizes[i] + arenaAlign - 1) &^ (arenaAlign - 1)
		if size < 0 {
			return fmt.Errorf("%w: buffer %d is too large", errBadModel, i)
		}
		// Buffers already placed that live at the same time, by offset.
		var live []placed
		for _, p := range done {
			if p.first <= last[i] && first[i] <= p.last {
				live = append(live, p)
			}
		}
		slices.SortFunc(live, func(a, b placed) int { return a.off - b.off })
		off := 0
		for _, p := range live {
			if off+size <= p.off {
				break
			}
			off = max(off, p.off+p.size)
		}
		done = append(done, placed{off, size, first[i], last[i]})
		m.place[i] = off
		if off+size < off {
			return fmt.Errorf("%w: arena size overflows", errBadModel)
		}
		total = max(total, off+size)
	}
	m.arenaSize = total
	return nil
}

// Views of byte buffers as typed slices. Arena buffers and constant data
// are 8-byte aligned (see aligned and NewSession), so these are safe.

func unsafeBytes(w []uint64) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*8)
}

func asI8(b []byte) []int8 {
	return unsafe.Slice((*int8)(unsafe.Pointer(unsafe.SliceData(b))), len(b))
}

func asI16(b []byte) []int16 {
	return unsafe.Slice((*int16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}

func asI32(b []byte) []int32 {
	return unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

func asI64(b []byte) []int64 {
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

func asF32(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}
