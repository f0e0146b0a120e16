package rollout

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

// Devices is the part of the inventory the engine reads.
type Devices interface {
	List(ctx context.Context, q inventory.Query) (inventory.Page, error)
	Device(ctx context.Context, id string) (store.Device, error)
}

// Models is the part of the registry the engine reads.
type Models interface {
	Version(ctx context.Context, name, ver string) (*registry.Version, error)
}

// Publisher sends a message to a device topic at QoS 1;
// broker.Embedded and broker.External provide it.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool) error
}

// Defaults of Options.
const (
	DefaultTick       = time.Second
	DefaultMaxTargets = 100_000
	dispatchChunk     = 2048
)

// Options configure an Engine.
type Options struct {
	// DB is a bbolt database, possibly shared; the engine uses its own
	// top-level bucket and does not close it. If nil, Path is opened.
	DB   *bolt.DB
	Path string
	// Devices, Models and Publisher are required.
	Devices   Devices
	Models    Models
	Publisher Publisher
	// ArtifactBaseURL prefixes registry.ArtifactPath in desired states,
	// e.g. http://fleet.example:8080. Required.
	ArtifactBaseURL string
	// Tick is how often Run evaluates gates and dispatches; default 1 s.
	Tick time.Duration
	// MaxTargets bounds the devices of one rollout.
	MaxTargets int
	// Now is the clock; nil means time.Now. Tests inject one to make bake
	// times and rate limits deterministic.
	Now func() time.Time
	// User names who is behind a request's context (the authenticated
	// user), for decisions and the audit log; nil or "" leaves it out.
	User   func(ctx context.Context) string
	Logger *slog.Logger
}

// Engine runs rollouts. Its methods are safe for concurrent use; Run
// drives it.
type Engine struct {
	opts  Options
	db    *bolt.DB
	ownDB bool
	log   *slog.Logger
	now   func() time.Time
	wake  chan struct{}
	// started is when this engine opened: devices look offline after a
	// server restart until they reconnect.
	started time.Time

	mu       sync.Mutex
	closed   bool
	runs     map[string]*run   // rollouts not in a terminal state
	byDevice map[string][]*run // device → runs targeting it
	lastSeq  map[string]uint64 // telemetry dedupe
}

// run is a rollout the engine is driving.
type run struct {
	r        *Rollout
	v        *registry.Version
	targets  []*Target // by Order
	byDevice map[string]*Target
	newAgg   *agg // phase devices, new version, since the phase started
	ctlAgg   *agg // undispatched devices, other versions, same period
	last     *Report
	tokens   float64
	tokenAt  time.Time
	dirty    bool // evidence changed since the last snapshot
}

// Open opens the engine's buckets and loads the rollouts that are not
// finished, re-sending any desired state recorded but not yet published.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Devices == nil || opts.Models == nil || opts.Publisher == nil {
		return nil, errors.New("rollout: Options.Devices, Models and Publisher are required")
	}
	if opts.ArtifactBaseURL == "" {
		return nil, errors.New("rollout: Options.ArtifactBaseURL is required (devices download artifacts from it)")
	}
	opts.ArtifactBaseURL = strings.TrimSuffix(opts.ArtifactBaseURL, "/")
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	if opts.MaxTargets <= 0 {
		opts.MaxTargets = DefaultMaxTargets
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{opts: opts, db: opts.DB, log: opts.Logger, now: opts.Now, wake: make(chan struct{}, 1), started: opts.Now(),
		runs: map[string]*run{}, byDevice: map[string][]*run{}, lastSeq: map[string]uint64{}}
	if e.db == nil {
		if opts.Path == "" {
			return nil, errors.New("rollout: Options.DB or Options.Path is required")
		}
		db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			if errors.Is(err, bolterrors.ErrTimeout) {
				return nil, fmt.Errorf("open rollout database %s: locked (is another server running on this data dir?)", opts.Path)
			}
			return nil, fmt.Errorf("open rollout database %s: %w", opts.Path, err)
		}
		e.db, e.ownDB = db, true
	}
	if err := migrate(e.db); err != nil {
		e.Close()
		return nil, err
	}
	if err := e.load(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close stops the engine's use of the database and closes it if the
// engine opened it. Call it after Run has returned.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.ownDB {
		return e.db.Close()
	}
	return nil
}

