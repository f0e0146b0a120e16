// Package rollout runs staged model rollouts on the fleet server: it
// targets a group of devices, resolves for each the registry variant it can
// run, sends desired deployments phase by phase at a bounded rate, and
// gates every phase on what the new version does on the devices — error
// rate, p95 latency, activation failures, devices lost — compared with a
// control cohort of the same group still on the previous version. On a
// breach it pauses or rolls back by itself, storing the evidence with the
// decision.
//
// Every transition is written to its bbolt buckets (and to an audit log)
// before it takes effect, so a restarted server resumes a rollout where it
// was. Telemetry evidence is kept in memory and snapshotted with each
// evaluation; a restart loses at most the windows of one tick.
package rollout

import (
	"time"
)

// States of a rollout.
const (
	StateRunning     = "running"
	StatePaused      = "paused"
	StateCompleted   = "completed"
	StateRollingBack = "rolling_back"
	StateRolledBack  = "rolled_back"
	StateAborted     = "aborted"
)

func terminal(state string) bool {
	return state == StateCompleted || state == StateRolledBack || state == StateAborted
}

// Rollout is a rollout's record: its spec and where it is. The JSON is
// both the API shape and the storage encoding.
type Rollout struct {
	ID   string `json:"id"`
	Spec Spec   `json:"spec"`

	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Phase is the index of the current phase.
	Phase int `json:"phase"`
	// PhaseStarted is when the current phase began dispatching;
	// BakeStarted when its last device was dispatched (zero until then).
	PhaseStarted time.Time `json:"phase_started"`
	BakeStarted  time.Time `json:"bake_started,omitzero"`
	// PausedAt is set while paused; a resume extends the bake by the pause.
	PausedAt time.Time `json:"paused_at,omitzero"`

	Targets      int `json:"targets"`
	Incompatible int `json:"incompatible"`
	// PhaseSizes are the cumulative target counts of the phases.
	PhaseSizes []int `json:"phase_sizes"`
	Dispatched int   `json:"dispatched"`
	// Holdback is how many targets the final phase keeps back as its
	// control (see Spec.Holdback), 0 when the rollout has none.
	Holdback   int `json:"holdback,omitempty"`
	RolledBack int `json:"rolled_back"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`

	// Decisions are the gate decisions and operator actions, oldest first
	// (the last MaxDecisions).
	Decisions []Decision `json:"decisions,omitempty"`
	// Baseline is the control cohort of the last phase that had one; the
	// final phase, which leaves no device on the previous version, is
	// compared with it.
	Baseline *Cohort `json:"baseline,omitempty"`
	// Evidence is the latest snapshot of the current phase's telemetry.
	Evidence *Evidence `json:"evidence,omitempty"`
}

// Decision is one transition of a rollout with why it was taken.
type Decision struct {
	Time   time.Time `json:"time"`
	Phase  int       `json:"phase"`
	Action string    `json:"action"`         // promote, complete, pause, rollback, resume, abort
	Actor  string    `json:"actor"`          // "engine" or "operator"
	User   string    `json:"user,omitempty"` // the operator's user name, when known
	Reason string    `json:"reason,omitempty"`
	Gates  *Report   `json:"gates,omitempty"`
}

// Report is a gate evaluation: every gate's value and threshold and the
// cohorts they were computed on.
type Report struct {
	Time    time.Time `json:"time"`
	Phase   Cohort    `json:"phase"`
	Control Cohort    `json:"control"`
	// ControlSource says where control came from: "live" or "baseline".
	ControlSource string       `json:"control_source"`
	Gates         []GateResult `json:"gates"`
	// Verdict is "pass", "breach" or "insufficient".
	Verdict string `json:"verdict"`
}

// Gate verdicts.
const (
	VerdictPass         = "pass"
	VerdictBreach       = "breach"
	VerdictInsufficient = "insufficient"
)

// GateResult is one gate.
type GateResult struct {
	Name      string  `json:"name"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Verdict is pass, breach or insufficient (not enough evidence).
	Verdict string `json:"verdict"`
	Detail  string `json:"detail,omitempty"`
}

// Cohort is what a set of devices did over a phase.
type Cohort struct {
	Devices   int     `json:"devices"`   // in the cohort
	Reporting int     `json:"reporting"` // sent telemetry for the version(s) watched
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	P95Ms     float64 `json:"p95_ms"`
	// Job outcomes (phase cohort only).
	Succeeded    int `json:"succeeded,omitempty"`
	Failed       int `json:"failed,omitempty"`
	Incompatible int `json:"incompatible,omitempty"`
	Offline      int `json:"offline,omitempty"`
}

// Evidence is the persisted state of the telemetry aggregates of the
// current phase, so a restart does not start the evidence over.
type Evidence struct {
	Phase   int  `json:"phase"`
	New     *agg `json:"new"`
	Control *agg `json:"control"`
}

// Target is one device of a rollout.
type Target struct {
	Device string `json:"device"`
	// Order is the device's place in the rollout: phases take targets in
	// this order.
	Order int `json:"order"`
	// Variant is the registry variant chosen for the device; Incompatible
	// says why there is none (such targets are never dispatched).
	Variant      string `json:"variant,omitempty"`
	Incompatible string `json:"incompatible,omitempty"`
	// Phase is the phase that dispatched the device, -1 before.
	Phase      int       `json:"phase"`
	Generation uint64    `json:"generation,omitempty"`
	JobID      string    `json:"job_id,omitempty"`
	Sent       bool      `json:"sent,omitempty"`
	Dispatched time.Time `json:"dispatched,omitzero"`
	// OnlineAtDispatch tells a device lost after the update from one that
	// was already offline.
	OnlineAtDispatch bool `json:"online_at_dispatch,omitempty"`
	// PreviousVersion is what the device ran (or was told to run) before.
	PreviousVersion string `json:"previous_version,omitempty"`
	// Job is the device's last report on its job.
	JobStep   string `json:"job_step,omitempty"`
	JobState  string `json:"job_state,omitempty"`
	JobReason string `json:"job_reason,omitempty"`
	// RolledBack is set once the rollback desired state is recorded;
	// RollbackSent once it was published.
	RolledBack   bool   `json:"rolled_back,omitempty"`
	RollbackSent bool   `json:"rollback_sent,omitempty"`
	RollbackNote string `json:"rollback_note,omitempty"`
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Rollout string    `json:"rollout,omitempty"`
	Group   string    `json:"group,omitempty"`
	Event   string    `json:"event"`
	Actor   string    `json:"actor"`
	User    string    `json:"user,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	Phase   int       `json:"phase"`
}
