package onnxrt

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Small protobuf builders for hand-made models.
func msg(fs ...[]byte) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f...)
	}
	return b
}

func bytesField(num protowire.Number, v []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func varintField(num protowire.Number, v uint64) []byte {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func tensorValue(name string, elem int32, dims ...any) []byte {
	var shape []byte
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape = append(shape, bytesField(fShapeDim, varintField(fDimValue, uint64(d)))...)
		case string:
			shape = append(shape, bytesField(fShapeDim, bytesField(fDimParam, []byte(d)))...)
		case nil:
			shape = append(shape, bytesField(fShapeDim, nil)...)
		}
	}
	tt := msg(varintField(fTensorTypeElem, uint64(elem)), bytesField(fTensorTypeShape, shape))
	return msg(bytesField(fValueInfoName, []byte(name)), bytesField(fValueInfoType, bytesField(fTypeTensor, tt)))
}

func model(graph ...[]byte) []byte {
	return msg(varintField(1, 8), bytesField(fModelGraph, msg(graph...)))
}

func TestGraphIO(t *testing.T) {
	m := model(
		bytesField(fGraphInput, tensorValue("x", 1, "batch", 3, nil)),
		bytesField(fGraphInput, tensorValue("w", 1, 3, 3)),
		bytesField(fGraphInitializer, bytesField(fTensorName, []byte("w"))),
		bytesField(fGraphInput, tensorValue("sr", 7)),
		bytesField(fGraphOutput, tensorValue("y", 2, "batch", 3)),
	)
	ins, outs, err := graphIO(m)
	if err != nil {
		t.Fatal(err)
	}
	wantIn := []ioDesc{{"x", 1, []int64{-1, 3, -1}}, {"sr", 7, []int64{}}}
	wantOut := []ioDesc{{"y", 2, []int64{-1, 3}}}
	if !reflect.DeepEqual(ins, wantIn) || !reflect.DeepEqual(outs, wantOut) {
		t.Errorf("got %+v %+v, want %+v %+v", ins, outs, wantIn, wantOut)
	}

	noShape := msg(bytesField(fValueInfoName, []byte("x")), bytesField(fValueInfoType, bytesField(fTypeTensor, varintField(fTensorTypeElem, 1))))
	sequence := msg(bytesField(fValueInfoName, []byte("s")), bytesField(fValueInfoType, bytesField(4, nil)))
	for name, data := range map[string][]byte{
		"no graph":       msg(varintField(1, 8)),
		"no shape":       model(bytesField(fGraphInput, noShape)),
		"sequence":       model(bytesField(fGraphOutput, sequence)),
		"truncated":      m[:len(m)-3],
		"bad tag":        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"too many dims":  model(bytesField(fGraphInput, tensorValue("x", 1, make([]any, maxRank+1)...))),
		"two graphs":     msg(model(), model()),
		"graph not msg":  msg(varintField(fModelGraph, 1)),
		"text":           []byte("not a model at all"),
		"empty":          nil,
		"huge length":    {byte(fModelGraph<<3 | 2), 0xff, 0xff, 0xff, 0xff, 0x0f},
		"group wiretype": {byte(fModelGraph<<3 | 3)},
	} {
		if _, _, err := graphIO(data); !errors.Is(err, errNoGraphIO) {
			t.Errorf("%s: %v, want errNoGraphIO", name, err)
		}
	}
}

// FuzzGraphIO: whatever the bytes, graphIO answers or refuses; it never
// panics, and whatever it returns is bounded.
func FuzzGraphIO(f *testing.F) {
	shared := os.Getenv("EDGEFLEET_SHARED_MODELS")
	if shared == "" {
		shared = "../../../../shared/models"
	}
	for _, pattern := range []string{filepath.Join(shared, "onnx_*", "model.onnx"), "../../../models/demo/*.onnx"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil && st.Size() < 1<<20 {
				data, _ := os.ReadFile(p)
				f.Add(data)
			}
		}
	}
	f.Add(model(bytesField(fGraphInput, tensorValue("x", 1, "batch", 3, nil)), bytesField(fGraphOutput, tensorValue("y", 1, 1))))
	f.Fuzz(func(t *testing.T, data []byte) {
		ins, outs, err := graphIO(data)
		if err != nil {
			if !errors.Is(err, errNoGraphIO) {
				t.Fatalf("error %v does not wrap errNoGraphIO", err)
			}
			return
		}
		if len(ins)+len(outs) > maxGraphIO {
			t.Fatalf("%d inputs and outputs", len(ins)+len(outs))
		}
		for _, d := range append(ins, outs...) {
			if len(d.dims) > maxRank {
				t.Fatalf("%q has rank %d", d.name, len(d.dims))
			}
		}
	})
}
