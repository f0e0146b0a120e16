package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/enroll"
)

// enrollUsage is appended to the main usage.
const enrollUsage = `  edgefleet enroll-token create [--label k=v]... [--group G] [--ttl 24h] [--max-uses N] [--json]
  edgefleet enroll-token list [--json]
  edgefleet enroll-token revoke ID
  edgefleet devices pending|enrollments [--json]
  edgefleet devices accept|reject|revoke|remove ID
  edgefleet devices preauthorize ID [--label k=v]...
`

// caFlag is --ca-cert: the PEM CA to trust for an https server with the
// fleet's self-signed CA (DATA_DIR/tls/ca.pem on the server).
func caFlag(fs *flag.FlagSet, getenv func(string) string) *string {
	return fs.String("ca-cert", getenv("EDGEFLEET_CA_CERT"), "PEM CA certificate to trust for an https server, e.g. its data-dir/tls/ca.pem (env EDGEFLEET_CA_CERT)")
}

func enrollClient(server, caFile string, getenv func(string) string) (*enroll.Client, error) {
	var hc *http.Client
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it", caFile)
		}
		hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	c, err := enroll.NewClient(server, hc)
	if err != nil {
		return nil, err
	}
	tok := getenv(api.TokenEnv)
	if tok == "" {
		tok = os.Getenv(api.TokenEnv)
	}
	c.SetToken(strings.TrimSpace(tok))
	return c, nil
}

func enrollTokenCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"enroll-token: want create, list or revoke"}
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("edgefleet enroll-token "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := serverFlag(fs, getenv)
	caFile := caFlag(fs, getenv)
	asJSON := fs.Bool("json", false, "print JSON")
	labels := labelFlags{}
	var group, ttl *string
	var maxUses *int
	if verb == "create" {
		fs.Var(labels, "label", "label `k=v` given to devices enrolled with the token (repeatable)")
		group = fs.String("group", "", "group given to devices enrolled with the token (label group=G)")
		ttl = fs.String("ttl", "24h", "how long the token is valid")
		maxUses = fs.Int("max-uses", 1, "how many devices may enrol with it")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := enrollClient(*server, *caFile, getenv)
	if err != nil {
		return err
	}
	switch verb {
	case "create":
		if fs.NArg() > 0 {
			return usageError{fmt.Sprintf("enroll-token create: unexpected argument %q", fs.Arg(0))}
		}
		req := enroll.TokenRequest{Group: *group, TTL: *ttl, MaxUses: *maxUses}
		if len(labels) > 0 {
			req.Labels = labels
		}
		tc, err := c.CreateToken(ctx, req)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, tc)
		}
		pin := ""
		if fp, err := fingerprint(*caFile); err == nil && fp != "" {
			pin = " --ca-sha256 " + fp
		}
		fmt.Fprintf(stdout, "token %s (valid until %s, %d use(s)); shown once:\n\n  %s\n\non the gateway:\n\n  sudo -u edgefleet edgefleet-agent enroll --server %s%s --token %s --state-dir /var/lib/edgefleet-agent\n",
			tc.Token.ID, tc.Token.ExpiresAt.Format(time.RFC3339), tc.Token.MaxUses, tc.Secret, *server, pin, tc.Secret)
		return nil
	case "list":
		ts, err := c.Tokens(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, ts)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEXPIRES\tUSES\tLABELS\tREVOKED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%v\n", t.ID, t.ExpiresAt.Format(time.RFC3339), t.Uses, t.MaxUses, formatLabels(t.Labels), t.Revoked)
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 1 {
			return usageError{"enroll-token revoke: want one token ID"}
		}
		if err := c.RevokeToken(ctx, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %s revoked\n", fs.Arg(0))
		return nil
	}
	return usageError{fmt.Sprintf("enroll-token: unknown verb %q; want create, list or revoke", verb)}
}

// isEnrollVerb reports whether `devices VERB` is one of enrolment's.
func isEnrollVerb(v string) bool {
	switch v {
	case "pending", "enrollments", "accept", "reject", "revoke", "remove", "preauthorize":
		return true
	}
	return false
}

func deviceEnrollCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("edgefleet devices "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := serverFlag(fs, getenv)
	caFile := caFlag(fs, getenv)
	asJSON := fs.Bool("json", false, "print JSON")
	labels := labelFlags{}
	if verb == "preauthorize" {
		fs.Var(labels, "label", "label `k=v` of the device (repeatable)")
	}
	// The ID may come before the flags: devices preauthorize gw-1 --label k=v.
	id, err := parseOperand(fs, args, "devices "+verb)
	if err != nil {
		return err
	}
	c, err := enrollClient(*server, *caFile, getenv)
	if err != nil {
		return err
	}
	if verb == "pending" || verb == "enrollments" {
		state := ""
		if verb == "pending" {
			state = enroll.StatePending
		}
		ds, err := c.Devices(ctx, state)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, ds)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tSINCE\tTOKEN\tLABELS")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.State, d.UpdatedAt.Format(time.RFC3339), d.TokenID, formatLabels(d.Labels))
		}
		return tw.Flush()
	}
	if id == "" {
		return usageError{fmt.Sprintf("devices %s: want one device ID", verb)}
	}
	switch verb {
	case "remove":
		if err := c.Remove(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s removed; it may enrol again\n", id)
		return nil
	case "preauthorize":
		var l map[string]string
		if len(labels) > 0 {
			l = labels
		}
		raw, err := c.Preauthorize(ctx, id, l)
		if err != nil {
			return err
		}
		// The credentials file the agent reads (credentials.json in its
		// state dir); it holds the device's secret.
		_, err = stdout.Write(append(raw, '\n'))
		return err
	}
	d, err := c.Act(ctx, id, verb)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "%s is now %s\n", d.ID, d.State)
	return nil
}

// fingerprint is the hex SHA-256 of the first certificate in a PEM file,
// as edgefleet-agent enroll --ca-sha256 wants it; "" without a file.
func fingerprint(caFile string) (string, error) {
	if caFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("%s: not PEM", caFile)
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:]), nil
}
