package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/fleet/rollout"
)

func TestModelPushAndRollout(t *testing.T) {
	f := startFleet(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "kws.tflite")
	in, want := filepath.Join(dir, "in.bin"), filepath.Join(dir, "out.bin")
	for p, b := range map[string]string{file: strings.Repeat("m", 3<<20), in: "1234", want: "ab"} {
		if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A 3 MiB model passes the server's 1 MiB bound on other bodies.
	out, errOut, err := cli(t, f, "model", "push", file, "--name", "kws", "--version", "2.0.0", "--precision", "int8",
		"--profile", "raspberry-pi-4", "--sample-input", in, "--expected-output", want, "--json")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, errOut)
	}
	var v registry.Version
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version != "2.0.0" || v.Variants[0].Artifact.Size != 3<<20 || v.Variants[0].SelfTest == nil {
		t.Fatalf("pushed %+v %v", v, err)
	}
	if errOut != "" {
		t.Errorf("progress bar drawn on a non-terminal: %q", errOut)
	}
	if _, _, err := cli(t, f, "model", "push", file, "--name", "kws", "--version", "2.0.0", "--precision", "fp16"); err == nil || !strings.Contains(err.Error(), "2.0.0") {
		t.Fatalf("re-push with other content: %v", err)
	}

	out, errOut, err = cli(t, f, "rollout", "create", "--model", "kws", "--version", "2.0.0", "--selector", "site=north", "--phases", "100%", "--bake", "1h", "--json")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, errOut)
	}
	var st rollout.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Targets != 1 || st.Incompatible != 1 {
		t.Fatalf("created %+v %v (gw-a fits, gw-c is generic-amd64)", st.Rollout, err)
	}
	out, _, err = cli(t, f, "rollout", "status")
	if err != nil || !strings.Contains(out, st.ID) || !strings.Contains(out, "kws") {
		t.Fatalf("status list: %v\n%s", err, out)
	}
	out, _, err = cli(t, f, "rollout", "pause", st.ID, "--reason", "lunch")
	if err != nil || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %v %s", err, out)
	}
	out, _, err = cli(t, f, "rollout", "status", st.ID)
	if err != nil || !strings.Contains(out, "pause by operator admin: lunch") || !strings.Contains(out, "error_rate") {
		t.Fatalf("status:\n%s %v", out, err)
	}
	if _, _, err := cli(t, f, "rollout", "resume", st.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, f, "rollout", "abort", st.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli(t, f, "rollout", "resume", st.ID); err == nil || !strings.Contains(err.Error(), "finished") {
		t.Fatalf("resume after abort: %v", err)
	}
	for _, args := range [][]string{{"rollout"}, {"rollout", "explode"}, {"rollout", "create", "--model", "kws"}, {"rollout", "pause"}, {"model", "push"}, {"model", "push", "x.bin", "--name", "a", "--version", "1.0.0"}} {
		if _, _, err := cli(t, f, args...); err == nil {
			t.Errorf("%v: no error", args)
		} else if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v is not a usage error", args, err)
		}
	}
}
