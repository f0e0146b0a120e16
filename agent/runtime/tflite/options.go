package tflite

import (
	"fmt"
	"math"
)

// options reads an operator's builtin options table. Reads never fail at
// the call site: the first error is kept and reported by err, so prepare
// functions read all they need and check once.
type options struct {
	f    *fbuf
	t    table
	ok   bool
	what string
	e    error
}

func (o *options) keep(err error) {
	if err != nil && o.e == nil {
		o.e = err
	}
}

func (o *options) err() error { return o.e }

func (o *options) i32(slot int, def int32) int32 {
	if !o.ok {
		return def
	}
	v, err := o.f.i32(&o.t, slot, def)
	o.keep(err)
	return v
}

func (o *options) u8(slot int, def uint8) uint8 {
	if !o.ok {
		return def
	}
	v, err := o.f.u8(&o.t, slot, def)
	o.keep(err)
	return v
}

func (o *options) bool(slot int, def bool) bool {
	d := uint8(0)
	if def {
		d = 1
	}
	return o.u8(slot, d) != 0
}

func (o *options) f32(slot int, def float32) float32 {
	if !o.ok {
		return def
	}
	v, err := o.f.f32(&o.t, slot, def)
	o.keep(err)
	return v
}

func (o *options) ints(slot int) []int32 {
	if !o.ok {
		return nil
	}
	v, err := o.f.ints(&o.t, slot, o.what)
	o.keep(err)
	return v
}

// positive reads an int option that must be at least 1 (strides, dilations,
// filter sizes) and records an error naming it otherwise.
func (o *options) positive(slot int, def int32, name string) int {
	v := o.i32(slot, def)
	if v < 1 || v > 1<<16 {
		o.keep(fmt.Errorf("%w: %s: %s is %d, want 1..65536", errBadModel, o.what, name, v))
		return 1
	}
	return int(v)
}

func float32frombits(b uint32) float32 { return math.Float32frombits(b) }
