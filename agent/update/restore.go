package update

import (
	"context"
	"fmt"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/proto"
)

// Restore serves what the state says is active, after a start: the slot
// file is checked against its record before it is loaded, and a slot that
// fails falls back to the other one, or to the configured model. Call it
// once, after the configured models are loaded and before Run.
func (u *Updater) Restore(ctx context.Context) error {
	ds, err := u.cfg.Store.Deployments(ctx)
	if err != nil {
		return fmt.Errorf("read deployments: %w", err)
	}
	for _, dep := range ds {
		if err := u.restore(ctx, dep); err != nil {
			return err
		}
	}
	u.setModels(ctx)
	return nil
}

func (u *Updater) restore(ctx context.Context, dep state.Deployment) error {
	inWindow := !terminal(dep.Job.State) && dep.Job.Step >= int32(proto.JobProgress_STEP_SWITCHING) && dep.Active == dep.Job.Target
	slot, ok := dep.Slots[active(dep)]
	if !ok {
		// The configured model (slot "a" never written) serves; the agent
		// loaded it already.
		return nil
	}
	b, err := u.pickBackend(slot.Backend, slot.Format)
	if err == nil {
		mm, oerr := u.openSlot(ctx, b, dep.Name, active(dep), slot)
		if oerr == nil {
			prev, serr := u.cfg.Server.ServeModel(dep.Name, slot.Version, b.Name(), mm)
			if serr != nil {
				mm.Close()
				return fmt.Errorf("serve %s %s: %w", dep.Name, slot.Version, serr)
			}
			if prev != nil {
				if inWindow && dep.Job.Previous == "a" && dep.Slots["a"] == (state.Slot{}) {
					// The configured model is the rollback target of the
					// health window being resumed: keep it loaded.
					u.held[dep.Name] = prev
				} else {
					prev.Close()
				}
			}
			u.log.Info("restored model from its slot", "model", dep.Name, "version", slot.Version, "slot", active(dep))
			return nil
		}
		err = oerr
	}
	// The active slot is unusable (a disk fault after the download was
	// verified): serve the other slot's verified version, or the
	// configured model, and say so.
	u.log.Error("active model slot unusable; falling back", "model", dep.Name, "slot", active(dep), "err", err)
	fallback := other(active(dep))
	dep.Active = fallback
	if s, ok := dep.Slots[fallback]; ok {
		if fb, berr := u.pickBackend(s.Backend, s.Format); berr == nil {
			if mm, oerr := u.openSlot(ctx, fb, dep.Name, fallback, s); oerr == nil {
				if prev, serr := u.cfg.Server.ServeModel(dep.Name, s.Version, fb.Name(), mm); serr == nil {
					if prev != nil {
						prev.Close()
					}
				} else {
					mm.Close()
				}
			}
		}
	}
	if !terminal(dep.Job.State) {
		dep.Job.State, dep.Job.Reason = int32(proto.JobProgress_STATE_FAILED), fmt.Sprintf("model slot unusable after restart: %v", err)
	}
	return u.cfg.Store.PutDeployment(ctx, dep)
}

// setModels records the installed models for hello: both slots of every
// model the updater manages, and the configured ones it does not.
func (u *Updater) setModels(ctx context.Context) {
	ds, err := u.cfg.Store.Deployments(ctx)
	if err != nil {
		u.log.Warn("read deployments", "err", err)
		return
	}
	byName := map[string]state.Deployment{}
	for _, d := range ds {
		byName[d.Name] = d
	}
	var out []state.Model
	for _, b := range u.cfg.Base {
		d, ok := byName[b.Name]
		if !ok {
			out = append(out, b)
			continue
		}
		if _, written := d.Slots["a"]; !written {
			b.Active, b.Slot = active(d) == "a", "a"
			out = append(out, b)
		}
	}
	for _, d := range ds {
		for _, slot := range []string{"a", "b"} {
			s, ok := d.Slots[slot]
			if !ok {
				continue
			}
			if _, serving := u.cfg.Server.ServedVersion(d.Name); !serving && active(d) == slot {
				continue
			}
			out = append(out, state.Model{
				Name: d.Name, Version: s.Version, Format: s.Format, Backend: s.Backend,
				SHA256: s.SHA256, SizeBytes: s.Size, Active: active(d) == slot, Slot: slot,
			})
		}
	}
	if len(out) > state.MaxModels {
		out = out[:state.MaxModels]
	}
	if err := u.cfg.Store.SetModels(ctx, out); err != nil {
		u.log.Warn("record installed models", "err", err)
	}
}
