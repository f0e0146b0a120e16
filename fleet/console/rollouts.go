package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
	"github.com/edgefleet/edgefleet/fleet/store"
)

type rolloutRow struct {
	ID, Model, State, Target, Reason string
	Phase, Phases                    int
	Targets, Dispatched, RolledBack  int
	Incompatible                     int
	Created                          time.Time
}

func rowOf(ro rollout.Rollout) rolloutRow {
	target := ro.Spec.Group
	switch {
	case ro.Spec.Selector != "":
		target = ro.Spec.Selector
	case len(ro.Spec.Devices) > 0:
		target = fmt.Sprintf("%d devices", len(ro.Spec.Devices))
	}
	return rolloutRow{ID: ro.ID, Model: ro.Spec.Model + "@" + ro.Spec.Version, State: ro.State, Target: target, Reason: ro.Reason,
		Phase: ro.Phase + 1, Phases: len(ro.PhaseSizes), Targets: ro.Targets, Dispatched: ro.Dispatched, RolledBack: ro.RolledBack,
		Incompatible: ro.Incompatible, Created: ro.Created}
}

type rolloutsData struct {
	Off      bool
	Rollouts []rolloutRow
}

func (c *Console) rolloutsPage(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.render(w, r, http.StatusOK, "rollouts", view{Title: "Rollouts", Nav: "rollouts", Data: rolloutsData{Off: true}})
		return
	}
	rs, err := c.rollouts.List(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := rolloutsData{}
	for _, ro := range rs {
		data.Rollouts = append(data.Rollouts, rowOf(ro))
	}
	c.render(w, r, http.StatusOK, "rollouts", view{Title: "Rollouts", Nav: "rollouts", Notice: notice(r), Live: "tick", Data: data})
}

// rolloutForm is the create form, kept as text so a refused form comes
// back as the operator typed it.
type rolloutForm struct {
	ModelVersion, Group, Phases, Bake, Settle, OnBreach, Rate string
	MaxErrorRate, MaxP95Ratio, MinDevices, MinRequests        string
}

func formOf(v url.Values) rolloutForm {
	g := func(k string) string { return strings.TrimSpace(v.Get(k)) }
	f := rolloutForm{ModelVersion: g("model_version"), Group: g("group"), Phases: g("phases"), Bake: g("bake"), Settle: g("settle"), OnBreach: g("on_breach"),
		Rate: g("rate_per_minute"), MaxErrorRate: g("max_error_rate"), MaxP95Ratio: g("max_p95_ratio"), MinDevices: g("min_devices"), MinRequests: g("min_requests")}
	if f.Phases == "" {
		f.Phases = "10%, 50%, 100%"
	}
	if f.Bake == "" {
		f.Bake = "10m"
	}
	if f.OnBreach == "" {
		f.OnBreach = rollout.OnBreachRollback
	}
	return f
}

