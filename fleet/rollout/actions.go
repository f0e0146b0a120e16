package rollout

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/store"
)

// Create resolves the spec's target group against the inventory, picks
// each device's variant, records the rollout and starts it (Run dispatches
// the first phase at its next tick).
func (e *Engine) Create(ctx context.Context, spec Spec) (*Rollout, error) {
	phases, err := spec.normalize()
	if err != nil {
		return nil, err
	}
	v, err := e.opts.Models.Version(ctx, spec.Model, spec.Version)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s %s is not in the registry; push it first (edgefleet model push)", ErrNotFound, spec.Model, spec.Version)
		}
		return nil, fmt.Errorf("load %s %s: %w", spec.Model, spec.Version, err)
	}
	devices, err := e.members(ctx, spec)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	for _, ru := range e.runs {
		if ru.r.Spec.Model == spec.Model {
			return nil, fmt.Errorf("%w: rollout %s of %s is %s; pause, abort or finish it first", ErrConflict, ru.r.ID, spec.Model, ru.r.State)
		}
	}
	now := e.now()
	r := &Rollout{Spec: spec, State: StateRunning, PhaseStarted: now, Created: now, Updated: now}
	var ts []*Target
	err = e.db.Update(func(tx *bolt.Tx) error {
		seq, err := bucket(tx, bktRollouts).NextSequence()
		if err != nil {
			return err
		}
		r.ID = fmt.Sprintf("r%d", seq)
		var compatible, incompatible []*Target
		for _, d := range devices {
			t := &Target{Device: d.ID, Phase: -1}
			if d.missing != "" {
				t.Incompatible = d.missing
			} else if va, err := v.Resolve(deviceOf(d.Device)); err != nil {
				t.Incompatible = err.Error()
			} else {
				t.Variant = va.ID
			}
			if dd, err := getDevice(tx, d.ID); err != nil {
				return err
			} else if m, ok := dd.model(spec.Model); ok {
				t.PreviousVersion = m.Version
			} else {
				for _, im := range d.Models {
					if im.Name == spec.Model && im.Active {
						t.PreviousVersion = im.Version
					}
				}
			}
			if t.Incompatible != "" {
				incompatible = append(incompatible, t)
			} else {
				compatible = append(compatible, t)
			}
		}
		if len(compatible) == 0 {
			return fmt.Errorf("%w: %d devices targeted, %d incompatible", ErrNoTargets, len(devices), len(incompatible))
		}
		slices.SortFunc(compatible, func(a, b *Target) int {
			return cmp.Or(cmp.Compare(order(r.ID, a.Device), order(r.ID, b.Device)), cmp.Compare(a.Device, b.Device))
		})
		ts = append(compatible, incompatible...)
		for i, t := range ts {
			t.Order = i
			if err := putTarget(tx, r.ID, t); err != nil {
				return err
			}
		}
		prev := 0
		for _, p := range phases {
			prev = p.cumulative(len(compatible), prev)
			r.PhaseSizes = append(r.PhaseSizes, prev)
		}
		r.Targets, r.Incompatible = len(compatible), len(incompatible)
		r.Holdback = holdback(spec, r.PhaseSizes)
		if err := putRollout(tx, r); err != nil {
			return err
		}
		return appendAudit(tx, AuditEntry{Time: now, Rollout: r.ID, Event: "create", Actor: "operator", User: e.user(ctx),
			Detail: fmt.Sprintf("%s %s to %s: %d compatible, %d incompatible; phases %v (devices %v), bake %v, on breach %s",
				spec.Model, spec.Version, targetName(spec), len(compatible), len(incompatible), spec.Phases, r.PhaseSizes, time.Duration(spec.Bake), spec.OnBreach)})
	})
	if err != nil {
		return nil, err
	}
	ru := &run{r: r, v: v, targets: ts, byDevice: make(map[string]*Target, len(ts)), newAgg: newAgg(), ctlAgg: newAgg(), tokenAt: now}
	for _, t := range ts {
		ru.byDevice[t.Device] = t
	}
	e.attach(ru)
	e.kick()
	return clone(r), nil
}

