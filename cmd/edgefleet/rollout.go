package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgefleet/edgefleet/fleet/rollout"
)

const rolloutUsage = `  edgefleet rollout create --model NAME --version V (--group G | --selector k=v,... | --device ID...)
                           [--phases 1%,10%,50%,100%] [--bake 10m] [--rate N] [--window HH:MM-HH:MM]
                           [--on-breach rollback|pause] [--min-devices N] [--min-requests N]
                           [--max-error-rate F] [--max-error-ratio F] [--max-p95-ratio F]
                           [--max-activation-failures F] [--max-offline F] [--json]
  edgefleet rollout status [ID] [--json]
  edgefleet rollout pause|resume|promote|abort|rollback ID [--reason TEXT] [--json]
`

// stringList collects a repeated flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func rolloutCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"rollout: which action? create, status, pause, resume, promote, abort or rollback"}
	}
	switch args[0] {
	case "create":
		return rolloutCreate(ctx, args[1:], getenv, stdout, stderr)
	case "status":
		return rolloutStatus(ctx, args[1:], getenv, stdout, stderr)
	case rollout.ActionPause, rollout.ActionResume, rollout.ActionPromote, rollout.ActionAbort, rollout.ActionRollback:
		return rolloutAct(ctx, args[0], args[1:], getenv, stdout, stderr)
	}
	return usageError{fmt.Sprintf("rollout: unknown action %q", args[0])}
}

func rolloutCreate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet rollout create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var s rollout.Spec
	var devices stringList
	fs.StringVar(&s.Model, "model", "", "model name (required)")
	fs.StringVar(&s.Version, "version", "", "version to roll out (required)")
	fs.StringVar(&s.Group, "group", "", "target a stored group")
	fs.StringVar(&s.Selector, "selector", "", "target devices matching `k=v,...` (profile=... matches the firmware profile)")
	fs.Var(&devices, "device", "target this device `ID` (repeatable)")
	phases := fs.String("phases", "1%,10%,50%,100%", "cumulative phases: percentages or device counts")
	bake := fs.Duration("bake", 10*time.Minute, "how long each phase runs before its gates may promote it")
	fs.IntVar(&s.RatePerMinute, "rate", 0, "desired states sent per minute (0: unbounded)")
	window := fs.String("window", "", "dispatch only in this daily UTC window, `HH:MM-HH:MM`")
	fs.StringVar(&s.OnBreach, "on-breach", rollout.OnBreachRollback, "on a gate breach: rollback or pause")
	fs.IntVar(&s.Gates.MinDevices, "min-devices", 0, "devices of a phase that must report (default 3)")
	fs.Uint64Var(&s.Gates.MinRequests, "min-requests", 0, "requests a phase and its control must serve (default 200)")
	fs.Float64Var(&s.Gates.MaxErrorRate, "max-error-rate", 0, "absolute error-rate ceiling (default 0.05)")
	fs.Float64Var(&s.Gates.MaxErrorRatio, "max-error-ratio", 0, "error rate relative to control (default 2)")
	fs.Float64Var(&s.Gates.MaxP95Ratio, "max-p95-ratio", 0, "p95 latency relative to control (default 1.5)")
	fs.Float64Var(&s.Gates.MaxActivationFailures, "max-activation-failures", 0, "share of failed or rolled-back jobs (default 0.1)")
	fs.Float64Var(&s.Gates.MaxOffline, "max-offline", 0, "share of devices offline after the update (default 0.1)")
	asJSON := fs.Bool("json", false, "print JSON")
	server := serverFlag(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("rollout create: unexpected argument %q", fs.Arg(0))}
	}
	if s.Model == "" || s.Version == "" {
		return usageError{"rollout create: --model and --version are required"}
	}
	s.Devices = devices
	s.Phases = strings.Split(*phases, ",")
	s.Bake = rollout.Duration(*bake)
	if *window != "" {
		start, end, ok := strings.Cut(*window, "-")
		if !ok {
			return usageError{fmt.Sprintf("--window %q: want HH:MM-HH:MM", *window)}
		}
		s.Window = &rollout.Window{Start: start, End: end}
	}
	c, err := rollout.NewClient(*server)
	if err != nil {
		return err
	}
	st, err := c.Create(ctx, s)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "rollout %s: %s %s to %d devices (%d incompatible), phases %s = %v devices\n",
		st.ID, st.Spec.Model, st.Spec.Version, st.Targets, st.Incompatible, strings.Join(st.Spec.Phases, " → "), st.PhaseSizes)
	return nil
}

func rolloutStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet rollout status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	server := serverFlag(fs, getenv)
	id, err := parseOperand(fs, args, fs.Name())
	if err != nil {
		return err
	}
	c, err := rollout.NewClient(*server)
	if err != nil {
		return err
	}
	if id == "" {
		rs, err := c.List(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMODEL\tVERSION\tSTATE\tPHASE\tDISPATCHED\tTARGETS\tINCOMPATIBLE\tUPDATED")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.ID, r.Spec.Model, r.Spec.Version, r.State, phaseLabel(&r), r.Dispatched, r.Targets, r.Incompatible, r.Updated.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	st, err := c.Get(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	printStatus(stdout, st)
	return nil
}

func phaseLabel(r *rollout.Rollout) string {
	if r.Phase >= len(r.Spec.Phases) {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%s)", r.Phase+1, len(r.Spec.Phases), r.Spec.Phases[r.Phase])
}

func printStatus(w io.Writer, st *rollout.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, dash(v)) }
	row("Rollout", st.ID)
	row("Model", st.Spec.Model+" "+st.Spec.Version)
	row("State", st.State)
	row("Reason", st.Reason)
	row("Phase", phaseLabel(&st.Rollout))
	row("Devices", fmt.Sprintf("%d dispatched of %d compatible; %d incompatible; %d rolled back", st.Dispatched, st.Targets, st.Incompatible, st.RolledBack))
	row("Bake", fmt.Sprintf("%v per phase, on breach %s", time.Duration(st.Spec.Bake), st.Spec.OnBreach))
	tw.Flush()
	if st.Live != nil {
		fmt.Fprintf(w, "\nLive gates (%s):\n", st.Live.Verdict)
		printGates(w, st.Live)
	}
	if len(st.Decisions) > 0 {
		fmt.Fprintln(w, "\nDecisions:")
		for _, d := range st.Decisions {
			who := d.Actor
			if d.User != "" {
				who += " " + d.User
			}
			fmt.Fprintf(w, "  %s  phase %d  %s by %s: %s\n", d.Time.UTC().Format(time.RFC3339), d.Phase+1, d.Action, who, d.Reason)
			if d.Gates != nil {
				printGates(w, d.Gates)
			}
		}
	}
}

func printGates(w io.Writer, r *rollout.Report) {
	fmt.Fprintf(w, "    phase: %d devices, %d reporting, %d requests, error rate %.4f, p95 %.2f ms\n",
		r.Phase.Devices, r.Phase.Reporting, r.Phase.Requests, r.Phase.ErrorRate, r.Phase.P95Ms)
	fmt.Fprintf(w, "    control (%s): %d devices, %d reporting, %d requests, error rate %.4f, p95 %.2f ms\n",
		r.ControlSource, r.Control.Devices, r.Control.Reporting, r.Control.Requests, r.Control.ErrorRate, r.Control.P95Ms)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range r.Gates {
		fmt.Fprintf(tw, "    %s\t%.4g\t≤ %.4g\t%s\t%s\n", g.Name, g.Value, g.Threshold, g.Verdict, g.Detail)
	}
	tw.Flush()
}

func rolloutAct(ctx context.Context, action string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet rollout "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	reason := fs.String("reason", "", "why, for the audit log")
	asJSON := fs.Bool("json", false, "print JSON")
	server := serverFlag(fs, getenv)
	id, err := parseOperand(fs, args, fs.Name())
	if err != nil {
		return err
	}
	if id == "" {
		return usageError{fmt.Sprintf("rollout %s: which rollout? give its ID", action)}
	}
	c, err := rollout.NewClient(*server)
	if err != nil {
		return err
	}
	st, err := c.Act(ctx, id, action, *reason)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "rollout %s: %s (%s)\n", st.ID, st.State, phaseLabel(&st.Rollout))
	return nil
}
