package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/proto"
)

// MessageHandler is the shape of a broker ingest handler (broker.Handler).
type MessageHandler interface {
	Handle(ctx context.Context, clientID, topic string, payload []byte) error
}

// Ingest returns a handler that passes every device message to next (the
// inventory) and, once next accepted it, hands telemetry and job progress
// to the engine. Wire it as the broker's handler.
func (e *Engine) Ingest(next MessageHandler) MessageHandler { return ingest{e: e, next: next} }

type ingest struct {
	e    *Engine
	next MessageHandler
}

func (in ingest) Handle(ctx context.Context, clientID, topic string, payload []byte) error {
	if err := in.next.Handle(ctx, clientID, topic, payload); err != nil {
		return err
	}
	id, kind, err := proto.ParseTopic(topic)
	if err != nil {
		return nil // next accepted it, so this cannot happen; nothing for us anyway
	}
	switch kind {
	case proto.KindTelemetry:
		w, err := proto.DecodeTelemetry(id, payload)
		if err == nil {
			in.e.HandleTelemetry(w)
		}
	case proto.KindJobs:
		j, err := proto.DecodeJobProgress(id, payload)
		if err == nil {
			return in.e.HandleJob(ctx, j)
		}
	}
	return nil
}

// HandleTelemetry adds a window's figures for the rolled-out model to the
// cohorts of every rollout targeting the device: the new version's figures
// from devices of the current phase whose job succeeded, other versions'
// from devices not yet dispatched (control). Both count only from the
// moment the phase is fully dispatched (plus Gates.Settle), so the two
// cohorts are measured over the same period. A window whose seq was seen
// is ignored.
func (e *Engine) HandleTelemetry(w *proto.TelemetryWindow) {
	id := w.GetDeviceId()
	e.mu.Lock()
	defer e.mu.Unlock()
	rs := e.byDevice[id]
	if len(rs) == 0 {
		return
	}
	if last, ok := e.lastSeq[id]; ok && w.GetSeq() <= last {
		return
	}
	e.lastSeq[id] = w.GetSeq()
	now := e.now()
	for _, ru := range rs {
		r := ru.r
		if r.State != StateRunning && r.State != StatePaused {
			continue
		}
		if r.BakeStarted.IsZero() {
			continue
		}
		// Evidence is measured from the epoch on: settle after the phase
		// was dispatched, or after this engine started (a restarted server
		// sees devices reconnect and flush what they queued meanwhile).
		// Windows are placed by their own start time when they carry one.
		epoch := r.BakeStarted
		if e.started.After(epoch) {
			epoch = e.started
		}
		epoch = epoch.Add(time.Duration(r.Spec.Gates.Settle))
		if now.Before(epoch) || w.GetStartUnixMs() != 0 && w.GetStartUnixMs() < epoch.UnixMilli() {
			continue
		}
		t := ru.byDevice[id]
		for _, ms := range w.GetModels() {
			if ms.GetName() != r.Spec.Model {
				continue
			}
			switch {
			case t.Phase == r.Phase && ms.GetVersion() == r.Spec.Version && t.JobState == succeeded:
				ru.newAgg.add(id, ms)
				ru.dirty = true
			case t.Phase < 0 && t.Incompatible == "" && ms.GetVersion() != r.Spec.Version:
				ru.ctlAgg.add(id, ms)
				ru.dirty = true
			}
		}
	}
}

var succeeded = stateName(proto.JobProgress_STATE_SUCCEEDED)

// HandleJob records a device's progress on a job the engine issued. Steps
// in progress stay in memory; terminal states are persisted, since the
// activation-failure gate counts them.
func (e *Engine) HandleJob(ctx context.Context, j *proto.JobProgress) error {
	id := j.GetDeviceId()
	rid, t, ok := e.applyJob(j)
	if j.GetState() == proto.JobProgress_STATE_IN_PROGRESS {
		return nil
	}
	if !ok {
		// A late report for a rollout that is finished (the holdback is
		// updated as the rollout completes): record it from the database.
		return e.finishedJob(j)
	}
	// Batch outside the lock: it waits to coalesce writes, and ingest
	// must not queue behind it.
	if err := e.db.Batch(func(tx *bolt.Tx) error { return putTarget(tx, rid, &t) }); err != nil {
		return fmt.Errorf("record job %s of %s: %w", j.GetJobId(), id, err)
	}
	return nil
}

// applyJob updates the target the job belongs to and returns a copy.
func (e *Engine) applyJob(j *proto.JobProgress) (string, Target, bool) {
	id := j.GetDeviceId()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ru := range e.byDevice[id] {
		t := ru.byDevice[id]
		if t.JobID == "" || t.JobID != j.GetJobId() {
			continue
		}
		t.JobStep, t.JobState, t.JobReason = stepName(j.GetStep()), stateName(j.GetState()), truncateReason(j.GetReason())
		return ru.r.ID, *t, true
	}
	return "", Target{}, false
}

func (e *Engine) finishedJob(j *proto.JobProgress) error {
	rid, _, ok := strings.Cut(j.GetJobId(), "/")
	if !ok || rid == "" {
		return nil
	}
	key := targetKey(rid, j.GetDeviceId())
	err := e.db.Batch(func(tx *bolt.Tx) error {
		var t Target
		found, err := getJSON(bucket(tx, bktTargets), key, &t)
		if err != nil || !found || t.JobID != j.GetJobId() {
			return err
		}
		t.JobStep, t.JobState, t.JobReason = stepName(j.GetStep()), stateName(j.GetState()), truncateReason(j.GetReason())
		return putTarget(tx, rid, &t)
	})
	if err != nil {
		return fmt.Errorf("record job %s of %s: %w", j.GetJobId(), j.GetDeviceId(), err)
	}
	return nil
}

func truncateReason(s string) string {
	if len(s) > MaxReasonLen {
		return s[:MaxReasonLen]
	}
	return s
}