// holdback sizes the final phase's control: only when the final phase
// covers every target (else the rest is a live control anyway) and keeps
// most of its own devices.
func holdback(s Spec, sizes []int) int {
	n := sizes[len(sizes)-1]
	prev := 0
	if len(sizes) > 1 {
		prev = sizes[len(sizes)-2]
	}
	h := s.Holdback
	switch {
	case h < 0:
		return 0
	case h == 0:
		h = max(s.Gates.MinDevices, int(math.Ceil(0.05*float64(n))))
	}
	if 2*h > n-prev {
		return 0
	}
	return h
}

func targetName(s Spec) string {
	switch {
	case s.Group != "":
		return "group " + s.Group
	case s.Selector != "":
		return "selector " + s.Selector
	}
	return fmt.Sprintf("%d listed devices", len(s.Devices))
}

type member struct {
	store.Device
	missing string // why a listed device cannot be targeted
}

// members evaluates the spec's target against the inventory.
func (e *Engine) members(ctx context.Context, spec Spec) ([]member, error) {
	ids, sel := spec.Devices, spec.Selector
	if spec.Group != "" {
		g, err := e.Group(ctx, spec.Group)
		if err != nil {
			return nil, err
		}
		ids, sel = g.Devices, g.Selector
	}
	var out []member
	if sel != "" {
		s, err := ParseSelector(sel)
		if err != nil {
			return nil, err
		}
		q := s.query()
		for {
			page, err := e.opts.Devices.List(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("evaluate selector %q: %w", sel, err)
			}
			for _, d := range page.Devices {
				out = append(out, member{Device: d})
			}
			if len(out) > e.opts.MaxTargets {
				return nil, fmt.Errorf("%w: selector %q matches more than %d devices", ErrLimit, sel, e.opts.MaxTargets)
			}
			if page.Next == "" {
				return out, nil
			}
			q.Cursor = page.Next
		}
	}
	if len(ids) > e.opts.MaxTargets {
		return nil, fmt.Errorf("%w: %d devices, limit %d", ErrLimit, len(ids), e.opts.MaxTargets)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		d, err := e.opts.Devices.Device(ctx, id)
		switch {
		case errors.Is(err, inventory.ErrNotFound) || errors.Is(err, store.ErrNotFound):
			out = append(out, member{Device: store.Device{ID: id}, missing: "device is not in the inventory (it never said hello)"})
		case err != nil:
			return nil, fmt.Errorf("look up device %s: %w", id, err)
		default:
			out = append(out, member{Device: d})
		}
	}
	return out, nil
}

// Status is a rollout with its live gate evaluation.
type Status struct {
	Rollout
	// Live is the latest evaluation of the current phase (absent after a
	// restart until the next tick, and for finished rollouts).
	Live *Report `json:"live,omitempty"`
}

// Get returns a rollout.
func (e *Engine) Get(ctx context.Context, id string) (*Status, error) {
	e.mu.Lock()
	if ru, ok := e.runs[id]; ok {
		s := &Status{Rollout: *clone(ru.r), Live: ru.last}
		e.mu.Unlock()
		return s, nil
	}
	e.mu.Unlock()
	r := new(Rollout)
	err := e.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(bucket(tx, bktRollouts), []byte(id), r)
		if err == nil && !ok {
			err = fmt.Errorf("%w: rollout %q", ErrNotFound, truncate(id))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Status{Rollout: *r}, nil
}

// List returns every rollout, newest first, without decisions or evidence.
func (e *Engine) List(ctx context.Context) ([]Rollout, error) {
	var out []Rollout
	err := e.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bktRollouts).ForEach(func(k, v []byte) error {
			var r Rollout
			if _, err := getJSON(bucket(tx, bktRollouts), k, &r); err != nil {
				return err
			}
			r.Decisions, r.Evidence = nil, nil
			out = append(out, r)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Rollout) int { return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.ID, a.ID)) })
	return out, err
}

// Targets returns the devices of a rollout in rollout order.
func (e *Engine) Targets(ctx context.Context, id string) ([]Target, error) {
	var out []Target
	err := e.db.View(func(tx *bolt.Tx) error {
		if bucket(tx, bktRollouts).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: rollout %q", ErrNotFound, truncate(id))
		}
		ts, err := loadTargets(tx, id)
		for _, t := range ts {
			out = append(out, *t)
		}
		return err
	})
	slices.SortFunc(out, func(a, b Target) int { return cmp.Compare(a.Order, b.Order) })
	return out, err
}

