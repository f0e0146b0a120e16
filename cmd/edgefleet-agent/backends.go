package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/hw"
	"github.com/edgefleet/edgefleet/agent/runtime"
	// The inference backends built into the agent. ONNX Runtime registers
	// itself from backend_onnxrt.go, in cgo builds only.
	_ "github.com/edgefleet/edgefleet/agent/runtime/tflite"
)

func init() {
	register("backends", "list inference backends and why any is unavailable", listBackends)
}

func listBackends(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("edgefleet-agent backends", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := c.logger()
	if err != nil {
		return err
	}
	facts, ps, err := c.device()
	if err != nil {
		return err
	}
	p, err := hw.Match(facts, ps)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "device:\t%s %s, %d cores, %d MiB, board %q\n", facts.Arch, facts.CPUModel, facts.Cores, facts.MemoryBytes>>20, facts.BoardModel)
	if len(facts.CPUFlags) > 0 {
		fmt.Fprintf(w, "cpu flags:\t%s\n", strings.Join(facts.CPUFlags, " "))
	}
	if len(facts.Accelerators) > 0 {
		fmt.Fprintf(w, "accelerators:\t%s\n", strings.Join(facts.Accelerators, " "))
	}
	fmt.Fprintf(w, "profile:\t%s (threads %d, model memory %d MiB, offers %s)\n\n", p.Name, p.Threads, p.ModelMemoryMB, strings.Join(p.BackendNames(), ", "))
	w.Flush()
	fmt.Fprintln(w, "BACKEND\tVERSION\tFORMATS\tSTATUS")
	for _, b := range agent.ProfileBackends(p, log) {
		st := agent.StatusOf(b)
		status := "available"
		if !st.Available {
			status = "unavailable: " + st.Reason
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", st.Name, st.Version, strings.Join(st.Formats, ","), status)
	}
	for _, name := range p.BackendNames() {
		if !registered(name) {
			fmt.Fprintf(w, "%s\t-\t-\tnot built into this binary\n", name)
		}
	}
	return w.Flush()
}

func registered(name string) bool {
	for _, b := range runtime.Names() {
		if b == name {
			return true
		}
	}
	return false
}
