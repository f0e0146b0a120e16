package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/inventory"
)

const defaultServer = "http://127.0.0.1:8080"

// labelFlags collects repeated --label k=v.
type labelFlags map[string]string

func (l labelFlags) String() string { return "" }

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not of the form key=value", s)
	}
	l[k] = v
	return nil
}

func serverFlag(fs *flag.FlagSet, getenv func(string) string) *string {
	def := getenv("EDGEFLEET_SERVER")
	if def == "" {
		def = defaultServer
	}
	return fs.String("server", def, "fleet server URL (env EDGEFLEET_SERVER)")
}

func devicesCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "show" {
		return deviceShowCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && isEnrollVerb(args[0]) {
		return deviceEnrollCmd(ctx, args, getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("edgefleet devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	labels := labelFlags{}
	fs.Var(labels, "label", "only devices with this label `k=v` (repeatable)")
	profile := fs.String("profile", "", "only devices with this firmware profile")
	status := fs.String("status", "", "only online or offline devices")
	model := fs.String("model", "", "only devices with this model installed (NAME or NAME@VERSION)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	server := serverFlag(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("devices: unexpected argument %q", fs.Arg(0))}
	}
	if *status != "" && *status != "online" && *status != "offline" {
		return usageError{fmt.Sprintf("--status %q: want online or offline", *status)}
	}
	c, err := api.NewClient(*server)
	if err != nil {
		return err
	}
	q := inventory.Query{Profile: *profile, Status: *status, Model: *model, Limit: inventory.MaxLimit}
	if len(labels) > 0 {
		q.Labels = labels
	}
	devs, err := c.AllDevices(ctx, q)
	if err != nil {
		return err
	}
	if *asJSON {
		if devs == nil {
			devs = []api.Device{}
		}
		return writeJSON(stdout, devs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tPROFILE\tMODEL\tLAST SEEN\tLABELS")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Status, dash(d.Profile), dash(d.ActiveModel), dash(d.LastSeen), dash(formatLabels(d.Labels)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(devs) == 0 {
		fmt.Fprintln(stderr, "no devices match")
	}
	return nil
}

func deviceShowCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet devices show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	server := serverFlag(fs, getenv)
	id, err := parseOperand(fs, args, "devices show")
	if err != nil {
		return err
	}
	if id == "" {
		return usageError{"devices show: which device? give its ID"}
	}
	c, err := api.NewClient(*server)
	if err != nil {
		return err
	}
	d, err := c.Device(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, d)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, dash(v)) }
	row("ID", d.ID)
	row("Status", fmt.Sprintf("%s (session %d)", d.Status, d.Session))
	row("Profile", d.Profile)
	row("Agent", d.AgentVersion)
	row("First seen", d.FirstSeen)
	row("Last seen", d.LastSeen)
	row("Labels", formatLabels(d.Labels))
	hw := d.Hardware
	row("Hardware", strings.TrimSpace(fmt.Sprintf("%s/%s %s, %d cores, %d MiB", hw.OS, hw.Arch, hw.CPUModel, hw.Cores, hw.MemoryBytes>>20)))
	if hw.BoardModel != "" {
		row("Board", hw.BoardModel)
	}
	if len(hw.Accelerators) > 0 {
		row("Accelerators", strings.Join(hw.Accelerators, ", "))
	}
	for _, b := range d.Backends {
		state := "available"
		if !b.Available {
			state = "unavailable: " + b.Reason
		}
		row("Backend", fmt.Sprintf("%s %s (%s)", b.Name, b.Version, state))
	}
	for _, m := range d.Models {
		active := ""
		if m.Active {
			active = " (active)"
		}
		row("Model", fmt.Sprintf("%s@%s %s%s", m.Name, m.Version, m.Format, active))
	}
	row("Telemetry", fmt.Sprintf("last window %d, %d dropped on the device", d.LastSeq, d.WindowsDropped))
	return tw.Flush()
}

func formatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