func (e *Engine) load(ctx context.Context) error {
	var rs []*Rollout
	err := e.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bktRollouts).ForEach(func(k, v []byte) error {
			r := new(Rollout)
			if _, err := getJSON(bucket(tx, bktRollouts), k, r); err != nil {
				return err
			}
			if !terminal(r.State) {
				rs = append(rs, r)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load rollouts: %w", err)
	}
	for _, r := range rs {
		ru, err := e.loadRun(ctx, r)
		if err != nil {
			return err
		}
		e.attach(ru)
		e.log.Info("resuming rollout", "rollout", r.ID, "state", r.State, "phase", r.Phase, "dispatched", r.Dispatched)
		if err := e.resend(ctx, ru); err != nil {
			e.log.Warn("re-sending desired states after restart failed; the next tick retries", "rollout", r.ID, "err", err)
		}
	}
	e.republish(ctx)
	return nil
}

// republish publishes, retained, the last desired state recorded for every
// device. The embedded broker keeps retained messages in memory only, so
// after a server restart a device that reconnects (or that lost the message
// on the way) would otherwise never hear its desired state again; on a broker
// that kept them this replaces each with the same bytes. Devices ignore a
// generation they have already applied.
func (e *Engine) republish(ctx context.Context) {
	type msg struct {
		device  string
		payload []byte
	}
	var msgs []msg
	err := e.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bktDevices).ForEach(func(k, _ []byte) error {
			dd, err := getDevice(tx, string(k))
			if err != nil {
				return err
			}
			if dd.Generation == 0 {
				return nil
			}
			b, err := proto.Encode(dd.message(string(k)))
			if err != nil {
				return fmt.Errorf("encode desired state of %s: %w", k, err)
			}
			msgs = append(msgs, msg{string(k), b})
			return nil
		})
	})
	if err != nil {
		e.log.Warn("reading desired states to republish failed", "err", err)
		return
	}
	failed := 0
	for _, m := range msgs {
		if err := e.opts.Publisher.Publish(ctx, proto.Topic(m.device, proto.KindDesired), m.payload, true); err != nil {
			failed++
		}
	}
	if failed > 0 {
		e.log.Warn("republishing desired states failed for some devices; they get them with the next change", "failed", failed, "of", len(msgs))
	} else if len(msgs) > 0 {
		e.log.Info("republished desired states", "devices", len(msgs))
	}
}

func (e *Engine) loadRun(ctx context.Context, r *Rollout) (*run, error) {
	v, err := e.opts.Models.Version(ctx, r.Spec.Model, r.Spec.Version)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: load %s %s from the registry: %w", r.ID, r.Spec.Model, r.Spec.Version, err)
	}
	var ts []*Target
	if err := e.db.View(func(tx *bolt.Tx) error {
		var err error
		ts, err = loadTargets(tx, r.ID)
		return err
	}); err != nil {
		return nil, fmt.Errorf("rollout %s: %w", r.ID, err)
	}
	slices.SortFunc(ts, func(a, b *Target) int { return cmp.Compare(a.Order, b.Order) })
	ru := &run{r: r, v: v, targets: ts, byDevice: make(map[string]*Target, len(ts)), newAgg: newAgg(), ctlAgg: newAgg(), tokenAt: e.now()}
	for _, t := range ts {
		ru.byDevice[t.Device] = t
	}
	if ev := r.Evidence; ev != nil && ev.Phase == r.Phase && ev.New != nil && ev.Control != nil {
		ru.newAgg, ru.ctlAgg = ev.New, ev.Control
		if ru.newAgg.Reporting == nil {
			ru.newAgg.Reporting = map[string]bool{}
		}
		if ru.ctlAgg.Reporting == nil {
			ru.ctlAgg.Reporting = map[string]bool{}
		}
	}
	return ru, nil
}