// Desired is what the server last told a device to run.
type Desired struct {
	Device     string           `json:"device"`
	Generation uint64           `json:"generation"`
	Rollout    string           `json:"rollout,omitempty"`
	Models     []DesiredSummary `json:"models"`
}

// DesiredSummary is one model of a Desired.
type DesiredSummary struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	JobID   string `json:"job_id"`
}

// Desired returns the desired state recorded for a device; generation 0
// means none was ever issued.
func (e *Engine) Desired(ctx context.Context, device string) (Desired, error) {
	out := Desired{Device: device}
	err := e.db.View(func(tx *bolt.Tx) error {
		dd, err := getDevice(tx, device)
		out.Generation, out.Rollout = dd.Generation, dd.Rollout
		for _, m := range dd.Models {
			out.Models = append(out.Models, DesiredSummary{Name: m.Name, Version: m.Version, JobID: m.JobID})
		}
		return err
	})
	return out, err
}

// Audit returns up to limit audit entries after seq, oldest first; with
// rollout set, only that rollout's.
func (e *Engine) Audit(ctx context.Context, rollout string, after uint64, limit int) ([]AuditEntry, error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	var out []AuditEntry
	err := e.db.View(func(tx *bolt.Tx) error {
		c := bucket(tx, bktAudit).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(out) < limit; k, v = c.Next() {
			var a AuditEntry
			if _, err := getJSON(bucket(tx, bktAudit), k, &a); err != nil {
				return err
			}
			_ = v
			if rollout == "" || a.Rollout == rollout {
				out = append(out, a)
			}
		}
		return nil
	})
	return out, err
}

// Actions an operator can take.
const (
	ActionPause    = "pause"
	ActionResume   = "resume"
	ActionPromote  = "promote"
	ActionAbort    = "abort"
	ActionRollback = "rollback"
)

// Act applies an operator action to a rollout: pause, resume (starts the
// phase's evidence and bake over, since the operator says the cause is
// dealt with), promote (skip the rest of the bake and the gates of the
// current phase), abort (stop dispatching; devices keep what they have),
// rollback (send every dispatched device back to its previous version; also
// after completion or abort).
func (e *Engine) Act(ctx context.Context, id, action, reason string) (*Status, error) {
	if len(reason) > MaxReasonLen {
		return nil, fmt.Errorf("%w: reason is %d bytes, limit %d", ErrInvalid, len(reason), MaxReasonLen)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	ru, ok := e.runs[id]
	if !ok {
		if action != ActionRollback {
			if _, err := e.getLocked(id); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: rollout %s is finished; only rollback applies", ErrConflict, id)
		}
		r, err := e.getLocked(id)
		if err != nil {
			return nil, err
		}
		if r.State == StateRolledBack {
			return nil, fmt.Errorf("%w: rollout %s is already rolled back", ErrConflict, id)
		}
		ru, err = e.loadRun(ctx, r)
		if err != nil {
			return nil, err
		}
		e.attach(ru)
	}
	r := ru.r
	if reason == "" {
		reason = "operator " + action
	}
	d := Decision{Action: action, Actor: "operator", User: e.user(ctx), Reason: reason, Gates: ru.last}
	var err error
	switch action {
	case ActionPause:
		if r.State != StateRunning {
			return nil, fmt.Errorf("%w: rollout %s is %s, not running", ErrConflict, id, r.State)
		}
		err = e.transition(ru, StatePaused, d)
	case ActionResume:
		if r.State != StatePaused {
			return nil, fmt.Errorf("%w: rollout %s is %s, not paused", ErrConflict, id, r.State)
		}
		ru.newAgg, ru.ctlAgg, ru.last = newAgg(), newAgg(), nil
		r.PausedAt, r.PhaseStarted = time.Time{}, e.now()
		if !r.BakeStarted.IsZero() {
			r.BakeStarted = e.now()
		}
		err = e.transition(ru, StateRunning, d)
	case ActionPromote:
		if r.State != StateRunning && r.State != StatePaused {
			return nil, fmt.Errorf("%w: rollout %s is %s; only a running or paused rollout can be promoted", ErrConflict, id, r.State)
		}
		if r.BakeStarted.IsZero() {
			return nil, fmt.Errorf("%w: phase %s of rollout %s is still dispatching (%d sent); promote once it bakes", ErrConflict, r.Spec.Phases[r.Phase], id, r.Dispatched)
		}
		err = e.promote(ctx, ru, d)
	case ActionAbort:
		err = e.transition(ru, StateAborted, d)
	case ActionRollback:
		if r.State == StateRollingBack {
			return nil, fmt.Errorf("%w: rollout %s is already rolling back", ErrConflict, id)
		}
		err = e.startRollback(ctx, ru, d)
	default:
		return nil, fmt.Errorf("%w: unknown action %q; use pause, resume, promote, abort or rollback", ErrInvalid, truncate(action))
	}
	if err != nil {
		return nil, err
	}
	e.kick()
	return &Status{Rollout: *clone(r), Live: ru.last}, nil
}

func (e *Engine) getLocked(id string) (*Rollout, error) {
	r := new(Rollout)
	err := e.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(bucket(tx, bktRollouts), []byte(id), r)
		if err == nil && !ok {
			err = fmt.Errorf("%w: rollout %q", ErrNotFound, truncate(id))
		}
		return err
	})
	return r, err
}

