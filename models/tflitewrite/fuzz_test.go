package tflitewrite

import (
	"errors"
	"testing"
)

// FuzzBuild drives the builder with arbitrary arguments, read from the fuzz
// input as a little program: whatever the arguments, building must not
// panic, and Encode must give either ErrInvalid or a file that parses.
func FuzzBuild(f *testing.F) {
	f.Add(validProgram)
	f.Add([]byte{0, 9, 2, 1, 8, 1, 0, 3, 2, 4})
	f.Add([]byte{0, 0, 4, 1, 6, 6, 2, 2, 3, 3, 3, 1, 1, 5, 1, 1, 0})
	f.Add([]byte{0, 9, 4, 1, 5, 5, 3, 4, 1, 2, 2, 2, 7, 9, 1, 8, 0, 11, 12, 13})
	f.Fuzz(func(t *testing.T, prog []byte) {
		g := fuzzGraph(prog)
		data, err := g.Encode()
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Encode error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if _, err := parseModel(data); err != nil {
			t.Fatalf("encoded graph does not parse: %v", err)
		}
	})
}

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
	shape := func() []int {
		s := make([]int, next()%5)
		for i := range s {
			s[i] = next()%9 - 1
		}
		return s
	}
	types := []TensorType{Float32, Int8, Uint8, Int32, TensorType(5)}
	quantFor := func(t TensorType, s []int) *Quant {
		switch next() % 4 {
		case 0:
			return nil
		case 1:
			return PerTensor(float32(next())/64, int64(next()-128))
		case 2:
			n := 1
			if len(s) > 0 {
				n = max(s[0], 0)
			}
			q := &Quant{Scale: make([]float32, n), ZeroPoint: make([]int64, n)}
			for i := range q.Scale {
				q.Scale[i] = float32(next()+1) / 128
			}
			return q
		}
		return &Quant{Scale: []float32{1}, ZeroPoint: []int64{0}, Axis: next() - 2}
	}
	g := New("fuzz")
	var ts []Tensor
	pick := func() Tensor {
		if len(ts) == 0 || next()%8 == 0 {
			return Tensor(next() - 3)
		}
		return ts[next()%len(ts)]
	}
	name := func() string { return string(rune('a' + len(ts) + next()%3)) }
	for n := 0; pos < len(prog) && n < 32; n++ {
		var out Tensor
		switch next() % 16 {
		case 0:
			typ := types[next()%len(types)]
			s := shape()
			out = g.Input(name(), typ, s, quantFor(typ, s))
		case 1:
			typ := types[next()%len(types)]
			s := shape()
			data := make([]byte, next()*typ.size())
			out = g.Const(name(), typ, s, quantFor(typ, s), data)
		case 2:
			out = g.FullyConnected(name(), pick(), pick(), pick(), FullyConnectedOptions{Activation: Activation(next() % 5), KeepNumDims: next()%2 == 0, Out: quantFor(Int8, nil)})
		case 3:
			out = g.Conv2D(name(), pick(), pick(), pick(), Conv2DOptions{Padding: Padding(next() % 3), StrideH: next() - 1, StrideW: next() % 3, DilationH: next() % 3, Out: quantFor(Int8, nil)})
		case 4:
			out = g.DepthwiseConv2D(name(), pick(), pick(), NoTensor, DepthwiseConv2DOptions{DepthMultiplier: next() - 1, Out: quantFor(Int8, nil)})
		case 5:
			out = g.AveragePool2D(name(), pick(), Pool2DOptions{FilterH: next() % 4, FilterW: next() % 4, StrideH: next() % 3})
		case 6:
			out = g.MaxPool2D(name(), pick(), Pool2DOptions{FilterH: next() % 4, FilterW: next() % 4, Out: quantFor(Int8, nil)})
		case 7:
			out = g.Reshape(name(), pick(), shape())
		case 8:
			out = g.Softmax(name(), pick(), float32(next())/16, quantFor(Int8, nil))
		case 9:
			out = g.Add(name(), pick(), pick(), Activation(next()%4), quantFor(Int8, nil))
		case 10:
			out = g.Mean(name(), pick(), []int{next() - 4, next() % 3}, next()%2 == 0, quantFor(Int8, nil))
		case 11:
			out = g.Quantize(name(), pick(), types[next()%len(types)], quantFor(Int8, nil))
		case 12:
			out = g.Dequantize(name(), pick())
		case 13:
			out = g.Logistic(name(), pick(), quantFor(Int8, nil))
		case 14:
			out = g.Relu(name(), pick(), quantFor(Int8, nil))
		case 15:
			g.Output(pick())
			continue
		}
		if out >= 0 {
			ts = append(ts, out)
		}
	}
	return g
}

// validProgram is a seed that builds a valid graph: a float input [1, 4],
// a RELU, the RELU as output.
var validProgram = []byte{0, 0, 2, 2, 5, 0, 0, 14, 0, 1, 0, 0, 15, 1, 1}

func TestFuzzSeedEncodes(t *testing.T) {
	data, err := fuzzGraph(validProgram).Encode()
	if err != nil {
		t.Fatalf("the valid seed does not build: %v", err)
	}
	m, err := parseModel(data)
	if err != nil || len(m.Ops) != 1 || opNames[m.Ops[0].Code] != "RELU" {
		t.Fatalf("the valid seed parses to %+v, %v", m.Ops, err)
	}
}
