// Package wire is the encoding of the agent's local inference API, shared by
// the server (agent/serve) and its Go client (agent/serve/client): the JSON
// request and response bodies, and the binary tensor frame for payloads too
// big for JSON. It is pure encoding, with no transport, so both sides agree
// byte for byte and the parsers can be fuzzed on their own.
//
// docs/inference-api.md describes the formats for callers in other languages.
package wire

import (
	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Content types of the two request and response forms.
const (
	ContentTypeJSON   = "application/json"
	ContentTypeBinary = "application/vnd.edgefleet.tensors"
)

// HTTP headers the API reads and writes.
const (
	// HeaderDeadline is the request's deadline in milliseconds from its
	// arrival; the JSON form may use the deadline_ms field instead.
	HeaderDeadline = "X-Deadline-Ms"
	// HeaderVersion names the model version that served a response.
	HeaderVersion = "X-Model-Version"
	// HeaderQueueMs and HeaderComputeMs are the time the request waited in
	// the queue and the time its (batched) run took, in milliseconds.
	HeaderQueueMs   = "X-Queue-Ms"
	HeaderComputeMs = "X-Compute-Ms"
	// HeaderBatch is the number of requests run together with this one
	// (1 when not batched).
	HeaderBatch = "X-Batch-Size"
	// HeaderServedBy names the model that answered when the request was
	// routed to a lighter variant under overload; absent otherwise.
	HeaderServedBy = "X-Served-By"
)

// Tensor is a named tensor as the API carries it.
type Tensor struct {
	Name  string
	DType runtime.DType
	Shape []int
	Data  []byte
}

// Limits on what one request may carry. They bound the work a caller can
// cause before the model's own shapes are checked.
const (
	MaxTensors = 64
	MaxRank    = 8
	MaxName    = 256
)

// JSONTensor is one tensor in a JSON body. Data holds the elements as a flat
// array of numbers in row-major order (true/false or 0/1 for bool).
type JSONTensor struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	// Data is kept raw so integers decode exactly, whatever their size.
	Data RawNumbers `json:"data"`
	// Quantization is set on outputs that are quantized (and not
	// dequantized); inputs ignore it.
	Quantization *Quantization `json:"quantization,omitempty"`
}

// JSONRequest is the body of a JSON inference request.
type JSONRequest struct {
	Inputs []JSONTensor `json:"inputs"`
	// DeadlineMs overrides the server's default deadline; 0 keeps it.
	DeadlineMs int64 `json:"deadline_ms,omitempty"`
	// Quantize asks the server to quantize float32 inputs with the model's
	// quantization parameters for inputs that are quantized.
	Quantize bool `json:"quantize,omitempty"`
	// Dequantize asks for quantized outputs as float32.
	Dequantize bool `json:"dequantize,omitempty"`
}

// Timing reports where a request's time went on the server.
type Timing struct {
	QueueMs   float64 `json:"queue_ms"`
	ComputeMs float64 `json:"compute_ms"`
	BatchSize int     `json:"batch_size"`
}

// JSONResponse is the body of a successful JSON inference response.
type JSONResponse struct {
	Model   string       `json:"model"`
	Version string       `json:"version"`
	Outputs []JSONTensor `json:"outputs"`
	Timing  Timing       `json:"timing"`
	// ServedBy is set when a lighter variant answered instead of Model.
	ServedBy string `json:"served_by,omitempty"`
}

// Error is the body of every error response.
type Error struct {
	// Kind is a stable machine-readable word, e.g. "bad_shape",
	// "unknown_model", "queue_full"; see docs/inference-api.md.
	Kind string `json:"kind"`
	// Message says what was wrong in words a user can act on.
	Message string `json:"error"`
	// RetryAfterMs is set on 429 and 503 responses.
	RetryAfterMs int64 `json:"retry_after_ms,omitempty"`
}

// Quantization mirrors runtime.Quantization in JSON.
type Quantization struct {
	Scale     []float32 `json:"scale"`
	ZeroPoint []int64   `json:"zero_point"`
	Axis      int       `json:"axis"`
}

// TensorSpec describes a model input or output in the model list.
type TensorSpec struct {
	Name         string        `json:"name"`
	DType        string        `json:"dtype"`
	Shape        []int         `json:"shape"`
	Quantization *Quantization `json:"quantization,omitempty"`
}

// ModelSpec is one entry of GET /v1/models.
type ModelSpec struct {
	Name    string       `json:"name"`
	Version string       `json:"version"`
	Inputs  []TensorSpec `json:"inputs"`
	Outputs []TensorSpec `json:"outputs"`
	// MaxBatch is the largest batch the server forms for this model; 1
	// means requests run one at a time on a pool of sessions.
	MaxBatch int `json:"max_batch"`
	// Variant names the lighter model used under overload, if any.
	Variant string `json:"variant,omitempty"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Models []ModelSpec `json:"models"`
}

// QuantizationOf converts runtime quantization parameters for JSON; nil
// stays nil.
func QuantizationOf(q *runtime.Quantization) *Quantization {
	if q == nil {
		return nil
	}
	return &Quantization{Scale: q.Scale, ZeroPoint: q.ZeroPoint, Axis: q.Axis}
}

// SpecOf describes a runtime tensor for the model list.
func SpecOf(ti runtime.TensorInfo) TensorSpec {
	return TensorSpec{Name: ti.Name, DType: ti.DType.String(), Shape: ti.Shape, Quantization: QuantizationOf(ti.Quant)}
}
