package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/serve"
)

// The local inference API (agent/serve) serves the same models as Infer:
// every model the agent serves, at start or after an update switch, is
// swapped into the API's table too, and every API request is recorded in
// the telemetry windows and the update engine's health window, so the fleet's
// rollout gates and the device's own rollback see the gateway's real traffic.
//
// The agent owns the models: the API borrows them (its Close of a retired
// version closes only its own sessions), because the update engine keeps the
// previous version loaded for a rollback.

// setupAPI builds the API server when Config.API is set, with the models
// loaded so far.
func (a *Agent) setupAPI() error {
	if a.cfg.API == nil {
		return nil
	}
	opts := *a.cfg.API
	if opts.Logger == nil {
		opts.Logger = a.log.With("component", "serve")
	}
	opts.Observer = apiObserver{a}
	a.api = serve.New(opts)
	a.mu.RLock()
	defer a.mu.RUnlock()
	for name, lm := range a.models {
		if err := a.api.Swap(name, lm.version, borrowedModel{lm.model}); err != nil {
			return fmt.Errorf("local API: serve %s %s: %w", name, lm.version, err)
		}
	}
	return nil
}

// runAPI serves the API until ctx is done. A listener that cannot be opened
// (a socket path without permission, a port in use) is logged and the agent
// goes on without the API: the fleet connection matters more.
func (a *Agent) runAPI(ctx context.Context) {
	if err := a.api.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Error("local inference API stopped", "err", err)
	}
}

// apiSwap mirrors a switch of the served version into the API.
func (a *Agent) apiSwap(name, version string, m runtime.Model) {
	if a.api == nil {
		return
	}
	if err := a.api.Swap(name, version, borrowedModel{m}); err != nil {
		a.log.Error("local API: switch failed; API requests keep the previous version", "model", name, "version", version, "err", err)
	}
}

// apiRemove mirrors the removal of a model into the API.
func (a *Agent) apiRemove(name string) {
	if a.api == nil {
		return
	}
	if err := a.api.Remove(name); err != nil && !errors.Is(err, serve.ErrUnknownModel) {
		a.log.Error("local API: remove failed", "model", name, "err", err)
	}
}

// borrowedModel lends a model to the API without giving it the right to
// close it.
type borrowedModel struct{ runtime.Model }

func (borrowedModel) Close() error { return nil }

// apiObserver records API requests like Infer calls.
type apiObserver struct{ a *Agent }

func (o apiObserver) Observe(ev serve.Event) {
	a := o.a
	version := ev.Version
	if ev.ServedBy != "" {
		// A lighter variant ran it: its own figures, not the model's.
		return
	}
	switch {
	case ev.Outcome.Rejected():
		a.rec.Reject(ev.Model, version)
		return
	case ev.Outcome == serve.OutcomeCanceled:
		return
	}
	took := ev.Queue + ev.Compute
	kind := ""
	failed := false
	switch ev.Outcome {
	case serve.OutcomeOK:
	case serve.OutcomeBadInput:
		kind = "input"
	case serve.OutcomeExpired:
		kind = "deadline"
	case serve.OutcomeUnavailable:
		kind = "closed"
	default:
		kind, failed = "internal", true
	}
	a.rec.Observe(ev.Model, version, took, kind)
	if a.upd != nil {
		a.upd.Observe(ev.Model, version, ev.Compute, failed)
	}
}
