package serve

import (
	"errors"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// FuzzRequestJSON feeds arbitrary JSON bodies through the parsing and
// checking a request goes through before it is queued: nothing may panic,
// and every refusal must be one of the documented bad-request errors.
func FuzzRequestJSON(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"x","dtype":"float32","shape":[1,4],"data":[1,2,3,4]}]}`))
	f.Add([]byte(`{"inputs":[{"name":"q","dtype":"float32","shape":[1,4],"data":[1,2,3,4]}],"quantize":true}`))
	f.Add([]byte(`{"inputs":[{"dtype":"int8","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}],"deadline_ms":5}`))
	f.Add([]byte(`{"inputs":[{"name":"x","dtype":"float32","shape":[1000000000,1000000000],"data":[1]}]}`))
	f.Add([]byte(`{"inputs":[{"name":"x","dtype":"bool","shape":[],"data":[true]}]}`))
	f.Add([]byte(`{"inputs":[`))
	q := &runtime.Quantization{Scale: []float32{0.5, 0.25, 1, 2}, ZeroPoint: []int64{0, 1, 2, 3}, Axis: 1}
	models := []ModelInfo{
		{Name: "f", Inputs: []runtime.TensorInfo{{Name: "x", DType: runtime.Float32, Shape: []int{-1, 4}}}},
		{Name: "q", Inputs: []runtime.TensorInfo{{Name: "q", DType: runtime.Int8, Shape: []int{1, 4}, Quant: q}}},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var p parsed
		if err := p.readJSON(body); err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrBadInput) {
				t.Fatalf("undocumented error: %v", err)
			}
			return
		}
		for _, m := range models {
			inputs, err := orderInputs(m, p.tensors)
			if err != nil {
				continue
			}
			v := &version{model: m.Name, name: "1", inputs: m.Inputs}
			if _, err := prepareInputs(v, inputs, p.quantize); err != nil && !errors.Is(err, ErrBadInput) {
				t.Fatalf("undocumented error: %v", err)
			}
		}
	})
}
