package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/fleetd"
	"github.com/edgefleet/edgefleet/fleet/store"
)

// initCmd creates a user (the first admin, usually) in a data dir while no
// server runs on it:
//
//	edgefleet-server init --data-dir D --admin NAME [--password-file F] [--role admin] [--token-file T] [--exists-ok]
//
// Without --password-file the password is read from the first line of
// standard input. --token-file writes a new API token of the user there
// (mode 0600), for the CLI's EDGEFLEET_TOKEN.
func initCmd(args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet-server init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", fleetd.DefaultDataDir, "the server's data dir (created if missing)")
	name := fs.String("admin", "", "name of the user to create (required)")
	pwFile := fs.String("password-file", "", "read the password from this file's first line instead of standard input")
	roleName := fs.String("role", "admin", "role of the user: viewer, operator or admin")
	tokenFile := fs.String("token-file", "", "also create an API token of the user and write it to this file")
	existsOK := fs.Bool("exists-ok", false, "succeed without changes when the user already exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("init: unexpected argument %q", fs.Arg(0))
	}
	if *name == "" {
		return errors.New("init: --admin NAME is required")
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("init: --role: %w", err)
	}
	var pwSrc io.Reader = stdin
	if *pwFile != "" {
		f, err := os.Open(*pwFile)
		if err != nil {
			return fmt.Errorf("init: --password-file: %w", err)
		}
		defer f.Close()
		pwSrc = f
	} else {
		fmt.Fprintf(stderr, "Password for %s (8 to 72 characters, one line): ", *name)
	}
	pw, err := bufio.NewReader(io.LimitReader(pwSrc, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("init: read password: %w", err)
	}
	pw = strings.TrimRight(pw, "\r\n")

	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("init: create data dir: %w", err)
	}
	// The same file and lock as the server: init fails fast while a
	// server runs on the data dir.
	st, err := store.Open(filepath.Join(*dataDir, "fleet.db"), store.Options{})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer st.Close()
	a, err := auth.Open(auth.Options{DB: st.DB()})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	ctx := context.Background()
	switch err := a.CreateUser(ctx, *name, pw, role); {
	case errors.Is(err, auth.ErrExists) && *existsOK:
		fmt.Fprintf(stderr, "edgefleet-server: user %s already exists; nothing changed\n", *name)
		return nil
	case err != nil:
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(stderr, "edgefleet-server: created %s %s in %s\n", role, *name, *dataDir)
	if *tokenFile != "" {
		tok, _, err := a.CreateToken(ctx, *name, "init", role)
		if err != nil {
			return fmt.Errorf("init: create token: %w", err)
		}
		if err := os.WriteFile(*tokenFile, []byte(tok.Reveal()+"\n"), 0o600); err != nil {
			return fmt.Errorf("init: write token: %w", err)
		}
		fmt.Fprintf(stderr, "edgefleet-server: wrote an API token to %s (EDGEFLEET_TOKEN=$(cat %s))\n", *tokenFile, *tokenFile)
	}
	return nil
}