// attach makes a run visible to ingest; e.mu held or not yet shared.
func (e *Engine) attach(ru *run) {
	e.runs[ru.r.ID] = ru
	for _, t := range ru.targets {
		e.byDevice[t.Device] = append(e.byDevice[t.Device], ru)
	}
}

func (e *Engine) detach(ru *run) {
	delete(e.runs, ru.r.ID)
	for _, t := range ru.targets {
		rs := slices.DeleteFunc(e.byDevice[t.Device], func(x *run) bool { return x == ru })
		if len(rs) == 0 {
			delete(e.byDevice, t.Device)
			delete(e.lastSeq, t.Device)
		} else {
			e.byDevice[t.Device] = rs
		}
	}
}

// resend publishes the desired state of every target recorded but not
// confirmed sent: the crash window between the database and the broker.
func (e *Engine) resend(ctx context.Context, ru *run) error {
	var pending []*Target
	for _, t := range ru.targets {
		if (t.Phase >= 0 && !t.Sent) || (t.RolledBack && !t.RollbackSent) {
			pending = append(pending, t)
		}
	}
	return e.publishTargets(ctx, ru, pending)
}

func (e *Engine) user(ctx context.Context) string {
	if e.opts.User == nil {
		return ""
	}
	return truncate(e.opts.User(ctx))
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run evaluates and dispatches every Tick (and at once after an action)
// until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.opts.Tick)
	defer t.Stop()
	for {
		if err := e.Step(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("rollout step failed; retrying next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.wake:
		}
	}
}

// Step does one round of work on every active rollout: dispatch what the
// rate limit and window allow, evaluate the gates, act on them. Run calls
// it; tests with an injected clock call it directly.
func (e *Engine) Step(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	ids := make([]string, 0, len(e.runs))
	for id := range e.runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var errs []error
	for _, id := range ids {
		if err := e.step(ctx, e.runs[id]); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) step(ctx context.Context, ru *run) error {
	r := ru.r
	now := e.now()
	switch r.State {
	case StateRollingBack:
		return e.finishRollback(ctx, ru)
	case StateRunning:
	default:
		return nil
	}
	if r.BakeStarted.IsZero() {
		if err := e.dispatchPhase(ctx, ru, now); err != nil {
			return err
		}
	}
	if err := e.resend(ctx, ru); err != nil {
		return err
	}
	rep := e.report(ctx, ru, now)
	ru.last = rep
	switch {
	case rep.Verdict == VerdictBreach:
		reason := "gate breach in phase " + r.Spec.Phases[r.Phase] + ": " + rep.breached()
		if r.Spec.OnBreach == OnBreachPause {
			return e.transition(ru, StatePaused, Decision{Action: "pause", Actor: "engine", Reason: reason, Gates: rep})
		}
		return e.startRollback(ctx, ru, Decision{Action: "rollback", Actor: "engine", Reason: reason, Gates: rep})
	case rep.Verdict == VerdictPass && !r.BakeStarted.IsZero() && !now.Before(r.BakeStarted.Add(time.Duration(r.Spec.Bake))):
		return e.promote(ctx, ru, Decision{Action: "promote", Actor: "engine", Reason: "every gate passed after the bake", Gates: rep})
	}
	if ru.dirty {
		ru.dirty = false
		r.Evidence = &Evidence{Phase: r.Phase, New: ru.newAgg, Control: ru.ctlAgg}
		return e.db.Update(func(tx *bolt.Tx) error { return putRollout(tx, r) })
	}
	return nil
}

// phaseRange returns the target orders [lo, hi) of phase i.
func (r *Rollout) phaseRange(i int) (lo, hi int) {
	if i > 0 {
		lo = r.PhaseSizes[i-1]
	}
	return lo, r.PhaseSizes[i]
}

func (e *Engine) dispatchPhase(ctx context.Context, ru *run, now time.Time) error {
	r := ru.r
	_, hi := r.phaseRange(r.Phase)
	if r.Phase == len(r.PhaseSizes)-1 {
		hi -= r.Holdback
	}
	var pending []*Target
	for _, t := range ru.targets[:min(hi, len(ru.targets))] {
		if t.Phase < 0 && t.Incompatible == "" {
			pending = append(pending, t)
		}
	}
	if len(pending) > 0 {
		if !r.Spec.Window.open(now) {
			return nil
		}
		if rate := r.Spec.RatePerMinute; rate > 0 {
			burst := max(1, float64(rate)/6) // ten seconds' worth
			ru.tokens = min(burst, ru.tokens+now.Sub(ru.tokenAt).Minutes()*float64(rate))
			ru.tokenAt = now
			n := int(ru.tokens)
			if n < len(pending) {
				pending = pending[:n]
			}
			ru.tokens -= float64(len(pending))
		}
		for len(pending) > 0 {
			n := min(len(pending), dispatchChunk)
			if err := e.dispatch(ctx, ru, pending[:n], now); err != nil {
				return err
			}
			pending = pending[n:]
		}
	}
	for _, t := range ru.targets[:min(hi, len(ru.targets))] {
		if t.Phase < 0 && t.Incompatible == "" {
			return nil // rate or window held some back
		}
	}
	r.BakeStarted = now
	return e.db.Update(func(tx *bolt.Tx) error {
		r.Updated = now
		if err := putRollout(tx, r); err != nil {
			return err
		}
		return appendAudit(tx, AuditEntry{Time: now, Rollout: r.ID, Event: "phase_dispatched", Actor: "engine", Phase: r.Phase,
			Detail: fmt.Sprintf("phase %s: %d devices dispatched in total; baking %v", r.Spec.Phases[r.Phase], r.Dispatched, time.Duration(r.Spec.Bake))})
	})
}

// dispatch records the new desired state of ts, then publishes it.
func (e *Engine) dispatch(ctx context.Context, ru *run, ts []*Target, now time.Time) error {
	r := ru.r
	online := make([]bool, len(ts))
	for i, t := range ts {
		if d, err := e.opts.Devices.Device(ctx, t.Device); err == nil {
			online[i] = d.Online
		}
	}
	payloads := make([][]byte, len(ts))
	err := e.db.Update(func(tx *bolt.Tx) error {
		for i, t := range ts {
			va := variant(ru.v, t.Variant)
			if va == nil {
				return fmt.Errorf("variant %s of %s %s vanished from the registry", t.Variant, r.Spec.Model, r.Spec.Version)
			}
			dd, err := getDevice(tx, t.Device)
			if err != nil {
				return err
			}
			if prev, ok := dd.model(r.Spec.Model); ok {
				t.PreviousVersion = prev.Version
			}
			dd.Generation++
			dd.Rollout, dd.Issued = r.ID, now.UnixMilli()
			job := jobID(r.ID, t.Device, dd.Generation)
			dd.set(desiredOf(ru.v.DesiredModel(va, e.opts.ArtifactBaseURL+registry.ArtifactPath(va.Artifact.SHA256), job)))
			if err := putDevice(tx, t.Device, &dd); err != nil {
				return err
			}
			if payloads[i], err = proto.Encode(dd.message(t.Device)); err != nil {
				return fmt.Errorf("encode desired state of %s: %w", t.Device, err)
			}
			t.Phase, t.Generation, t.JobID, t.Dispatched, t.OnlineAtDispatch = r.Phase, dd.Generation, job, now, online[i]
			t.JobStep, t.JobState, t.JobReason, t.Sent = "", "", "", false
			if err := putTarget(tx, r.ID, t); err != nil {
				return err
			}
		}
		r.Dispatched += len(ts)
		r.Updated = now
		return putRollout(tx, r)
	})
	if err != nil {
		return fmt.Errorf("record dispatch: %w", err)
	}
	return e.publish(ctx, ru, ts, payloads)
}

func jobID(rollout, device string, gen uint64) string {
	return fmt.Sprintf("%s/%s/%d", rollout, device, gen)
}

func variant(v *registry.Version, id string) *registry.Variant {
	for i := range v.Variants {
		if v.Variants[i].ID == id {
			return &v.Variants[i]
		}
	}
	return nil
}

// publishTargets publishes each device's current desired state as the
// database holds it (after a restart, or a failed publish) and marks the
// targets sent.
func (e *Engine) publishTargets(ctx context.Context, ru *run, ts []*Target) error {
	if len(ts) == 0 {
		return nil
	}
	payloads := make([][]byte, len(ts))
	err := e.db.View(func(tx *bolt.Tx) error {
		for i, t := range ts {
			dd, err := getDevice(tx, t.Device)
			if err != nil {
				return err
			}
			if payloads[i], err = proto.Encode(dd.message(t.Device)); err != nil {
				return fmt.Errorf("encode desired state of %s: %w", t.Device, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return e.publish(ctx, ru, ts, payloads)
}

// publish sends payloads[i] to ts[i] and marks the targets sent.
func (e *Engine) publish(ctx context.Context, ru *run, ts []*Target, payloads [][]byte) error {
	var sent []*Target
	var firstErr error
	for i, t := range ts {
		if err := e.opts.Publisher.Publish(ctx, proto.Topic(t.Device, proto.KindDesired), payloads[i], true); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("publish desired state of %s: %w", t.Device, err)
			}
			continue
		}
		sent = append(sent, t)
	}
	if len(sent) > 0 {
		if err := e.db.Update(func(tx *bolt.Tx) error {
			for _, t := range sent {
				if t.RolledBack {
					t.RollbackSent = true
				} else {
					t.Sent = true
				}
				if err := putTarget(tx, ru.r.ID, t); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("record sent desired states: %w", err)
		}
	}
	return firstErr
}

// report evaluates the gates of the current phase now.
func (e *Engine) report(ctx context.Context, ru *run, now time.Time) *Report {
	r := ru.r
	phase := ru.newAgg.cohort(0)
	grace := time.Duration(r.Spec.Gates.OfflineGrace)
	controlDevices := 0
	for _, t := range ru.targets {
		switch {
		case t.Incompatible != "":
		case t.Phase < 0:
			controlDevices++
		case t.Phase == r.Phase:
			phase.Devices++
			switch t.JobState {
			case stateName(proto.JobProgress_STATE_SUCCEEDED):
				phase.Succeeded++
			case stateName(proto.JobProgress_STATE_FAILED), stateName(proto.JobProgress_STATE_ROLLED_BACK):
				phase.Failed++
			case stateName(proto.JobProgress_STATE_INCOMPATIBLE):
				phase.Incompatible++
			}
			if t.OnlineAtDispatch && now.Sub(e.started) > grace {
				if d, err := e.opts.Devices.Device(ctx, t.Device); err == nil && !d.Online && now.Sub(d.LastSeen) > grace {
					phase.Offline++
				}
			}
		}
	}
	control := ru.ctlAgg.cohort(controlDevices)
	// Devices that reported as control and were dispatched since are
	// no longer control devices; their figures stay (they were measured
	// on the previous version).
	control.Reporting = 0
	for id := range ru.ctlAgg.Reporting {
		if t := ru.byDevice[id]; t != nil && t.Phase < 0 {
			control.Reporting++
		}
	}
	source := "live"
	if (controlDevices == 0 || control.Requests < r.Spec.Gates.MinRequests) && r.Baseline != nil {
		control, source = *r.Baseline, "baseline"
	}
	return evaluate(r.Spec.Gates, now, phase, control, source)
}

func stateName(s proto.JobProgress_State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func stepName(s proto.JobProgress_Step) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_"))
}

// transition records a state change with its decision and audit line.
func (e *Engine) transition(ru *run, state string, d Decision) error {
	r := ru.r
	now := e.now()
	d.Time, d.Phase = now, r.Phase
	prev := r.State
	r.State, r.Reason, r.Updated = state, d.Reason, now
	if state == StatePaused {
		r.PausedAt = now
	}
	r.Decisions = append(r.Decisions, d)
	if len(r.Decisions) > MaxDecisions {
		r.Decisions = slices.Delete(r.Decisions, 0, len(r.Decisions)-MaxDecisions)
	}
	r.Evidence = &Evidence{Phase: r.Phase, New: ru.newAgg, Control: ru.ctlAgg}
	err := e.db.Update(func(tx *bolt.Tx) error {
		if err := putRollout(tx, r); err != nil {
			return err
		}
		detail := d.Reason
		if d.Gates != nil {
			detail += fmt.Sprintf(" [phase %d devices, %d reporting, %d requests, error rate %.4f, p95 %.2f ms; control (%s) %d devices, %d requests, error rate %.4f, p95 %.2f ms]",
				d.Gates.Phase.Devices, d.Gates.Phase.Reporting, d.Gates.Phase.Requests, d.Gates.Phase.ErrorRate, d.Gates.Phase.P95Ms,
				d.Gates.ControlSource, d.Gates.Control.Devices, d.Gates.Control.Requests, d.Gates.Control.ErrorRate, d.Gates.Control.P95Ms)
		}
		return appendAudit(tx, AuditEntry{Time: now, Rollout: r.ID, Event: d.Action, Actor: d.Actor, User: d.User, Phase: r.Phase, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("record %s: %w", d.Action, err)
	}
	e.log.Info("rollout transition", "rollout", r.ID, "from", prev, "to", state, "action", d.Action, "phase", r.Phase, "reason", d.Reason)
	if terminal(state) {
		e.detach(ru)
	}
	return nil
}

func (e *Engine) promote(ctx context.Context, ru *run, d Decision) error {
	r := ru.r
	if d.Gates != nil && d.Gates.ControlSource == "live" && d.Gates.Control.Requests >= r.Spec.Gates.MinRequests {
		b := d.Gates.Control
		r.Baseline = &b
	}
	if r.Phase+1 >= len(r.PhaseSizes) {
		// The final phase passed against its holdback: update the
		// holdback too, then finish.
		var rest []*Target
		for _, t := range ru.targets {
			if t.Phase < 0 && t.Incompatible == "" {
				rest = append(rest, t)
			}
		}
		for len(rest) > 0 {
			n := min(len(rest), dispatchChunk)
			if err := e.dispatch(ctx, ru, rest[:n], e.now()); err != nil {
				return err
			}
			rest = rest[n:]
		}
		d.Action = "complete"
		return e.transition(ru, StateCompleted, d)
	}
	// The decision is recorded against the phase it closes.
	if err := e.transition(ru, StateRunning, d); err != nil {
		return err
	}
	now := e.now()
	r.Phase++
	r.PhaseStarted, r.BakeStarted, r.PausedAt = now, time.Time{}, time.Time{}
	ru.newAgg, ru.ctlAgg, ru.last = newAgg(), newAgg(), nil
	r.Evidence = nil
	return e.db.Update(func(tx *bolt.Tx) error { return putRollout(tx, r) })
}

func (e *Engine) startRollback(ctx context.Context, ru *run, d Decision) error {
	if err := e.transition(ru, StateRollingBack, d); err != nil {
		return err
	}
	return e.finishRollback(ctx, ru)
}

// finishRollback gives every dispatched device a new generation naming
// its previous version, then marks the rollout rolled back. It is
// idempotent, so a restart in the middle continues it.
func (e *Engine) finishRollback(ctx context.Context, ru *run) error {
	r := ru.r
	now := e.now()
	var todo []*Target
	for _, t := range ru.targets {
		if t.Phase >= 0 && !t.RolledBack {
			todo = append(todo, t)
		}
	}
	prevs := map[string]*registry.Version{}
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), dispatchChunk)]
		todo = todo[len(chunk):]
		// Resolve outside the transaction: it may read the inventory.
		entries := make([]*desiredModel, len(chunk))
		for i, t := range chunk {
			dm, note := e.previousModel(ctx, ru, t, prevs)
			entries[i] = dm
			t.RollbackNote = note
		}
		payloads := make([][]byte, len(chunk))
		err := e.db.Update(func(tx *bolt.Tx) error {
			for i, t := range chunk {
				t.RolledBack = true
				if entries[i] != nil {
					dd, err := getDevice(tx, t.Device)
					if err != nil {
						return err
					}
					dd.Generation++
					dd.Rollout, dd.Issued = r.ID, now.UnixMilli()
					m := *entries[i]
					m.JobID = jobID(r.ID, t.Device, dd.Generation)
					dd.set(m)
					if err := putDevice(tx, t.Device, &dd); err != nil {
						return err
					}
					if payloads[i], err = proto.Encode(dd.message(t.Device)); err != nil {
						return fmt.Errorf("encode desired state of %s: %w", t.Device, err)
					}
					t.JobID, t.Generation = m.JobID, dd.Generation
					t.JobStep, t.JobState, t.JobReason = "", "", ""
					r.RolledBack++
				} else {
					t.RollbackSent = true // nothing to send
				}
				if err := putTarget(tx, r.ID, t); err != nil {
					return err
				}
			}
			return putRollout(tx, r)
		})
		if err != nil {
			return fmt.Errorf("record rollback: %w", err)
		}
		var send []*Target
		var sendPayloads [][]byte
		for i, t := range chunk {
			if entries[i] != nil {
				send, sendPayloads = append(send, t), append(sendPayloads, payloads[i])
			}
		}
		if err := e.publish(ctx, ru, send, sendPayloads); err != nil {
			return err
		}
	}
	if err := e.resend(ctx, ru); err != nil {
		return err
	}
	return e.transition(ru, StateRolledBack, Decision{Action: "rolled_back", Actor: "engine",
		Reason: fmt.Sprintf("%d devices sent back to their previous version", r.RolledBack)})
}

// previousModel is the desired entry that puts t back on what it ran
// before the rollout, or nil with a note saying why there is none.
func (e *Engine) previousModel(ctx context.Context, ru *run, t *Target, cache map[string]*registry.Version) (*desiredModel, string) {
	if t.PreviousVersion == "" {
		return nil, "the device had no previous version of this model; it keeps the new one"
	}
	v, ok := cache[t.PreviousVersion]
	if !ok {
		var err error
		v, err = e.opts.Models.Version(ctx, ru.r.Spec.Model, t.PreviousVersion)
		if err != nil {
			v = nil
		}
		cache[t.PreviousVersion] = v
	}
	if v == nil {
		return nil, fmt.Sprintf("previous version %s is not in the registry; the device keeps the new one", t.PreviousVersion)
	}
	d, err := e.opts.Devices.Device(ctx, t.Device)
	if err != nil {
		return nil, fmt.Sprintf("device not in the inventory: %v", err)
	}
	va, err := v.Resolve(deviceOf(d))
	if err != nil {
		return nil, err.Error()
	}
	dm := desiredOf(v.DesiredModel(va, e.opts.ArtifactBaseURL+registry.ArtifactPath(va.Artifact.SHA256), ""))
	return &dm, ""
}

func deviceOf(d store.Device) registry.Device {
	rd := registry.Device{Profile: d.Profile, AgentVersion: d.AgentVersion}
	for _, b := range d.Backends {
		rd.Backends = append(rd.Backends, registry.DeviceBackend{Name: b.Name, Available: b.Available, Reason: b.Reason, Formats: b.Formats})
	}
	return rd
}

// order spreads a rollout's devices deterministically: the first phases
// take devices by a hash of rollout and device id, not by id order (which
// often follows site or purchase date).
func order(rollout, device string) uint64 {
	h := sha256.Sum256([]byte(rollout + "\x00" + device))
	return binary.BigEndian.Uint64(h[:8])
}
