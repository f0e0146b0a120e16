package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/store"
)

func TestInit(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, tokFile := filepath.Join(dir, "data"), filepath.Join(dir, "token")
	var errOut bytes.Buffer
	if err := initCmd([]string{"--data-dir", data, "--admin", "ops", "--password-file", pwFile, "--token-file", tokFile}, nil, &errOut); err != nil {
		t.Fatalf("init: %v\n%s", err, errOut.String())
	}
	// A second run refuses, unless told an existing user is fine.
	if err := initCmd([]string{"--data-dir", data, "--admin", "ops", "--password-file", pwFile}, nil, &errOut); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v", err)
	}
	if err := initCmd([]string{"--data-dir", data, "--admin", "ops", "--password-file", pwFile, "--exists-ok"}, nil, &errOut); err != nil {
		t.Fatalf("second init with --exists-ok: %v", err)
	}
	// The password from standard input.
	if err := initCmd([]string{"--data-dir", data, "--admin", "viewer1", "--role", "viewer"}, strings.NewReader("viewer-pass\n"), &errOut); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		args []string
		in   string
		want string
	}{
		{[]string{"--data-dir", data}, "x\n", "--admin NAME is required"},
		{[]string{"--data-dir", data, "--admin", "a"}, "short\n", "password must be 8 to 72 bytes"},
		{[]string{"--data-dir", data, "--admin", "a", "--role", "root"}, "long-enough\n", `role "root" is not`},
		{[]string{"--data-dir", data, "--admin", "a b"}, "long-enough\n", "may contain only"},
		{[]string{"--data-dir", data, "--admin", "a", "--password-file", filepath.Join(dir, "missing")}, "", "--password-file"},
	} {
		err := initCmd(bad.args, strings.NewReader(bad.in), &errOut)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("init %v: %v, want an error with %q", bad.args, err, bad.want)
		}
	}

	st, err := store.Open(filepath.Join(data, "fleet.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := auth.Open(auth.Options{DB: st.DB()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, id, err := a.Login(ctx, "ops", "s3cret-pass", "127.0.0.1"); err != nil || id.Role != auth.RoleAdmin {
		t.Fatalf("login as the new admin: %v %+v", err, id)
	}
	if _, id, err := a.Login(ctx, "viewer1", "viewer-pass", "127.0.0.1"); err != nil || id.Role != auth.RoleViewer {
		t.Fatalf("login as the viewer: %v %+v", err, id)
	}
	tok, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.TokenIdentity(ctx, strings.TrimSpace(string(tok))); err != nil || id.User != "ops" || id.Role != auth.RoleAdmin {
		t.Fatalf("token from --token-file: %v %+v", err, id)
	}
	if fi, _ := os.Stat(tokFile); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode())
	}
	// With users, a server start makes no one-time admin.
	if _, _, created, err := a.EnsureAdmin(ctx); err != nil || created {
		t.Fatalf("EnsureAdmin after init: created=%v %v", created, err)
	}
}
