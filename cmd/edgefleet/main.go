// Command edgefleet is the operator's command line for a fleet server.
//
//	edgefleet devices [--label k=v]... [--profile P] [--status online|offline] [--model M] [--json]
//	edgefleet devices show ID [--json]
//
// --server (env EDGEFLEET_SERVER, default http://127.0.0.1:8080) names the
// server. Output is a table, or JSON with --json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "edgefleet: %v\n\n", err)
			usage(os.Stderr)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "edgefleet: %v\n", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  edgefleet devices [--label k=v]... [--profile P] [--status online|offline] [--model NAME[@VERSION]] [--json]
  edgefleet devices show ID [--json]
`+rolloutUsage+modelUsage+enrollUsage+`

Every command takes --server URL (env EDGEFLEET_SERVER, default http://127.0.0.1:8080).
`)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return nil
	}
	switch args[0] {
	case "devices":
		return devicesCmd(ctx, args[1:], getenv, stdout, stderr)
	case "rollout":
		return rolloutCmd(ctx, args[1:], getenv, stdout, stderr)
	case "model":
		return modelCmd(ctx, args[1:], getenv, stdout, stderr)
	case "enroll-token":
		return enrollTokenCmd(ctx, args[1:], getenv, stdout, stderr)
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// parseOperand parses fs from args and returns the one operand (an ID or a
// file) that the command takes, given before or after the flags: "rollout
// pause r3 --reason x" and "rollout pause --reason x r3" both work. It is ""
// when none is given; a second operand is a usage error naming cmd.
func parseOperand(fs *flag.FlagSet, args []string, cmd string) (string, error) {
	var operand string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		operand, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if operand == "" && len(rest) > 0 {
		operand, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", usageError{fmt.Sprintf("%s: unexpected argument %q", cmd, rest[0])}
	}
	return operand, nil
}
