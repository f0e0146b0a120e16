// Command edgefleet-agent runs on a gateway: it serves models, reports
// telemetry to the fleet server and applies model updates.
//
//	edgefleet-agent run      [flags]   connect to the fleet and serve (default)
//	edgefleet-agent backends [flags]   list inference backends and why any is unavailable
//	edgefleet-agent infer    [flags]   run one inference on raw tensor files
//	edgefleet-agent bench    [flags]   measure load time and latency of a model
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// A subcommand parses its own flags from args and runs until ctx is done or
// its work is finished.
type subcommand struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var subcommands = map[string]subcommand{}

// register adds a subcommand; each lives in its own file.
func register(name, summary string, run func(ctx context.Context, args []string) error) {
	subcommands[name] = subcommand{summary: summary, run: run}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name, args := "run", os.Args[1:]
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage()
		return
	}
	sc, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "edgefleet-agent: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	if err := sc.run(ctx, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "edgefleet-agent %s: %v\n", name, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: edgefleet-agent <command> [flags]\n\ncommands:")
	for _, n := range sortedNames() {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, subcommands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\n'edgefleet-agent <command> -h' shows a command's flags.")
}

func sortedNames() []string {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && names[j] < names[j-1]; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
	return names
}
