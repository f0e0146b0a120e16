package onnxwrite

import (
	"errors"
	"testing"
)

// FuzzBuild drives the builder with arbitrary arguments read from the fuzz
// input: no panic, and Encode gives ErrInvalid or bytes that decode.
func FuzzBuild(f *testing.F) {
	f.Add(validProgram)
	f.Add([]byte{0, 1, 2, 2, 3, 2, 1, 2, 1, 9, 1, 0, 4, 5})
	f.Fuzz(func(t *testing.T, prog []byte) {
		b, err := fuzzGraph(prog).Encode()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode error %v does not wrap ErrInvalid", err)
			}
			return
		}
		decode(t, b)
	})
}

// validProgram builds: input "a" float32 [2, 3], Relu "a" → "c", output "c".
var validProgram = []byte{1, 0, 0, 0, 2, 3, 4, 2, 0, 0, 0, 1, 2, 1, 0, 3, 2, 0, 0}

// fuzzGraph builds a graph from a program: one byte picks a builder call,
// the next ones its arguments.
func fuzzGraph(prog []byte) *Graph {
	pos := 0
	next := func() int {
		if pos >= len(prog) {
			return 0
		}
		pos++
		return int(prog[pos-1])
	}
	names := []string{"a", "b", "c", "d", ""}
	name := func() string { return names[next()%len(names)] }
	types := []DType{Float32, Int8, Uint8, Int32, Int64, DType(9)}
	shape := func() []int {
		s := make([]int, next()%4)
		for i := range s {
			s[i] = next()%6 - 1
		}
		return s
	}
	ops := []string{"Relu", "Gemm", "Softmax", ""}
	attrs := func() []Attribute {
		var a []Attribute
		for range next() % 3 {
			switch next() % 5 {
			case 0:
				a = append(a, Int(name(), int64(next())))
			case 1:
				a = append(a, Float(name(), float32(next())))
			case 2:
				a = append(a, Ints(name(), int64(next()), -1))
			case 3:
				a = append(a, String(name(), name()))
			default:
				a = append(a, Attribute{})
			}
		}
		return a
	}
	g := New("fuzz", 13+next()%7-1)
	for n := 0; pos < len(prog) && n < 32; n++ {
		switch next() % 4 {
		case 0:
			g.Input(name(), types[next()%len(types)], shape())
		case 1:
			typ := types[next()%len(types)]
			g.Initializer(name(), typ, shape(), make([]byte, next()))
		case 2:
			g.Node(ops[next()%len(ops)], []string{name(), name()}[:next()%3], []string{name()}[:next()%2], attrs()...)
		case 3:
			g.Output(name(), types[next()%len(types)], shape())
		}
	}
	return g
}

func TestFuzzSeedEncodes(t *testing.T) {
	b, err := fuzzGraph(validProgram).Encode()
	if err != nil {
		t.Fatalf("the valid seed does not build: %v", err)
	}
	m := decode(t, b)
	if g := m.msgs(t, modelGraph)[0]; len(g.msgs(t, graphNode)) != 1 || len(g.msgs(t, graphOutput)) != 1 {
		t.Fatalf("the valid seed decodes to %v", g)
	}
}
