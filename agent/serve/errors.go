package serve

import (
	"errors"
	"fmt"
)

var (
	// ErrUnknownModel is returned when no model of that name is loaded.
	ErrUnknownModel = errors.New("unknown model")
	// ErrQueueFull is returned when the model's queue is full; retry later.
	ErrQueueFull = errors.New("model queue is full")
	// ErrDeadlineUnmeetable is returned at admission when the current queue
	// wait and compute time estimate exceed the request's deadline.
	ErrDeadlineUnmeetable = errors.New("deadline cannot be met at the current load")
	// ErrExpired is returned when a request's deadline passed while it was
	// queued; it was dropped without running.
	ErrExpired = errors.New("deadline passed while queued")
	// ErrClosed is returned when the server is shutting down or the model
	// was removed while the request waited.
	ErrClosed = errors.New("inference server closed")
	// ErrBadInput is returned when a request's inputs do not match the
	// model: missing or unknown names, dtype, shape or data size. The
	// message names the input and what was expected.
	ErrBadInput = errors.New("bad inference input")
	// ErrBadRequest is returned when a request cannot be parsed: malformed
	// JSON or frame, bad deadline, oversized body.
	ErrBadRequest = errors.New("bad inference request")
	// ErrRun is returned when the backend failed to run a valid request.
	ErrRun = errors.New("inference failed")
	// ErrBadModel is returned by Swap when a model cannot be served: no
	// inputs, a session that cannot be opened, an empty name or version.
	ErrBadModel = errors.New("model cannot be served")
)

// Kinds of ErrBadInput; each error wraps both, so callers can test for
// either the general or the specific problem.
var (
	// ErrInputName is returned for a missing, unknown or repeated input.
	ErrInputName = errors.New("input name mismatch")
	// ErrInputDType is returned when an input has the wrong dtype.
	ErrInputDType = errors.New("input dtype mismatch")
	// ErrInputShape is returned when an input has the wrong shape.
	ErrInputShape = errors.New("input shape mismatch")
	// ErrInputSize is returned when an input's data does not fill its shape.
	ErrInputSize = errors.New("input size mismatch")
	// ErrQuantize is returned when quantize was asked for an input that
	// cannot be quantized that way.
	ErrQuantize = errors.New("cannot quantize input")
)

// Unexported markers; each wraps an exported sentinel above.
var (
	// errTooLarge marks an oversized body (413).
	errTooLarge = fmt.Errorf("%w: body too large", ErrBadRequest)
	// errJSON marks a malformed JSON body.
	errJSON = fmt.Errorf("%w: malformed JSON", ErrBadRequest)
	// errBatchShape: the backend answered a batch with outputs whose first
	// dimension is not the batch, so it does not really batch.
	errBatchShape = errors.New("backend output does not follow the batch dimension")
	// errMixedShapes: the requests cannot be stacked (their dynamic trailing
	// dimensions differ); they run one by one without disabling batching.
	errMixedShapes = errors.New("requests differ in their trailing dimensions")
)
