package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/serve"
	"github.com/edgefleet/edgefleet/models"
)

// TestInferThroughAPI runs infer against a serving local API (on a unix
// socket) with the same input file and output layout as a local run.
func TestInferThroughAPI(t *testing.T) {
	demo, err := models.DemoModel("vibration-anomaly", "1.0.0", "tflite")
	if err != nil {
		t.Fatal(err)
	}
	m, err := tflite.New(runtime.Config{}).Open(context.Background(), demo.Model, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	srv := serve.New(serve.Options{Addr: "-", Socket: sock})
	if err := srv.Swap("vibration-anomaly", "1.0.0", m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 500 {
			t.Fatal("the API socket never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}

	in := filepath.Join(t.TempDir(), "input_0.bin")
	if err := os.WriteFile(in, demo.SampleInput, 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	log := quiet(t)
	if err := runInfer(context.Background(), []string{"--socket", sock, "--name", "vibration-anomaly", "--input", in, "--output-dir", out}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "output_0.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, demo.ExpectedOutput) {
		t.Fatalf("infer through the API wrote %v, want %v", got, demo.ExpectedOutput)
	}
	if !strings.Contains(log.String(), "served by vibration-anomaly 1.0.0") {
		t.Errorf("infer did not say which version served it: %q", log.String())
	}

	err = runInfer(context.Background(), []string{"--socket", sock, "--input", in, "--output-dir", out})
	if err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("infer --socket without --name: %v, want an error naming --name", err)
	}
	err = runInfer(context.Background(), []string{"--socket", sock, "--name", "nope", "--input", in, "--output-dir", out})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("infer of an unknown model: %v, want an error naming it", err)
	}
}