// clone deep-copies what callers could otherwise see change.
func clone(r *Rollout) *Rollout {
	c := *r
	c.Decisions = slices.Clone(r.Decisions)
	c.PhaseSizes = slices.Clone(r.PhaseSizes)
	c.Evidence = nil // internal aggregates; Live and Decisions carry the figures
	return &c
}

// PutGroup creates or replaces a group.
func (e *Engine) PutGroup(ctx context.Context, g Group) error {
	if err := g.validate(); err != nil {
		return err
	}
	now := e.now()
	return e.db.Update(func(tx *bolt.Tx) error {
		if err := putJSON(bucket(tx, bktGroups), []byte(g.Name), g); err != nil {
			return err
		}
		detail := "selector " + g.Selector
		if g.Selector == "" {
			detail = fmt.Sprintf("%d devices", len(g.Devices))
		}
		return appendAudit(tx, AuditEntry{Time: now, Group: g.Name, Event: "group_put", Actor: "operator", User: e.user(ctx), Detail: detail})
	})
}

// Group returns a group.
func (e *Engine) Group(ctx context.Context, name string) (Group, error) {
	var g Group
	err := e.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(bucket(tx, bktGroups), []byte(name), &g)
		if err == nil && !ok {
			err = fmt.Errorf("%w: group %q", ErrNotFound, truncate(name))
		}
		return err
	})
	return g, err
}

// Groups returns every group by name.
func (e *Engine) Groups(ctx context.Context) ([]Group, error) {
	var out []Group
	err := e.db.View(func(tx *bolt.Tx) error {
		return bucket(tx, bktGroups).ForEach(func(k, _ []byte) error {
			var g Group
			_, err := getJSON(bucket(tx, bktGroups), k, &g)
			out = append(out, g)
			return err
		})
	})
	return out, err
}

// DeleteGroup removes a group; rollouts already created keep their targets.
func (e *Engine) DeleteGroup(ctx context.Context, name string) error {
	now := e.now()
	return e.db.Update(func(tx *bolt.Tx) error {
		b := bucket(tx, bktGroups)
		if b.Get([]byte(name)) == nil {
			return fmt.Errorf("%w: group %q", ErrNotFound, truncate(name))
		}
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		return appendAudit(tx, AuditEntry{Time: now, Group: name, Event: "group_delete", Actor: "operator", User: e.user(ctx)})
	})
}

// Members evaluates a group against the inventory now.
func (e *Engine) Members(ctx context.Context, name string) ([]string, error) {
	ms, err := e.members(ctx, Spec{Group: name})
	var ids []string
	for _, m := range ms {
		if m.missing == "" {
			ids = append(ids, m.ID)
		}
	}
	return ids, err
}
