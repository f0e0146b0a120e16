package serve

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// simModel stands in for compute in the scheduling tests only: a run takes
// base + perRow×rows of wall time (a simulation of compute, not a mock of a
// backend) and computes y = x·2 + add, so outputs tell which version ran.
// It records misuse that serve must never cause: runs on a closed model and
// closing a model that is running.
type simModel struct {
	in, out      []runtime.TensorInfo
	base, perRow time.Duration
	add          float32
	batchOne     int // MaxBatch reported when dim 0 is a fixed 1; 0: none
	failBatch    bool

	closed           atomic.Bool
	runs             atomic.Int64
	rows             atomic.Int64
	active           atomic.Int64
	runsAfterClose   atomic.Int64
	closedWhileBusy  atomic.Int64
	sessionsOpen     atomic.Int64
	maxActiveObserve atomic.Int64
}

func newSim(add float32, base time.Duration) *simModel {
	return &simModel{
		in:   []runtime.TensorInfo{{Name: "x", DType: runtime.Float32, Shape: []int{-1, 4}}},
		out:  []runtime.TensorInfo{{Name: "y", DType: runtime.Float32, Shape: []int{-1, 4}}},
		base: base, add: add,
	}
}

func (m *simModel) Inputs() []runtime.TensorInfo  { return m.in }
func (m *simModel) Outputs() []runtime.TensorInfo { return m.out }
func (m *simModel) NewSession() (runtime.Session, error) {
	if m.closed.Load() {
		return nil, runtime.ErrClosed
	}
	m.sessionsOpen.Add(1)
	return &simSession{m: m}, nil
}
func (m *simModel) Close() error {
	if m.active.Load() != 0 {
		m.closedWhileBusy.Add(1)
	}
	m.closed.Store(true)
	return nil
}

type simBatchOne struct{ *simModel }

func (m simBatchOne) MaxBatch() int { return m.batchOne }

type simSession struct {
	m      *simModel
	closed bool
}

func (s *simSession) Close() error {
	if !s.closed {
		s.closed = true
		s.m.sessionsOpen.Add(-1)
	}
	return nil
}

func (s *simSession) Run(ctx context.Context, inputs, outputs []runtime.Tensor) error {
	m := s.m
	if m.closed.Load() {
		m.runsAfterClose.Add(1)
		return runtime.ErrClosed
	}
	n := m.active.Add(1)
	defer m.active.Add(-1)
	for {
		old := m.maxActiveObserve.Load()
		if n <= old || m.maxActiveObserve.CompareAndSwap(old, n) {
			break
		}
	}
	if len(inputs) != 1 || len(outputs) != 1 {
		return fmt.Errorf("%w: want 1 input and 1 output", runtime.ErrInput)
	}
	x := inputs[0]
	info := m.in[0]
	if m.batchOne > 0 && len(x.Shape) == 2 && x.Shape[0] <= m.batchOne {
		info.Shape = []int{x.Shape[0], 4}
	}
	if err := runtime.CheckInput(info, x); err != nil {
		return err
	}
	rows := x.Shape[0]
	if m.failBatch && rows > 1 {
		return fmt.Errorf("%w: batch %d", runtime.ErrUnsupported, rows)
	}
	t := time.NewTimer(m.base + time.Duration(rows)*m.perRow)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
	out := make([]byte, len(x.Data))
	switch x.DType {
	case runtime.Float32:
		for i := 0; i < len(out); i += 4 {
			v := math.Float32frombits(binary.LittleEndian.Uint32(x.Data[i:]))
			binary.LittleEndian.PutUint32(out[i:], math.Float32bits(v*2+m.add))
		}
	default: // integer models are identity
		copy(out, x.Data)
	}
	outputs[0] = runtime.Tensor{DType: m.out[0].DType, Shape: append([]int(nil), x.Shape...), Data: out}
	m.runs.Add(1)
	m.rows.Add(int64(rows))
	return nil
}

func f32(vals ...float32) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func fromF32(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
