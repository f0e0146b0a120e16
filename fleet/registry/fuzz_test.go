package registry

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzPublishMetadata feeds arbitrary bytes to what handles a publisher's
// metadata: the JSON decoder and the validation behind it. It must never
// panic, and every refusal must be a *FieldError naming a field.
func FuzzPublishMetadata(f *testing.F) {
	a := digest([]byte("a"))
	f.Add([]byte(`{"version":"1.0.0","variants":[{"format":"tflite","precision":"int8","backend":"tflite","artifact":{"sha256":"` + a + `","size":1}}]}`))
	f.Add([]byte(`{"version":"v2.0.0-rc.1","lineage":{"source_commit":"abcdef0","metrics":{"top1":0.9}},"variants":[{"id":"x","format":"onnx","precision":"fp32","backend":"onnxruntime","profiles":["raspberry-pi-4"],"min_agent_version":">= 0.3.0","artifact":{"sha256":"` + a + `","size":1},"self_test":{"inputs":[{"sha256":"` + a + `","size":1}],"tolerance":0.5}}]}`))
	f.Add([]byte(`{"version":"1.0.0+meta","variants":[]}`))
	f.Add([]byte(`{"version":"1.0.0","variants":[{"min_agent_version":">= 1.0, <"}]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var pr PublishRequest
		if err := decodeJSON(bytes.NewReader(b), &pr); err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "metadata" {
				t.Fatalf("decode error without the metadata field: %v", err)
			}
			return
		}
		ver, specs, err := normalize("m", pr)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal is not a field error: %v", err)
			}
			return
		}
		if _, err := ParseVersion(ver); err != nil {
			t.Fatalf("accepted version %q does not parse again: %v", ver, err)
		}
		for _, s := range specs {
			if _, err := manifestFor("m", ver, pr.Lineage, s).Canonical(); err != nil {
				t.Fatalf("accepted variant %+v has no canonical manifest: %v", s, err)
			}
		}
	})
}