// fieldError names the form field at fault.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// spec turns the form into a rollout spec; errors name the field.
func (f rolloutForm) spec() (rollout.Spec, error) {
	var s rollout.Spec
	name, ver, ok := strings.Cut(f.ModelVersion, "@")
	if !ok || name == "" || ver == "" {
		return s, &fieldError{"Model version", "choose a published version"}
	}
	s.Model, s.Version = name, ver
	if f.Group == "" {
		return s, &fieldError{"Group", "choose the group to roll out to"}
	}
	s.Group = f.Group
	for _, p := range strings.Split(f.Phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := rollout.ParsePhase(p); err != nil {
			return s, &fieldError{"Phases", err.Error()}
		}
		s.Phases = append(s.Phases, p)
	}
	if len(s.Phases) > rollout.MaxPhases {
		return s, &fieldError{"Phases", fmt.Sprintf("at most %d phases", rollout.MaxPhases)}
	}
	if err := s.Bake.UnmarshalText([]byte(f.Bake)); err != nil {
		return s, &fieldError{"Bake time", fmt.Sprintf("%q is not a duration like 30s or 10m", clipText(f.Bake))}
	}
	if f.Settle != "" {
		if err := s.Gates.Settle.UnmarshalText([]byte(f.Settle)); err != nil {
			return s, &fieldError{"Settle time", fmt.Sprintf("%q is not a duration like 30s or 1m", clipText(f.Settle))}
		}
	}
	switch f.OnBreach {
	case rollout.OnBreachRollback, rollout.OnBreachPause:
		s.OnBreach = f.OnBreach
	default:
		return s, &fieldError{"On breach", "choose roll back or pause"}
	}
	var err error
	num := func(field, in string, max float64, out *float64) {
		if err != nil || in == "" {
			return
		}
		v, perr := strconv.ParseFloat(in, 64)
		if perr != nil || !(v >= 0 && v <= max) { // also refuses NaN
			err = &fieldError{field, fmt.Sprintf("%q is not a number from 0 to %v", clipText(in), max)}
			return
		}
		*out = v
	}
	var rate, minDev, minReq float64
	num("Rate per minute", f.Rate, 1e6, &rate)
	num("Max error rate", f.MaxErrorRate, 1, &s.Gates.MaxErrorRate)
	num("Max p95 ratio", f.MaxP95Ratio, 1000, &s.Gates.MaxP95Ratio)
	num("Min devices", f.MinDevices, 1e6, &minDev)
	num("Min requests", f.MinRequests, 1e12, &minReq)
	s.RatePerMinute, s.Gates.MinDevices, s.Gates.MinRequests = int(rate), int(minDev), uint64(minReq)
	return s, err
}

