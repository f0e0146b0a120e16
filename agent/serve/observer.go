package serve

import "time"

// Outcome is how one request ended, as a stable word used in metrics
// labels, in Observer events and in the API's error "kind".
type Outcome string

// Outcomes. Rejected ones (QueueFull, DeadlineUnmeetable) never entered the
// queue; Expired ones entered and were dropped before they ran.
const (
	OutcomeOK                 Outcome = "ok"
	OutcomeQueueFull          Outcome = "queue_full"
	OutcomeDeadlineUnmeetable Outcome = "deadline_unmeetable"
	OutcomeExpired            Outcome = "expired"
	OutcomeBadInput           Outcome = "bad_input"
	OutcomeCanceled           Outcome = "canceled"
	OutcomeRunError           Outcome = "run_error"
	OutcomeUnavailable        Outcome = "unavailable"
)

// Rejected reports whether the request was turned away at admission.
func (o Outcome) Rejected() bool {
	return o == OutcomeQueueFull || o == OutcomeDeadlineUnmeetable
}

// Event describes one finished request for an Observer.
type Event struct {
	// Model is the model name the request asked for; Version is the version
	// that ran it, or the active version when it did not run.
	Model, Version string
	// ServedBy is the lighter variant that ran it under overload, or "".
	ServedBy string
	Outcome  Outcome
	// Queue is the time spent queued; Compute the time of the run it was
	// part of (zero when it did not run).
	Queue, Compute time.Duration
	// Batch is the number of requests in that run (0 when it did not run).
	Batch int
}

// Observer receives an Event for every inference request, successful or
// not, once its outcome is known. The agent wires it to agent/telemetry so
// the fleet's rollout gates see the same figures as /metrics.
//
// Observe is called on the request's path (by the worker that ran it or by
// the caller's goroutine for rejects), possibly from many goroutines at once:
// it must be safe for concurrent use and must not block.
type Observer interface {
	Observe(Event)
}
