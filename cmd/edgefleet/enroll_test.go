package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/fleettest"
)

func opCLI(t *testing.T, f *fleettest.Fleet, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := func(k string) string {
		switch k {
		case "EDGEFLEET_SERVER":
			return f.HTTPURL
		case api.TokenEnv:
			return f.Token
		}
		return ""
	}
	err := run(context.Background(), args, env, &out, &errOut)
	return out.String(), err
}

func TestEnrollTokenAndDeviceVerbs(t *testing.T) {
	ctx := context.Background()
	f := fleettest.Start(t, fleettest.WithDeviceAuth())
	out, err := opCLI(t, f, "enroll-token", "create", "--label", "site=lyon", "--group", "canary", "--max-uses", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var tc enroll.TokenCreated
	if err := json.Unmarshal([]byte(out), &tc); err != nil || tc.Secret == "" || tc.Token.MaxUses != 2 || tc.Token.Labels["group"] != "canary" {
		t.Fatalf("create: %s (%v)", out, err)
	}
	if _, err := f.Server.Enrollment().Enrol(ctx, tc.Secret, "gw-1"); err != nil {
		t.Fatal(err)
	}
	out, err = opCLI(t, f, "enroll-token", "list")
	if err != nil || !strings.Contains(out, tc.Token.ID) || !strings.Contains(out, "1/2") || !strings.Contains(out, "site=lyon") {
		t.Fatalf("list: %s %v", out, err)
	}
	if out, err = opCLI(t, f, "enroll-token", "revoke", tc.Token.ID); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s %v", out, err)
	}
	if _, err := f.Server.Enrollment().Enrol(ctx, tc.Secret, "gw-2"); err == nil {
		t.Fatal("a revoked token still enrols")
	}

	// A device without a token waits; the operator accepts it.
	if _, err := f.Server.Enrollment().Request(ctx, "gw-p", "key-of-gw-p-0123456789"); err == nil {
		t.Fatal("request without token was not pending")
	}
	if out, err = opCLI(t, f, "devices", "pending"); err != nil || !strings.Contains(out, "gw-p") || strings.Contains(out, "gw-1") {
		t.Fatalf("pending: %s %v", out, err)
	}
	if out, err = opCLI(t, f, "devices", "accept", "gw-p"); err != nil || !strings.Contains(out, "gw-p is now accepted") {
		t.Fatalf("accept: %s %v", out, err)
	}
	if out, err = opCLI(t, f, "devices", "revoke", "gw-1"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s %v", out, err)
	}
	if _, err = opCLI(t, f, "devices", "accept", "nobody"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("accept unknown: %v", err)
	}
	out, err = opCLI(t, f, "devices", "preauthorize", "gw-f", "--label", "line=3")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil || raw["device_id"] != "gw-f" || raw["secret"] == "" || raw["broker_url"] != f.MQTTURL {
		t.Fatalf("preauthorize: %s %v", out, err)
	}
	// Without an operator token the routes are refused (fleettest puts
	// its token in the process environment, so use a bare client).
	bare, err := enroll.NewClient(f.HTTPURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Tokens(ctx); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("token list without an operator token: %v", err)
	}
}