func clipText(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

type previewRow struct {
	Device, Profile, Variant, Incompatible string
}

type rolloutNewData struct {
	Off      bool
	Form     rolloutForm
	Versions []string
	Groups   []rollout.Group
	Preview  bool
	Rows     []previewRow
	Variants []count
	Members  int
	Compat   int
	Incompat int
	Shown    int
}

// previewRows bounds the device rows a preview lists; the counts cover
// every member.
const previewRows = 200

func (c *Console) rolloutNewPage(w http.ResponseWriter, r *http.Request) {
	c.showRolloutNew(w, r, http.StatusOK, formOf(r.URL.Query()), r.URL.Query().Get("preview") != "", "")
}

func (c *Console) showRolloutNew(w http.ResponseWriter, r *http.Request, code int, f rolloutForm, preview bool, problem string) {
	if c.rollouts == nil || c.models == nil {
		c.message(w, r, http.StatusNotFound, "New rollout", "This server runs without a rollout engine or model registry.")
		return
	}
	ctx := r.Context()
	data := rolloutNewData{Form: f}
	ms, err := c.models.Models(ctx, "", maxModelsShown)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, m := range ms {
		vs, err := c.models.Versions(ctx, m.Name)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for i := len(vs) - 1; i >= 0; i-- {
			data.Versions = append(data.Versions, m.Name+"@"+vs[i].Version)
		}
	}
	if data.Groups, err = c.rollouts.Groups(ctx); err != nil {
		c.fail(w, r, err)
		return
	}
	if preview && problem == "" {
		if err := c.preview(r, f, &data); err != nil {
			var fe *fieldError
			if !errors.As(err, &fe) {
				c.fail(w, r, err)
				return
			}
			problem, code = fe.Error(), http.StatusBadRequest
		} else {
			data.Preview = true
		}
	}
	c.render(w, r, code, "rollout_new", view{Title: "New rollout", Nav: "rollouts", Problem: problem, Data: data})
}

// preview resolves, for every member of the group, the variant the
// rollout would send, the way the engine will when it is created.
func (c *Console) preview(r *http.Request, f rolloutForm, data *rolloutNewData) error {
	ctx := r.Context()
	spec, err := f.spec()
	if err != nil {
		return err
	}
	v, err := c.models.Version(ctx, spec.Model, spec.Version)
	if errors.Is(err, registry.ErrNotFound) {
		return &fieldError{"Model version", fmt.Sprintf("%s@%s is not in the registry", spec.Model, spec.Version)}
	}
	if err != nil {
		return err
	}
	members, err := c.rollouts.Members(ctx, spec.Group)
	if errors.Is(err, rollout.ErrNotFound) {
		return &fieldError{"Group", fmt.Sprintf("no group named %q", spec.Group)}
	}
	if err != nil {
		return err
	}
	data.Members = len(members)
	variants := map[string]int{}
	for _, id := range members {
		d, err := c.inv.Device(ctx, id)
		row := previewRow{Device: id, Profile: d.Profile}
		if err != nil {
			row.Incompatible = "not in the inventory"
		} else if va, err := v.Resolve(deviceOf(d)); err != nil {
			row.Incompatible = err.Error()
		} else {
			row.Variant = va.ID
		}
		if row.Incompatible != "" {
			data.Incompat++
			variants["incompatible"]++
		} else {
			data.Compat++
			variants[row.Variant]++
		}
		if len(data.Rows) < previewRows {
			data.Rows = append(data.Rows, row)
		}
	}
	sort.Slice(data.Rows, func(i, j int) bool { return data.Rows[i].Device < data.Rows[j].Device })
	data.Shown = len(data.Rows)
	data.Variants = sortedCounts(variants)
	return nil
}

func deviceOf(d store.Device) registry.Device {
	rd := registry.Device{Profile: d.Profile, AgentVersion: d.AgentVersion}
	for _, b := range d.Backends {
		rd.Backends = append(rd.Backends, registry.DeviceBackend{Name: b.Name, Available: b.Available, Reason: b.Reason, Formats: b.Formats})
	}
	return rd
}

func (c *Console) rolloutCreate(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.message(w, r, http.StatusNotFound, "New rollout", "This server runs without a rollout engine.")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.message(w, r, http.StatusBadRequest, "New rollout", "The form could not be read: "+err.Error())
		return
	}
	f := formOf(r.PostForm)
	spec, err := f.spec()
	if err != nil {
		c.showRolloutNew(w, r, http.StatusBadRequest, f, false, err.Error())
		return
	}
	auth.Note(r.Context(), fmt.Sprintf("create rollout of %s@%s to group %s", spec.Model, spec.Version, spec.Group))
	ro, err := c.rollouts.Create(r.Context(), spec)
	if err != nil {
		if msg, code, ok := userError(err); ok {
			c.showRolloutNew(w, r, code, f, false, msg)
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/rollouts/"+url.PathEscape(ro.ID), "Rollout created.")
}

// userError turns the engine's expected errors into a message for the
// operator; anything else is internal.
func userError(err error) (string, int, bool) {
	for _, e := range []struct {
		err  error
		code int
	}{{rollout.ErrInvalid, 400}, {rollout.ErrNotFound, 404}, {rollout.ErrConflict, 409}, {rollout.ErrNoTargets, 409}, {rollout.ErrLimit, 400}, {registry.ErrNotFound, 404}, {registry.ErrInvalid, 400}} {
		if errors.Is(err, e.err) {
			return err.Error(), e.code, true
		}
	}
	return "", 0, false
}

func (c *Console) groupCreate(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.message(w, r, http.StatusNotFound, "Groups", "This server runs without a rollout engine.")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.message(w, r, http.StatusBadRequest, "Groups", "The form could not be read: "+err.Error())
		return
	}
	g := rollout.Group{Name: strings.TrimSpace(r.PostForm.Get("name")), Selector: strings.TrimSpace(r.PostForm.Get("selector"))}
	if g.Name == "" || g.Selector == "" {
		c.showRolloutNew(w, r, http.StatusBadRequest, formOf(nil), false, "Group: give a name and a selector such as profile=raspberry-pi-4,site=plant-7.")
		return
	}
	if _, err := rollout.ParseSelector(g.Selector); err != nil {
		c.showRolloutNew(w, r, http.StatusBadRequest, formOf(nil), false, "Group selector: "+err.Error())
		return
	}
	auth.Note(r.Context(), "group "+g.Name+": "+g.Selector)
	if err := c.rollouts.PutGroup(r.Context(), g); err != nil {
		if msg, code, ok := userError(err); ok {
			c.showRolloutNew(w, r, code, formOf(nil), false, "Group: "+msg)
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/rollouts/new?group="+url.QueryEscape(g.Name), "Group "+g.Name+" saved.")
}

type phaseRow struct {
	Index, Size, Cumulative int
	Spec                    string
	Current, Done           bool
	Devices                 []rollout.Target
	More                    int
}

type rolloutData struct {
	Status    *rollout.Status
	Row       rolloutRow
	Phases    []phaseRow
	Gates     []Bar
	Live      *rollout.Report
	Decisions []decisionRow
	Actions   []string
	Incompat  []rollout.Target
}

type decisionRow struct {
	rollout.Decision
	Bars []Bar
}

// phaseDevicesShown bounds the devices listed per phase.
const phaseDevicesShown = 50

func (c *Console) rolloutPage(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.message(w, r, http.StatusNotFound, "Rollouts", "This server runs without a rollout engine.")
		return
	}
	id := r.PathValue("id")
	ctx := r.Context()
	st, err := c.rollouts.Get(ctx, id)
	if errors.Is(err, rollout.ErrNotFound) || errors.Is(err, rollout.ErrInvalid) {
		c.message(w, r, http.StatusNotFound, "No such rollout", fmt.Sprintf("No rollout with id %q.", clipText(id)))
		return
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	ts, err := c.rollouts.Targets(ctx, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := rolloutData{Status: st, Row: rowOf(st.Rollout), Live: st.Live, Actions: actionsFor(st.State)}
	prev := 0
	for i, size := range st.PhaseSizes {
		ph := phaseRow{Index: i + 1, Cumulative: size, Size: size - prev, Current: i == st.Phase, Done: i < st.Phase}
		if i < len(st.Spec.Phases) {
			ph.Spec = st.Spec.Phases[i]
		}
		prev = size
		data.Phases = append(data.Phases, ph)
	}
	for _, t := range ts {
		if t.Incompatible != "" {
			if len(data.Incompat) < phaseDevicesShown {
				data.Incompat = append(data.Incompat, t)
			}
			continue
		}
		if t.Phase >= 0 && t.Phase < len(data.Phases) {
			ph := &data.Phases[t.Phase]
			if len(ph.Devices) < phaseDevicesShown {
				ph.Devices = append(ph.Devices, t)
			} else {
				ph.More++
			}
		}
	}
	if st.Live != nil {
		data.Gates = bars(st.Live)
	}
	for i := len(st.Decisions) - 1; i >= 0; i-- {
		d := st.Decisions[i]
		row := decisionRow{Decision: d}
		if d.Gates != nil {
			row.Bars = bars(d.Gates)
		}
		data.Decisions = append(data.Decisions, row)
	}
	c.render(w, r, http.StatusOK, "rollout", view{Title: "Rollout " + id, Nav: "rollouts", Notice: notice(r), Live: "tick", Data: data})
}

func bars(rep *rollout.Report) []Bar {
	var out []Bar
	for _, g := range rep.Gates {
		out = append(out, gateBar(g.Name, g.Value, g.Threshold, g.Verdict, g.Detail))
	}
	return out
}

// actionsFor lists what an operator can do in a state; the engine checks
// again and answers ErrConflict otherwise.
func actionsFor(state string) []string {
	switch state {
	case rollout.StateRunning:
		return []string{rollout.ActionPause, rollout.ActionPromote, rollout.ActionAbort, rollout.ActionRollback}
	case rollout.StatePaused:
		return []string{rollout.ActionResume, rollout.ActionPromote, rollout.ActionAbort, rollout.ActionRollback}
	case rollout.StateCompleted, rollout.StateAborted:
		return []string{rollout.ActionRollback}
	}
	return nil
}

var actionText = map[string]string{
	rollout.ActionPause:    "Pause: stop dispatching and stop the gates from acting until resumed.",
	rollout.ActionResume:   "Resume: start this phase's evidence and bake time over and continue.",
	rollout.ActionPromote:  "Promote: skip the rest of this phase's bake and gates and go to the next phase.",
	rollout.ActionAbort:    "Abort: stop dispatching; devices keep what they have.",
	rollout.ActionRollback: "Roll back: send every dispatched device back to the version it ran before.",
}

type confirmData struct {
	ID, Action, Text, Model string
}

func (c *Console) confirmPage(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.message(w, r, http.StatusNotFound, "Rollouts", "This server runs without a rollout engine.")
		return
	}
	id, action := r.PathValue("id"), r.URL.Query().Get("action")
	text, ok := actionText[action]
	if !ok {
		c.message(w, r, http.StatusBadRequest, "Unknown action", fmt.Sprintf("%q is not one of pause, resume, promote, abort, rollback.", clipText(action)))
		return
	}
	st, err := c.rollouts.Get(r.Context(), id)
	if err != nil {
		if errors.Is(err, rollout.ErrNotFound) || errors.Is(err, rollout.ErrInvalid) {
			c.message(w, r, http.StatusNotFound, "No such rollout", fmt.Sprintf("No rollout with id %q.", clipText(id)))
			return
		}
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "confirm", view{Title: "Confirm " + action, Nav: "rollouts",
		Data: confirmData{ID: id, Action: action, Text: text, Model: st.Spec.Model + "@" + st.Spec.Version}})
}

func (c *Console) rolloutAct(w http.ResponseWriter, r *http.Request) {
	if c.rollouts == nil {
		c.message(w, r, http.StatusNotFound, "Rollouts", "This server runs without a rollout engine.")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.message(w, r, http.StatusBadRequest, "Rollout action", "The form could not be read: "+err.Error())
		return
	}
	id, action := r.PathValue("id"), r.PostForm.Get("action")
	if _, ok := actionText[action]; !ok {
		c.message(w, r, http.StatusBadRequest, "Unknown action", fmt.Sprintf("%q is not one of pause, resume, promote, abort, rollback.", clipText(action)))
		return
	}
	// The confirmation page sends confirm=<action>; a form posted
	// without going through it is refused.
	if r.PostForm.Get("confirm") != action {
		c.message(w, r, http.StatusBadRequest, "Not confirmed", "Rollout actions need confirmation; use the button on the rollout page.")
		return
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	if len(reason) > rollout.MaxReasonLen {
		c.message(w, r, http.StatusBadRequest, "Reason too long", fmt.Sprintf("The reason is %d bytes; at most %d.", len(reason), rollout.MaxReasonLen))
		return
	}
	who, _ := auth.FromContext(r.Context())
	if reason == "" {
		reason = "by " + who.User + " from the console"
	} else {
		reason = who.User + ": " + reason
	}
	if len(reason) > rollout.MaxReasonLen {
		reason = reason[:rollout.MaxReasonLen]
	}
	auth.Note(r.Context(), action+" "+id+": "+reason)
	if _, err := c.rollouts.Act(r.Context(), id, action, reason); err != nil {
		if msg, code, ok := userError(err); ok {
			c.message(w, r, code, "Action refused", msg)
			return
		}
		c.fail(w, r, err)
		return
	}
	seeOther(w, r, "/rollouts/"+url.PathEscape(id), "Done: "+action+".")
}
