package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
	"github.com/edgefleet/edgefleet/agent/runtime/tflite"
	"github.com/edgefleet/edgefleet/agent/serve"
)

// serveDemo serves the vibration-anomaly demo model on the built-in engine
// over loopback TCP and a unix socket until the test ends.
func serveDemo(t *testing.T) (url, socket string, input []byte) {
	t.Helper()
	base := filepath.Join("..", "..", "models", "demo", "vibration-anomaly-1.0.0")
	model, err := os.ReadFile(base + ".tflite")
	if err != nil {
		t.Fatalf("demo model: %v", err)
	}
	if input, err = os.ReadFile(base + ".input.bin"); err != nil {
		t.Fatal(err)
	}
	m, err := tflite.New(runtime.Config{}).Open(context.Background(), model, runtime.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := serve.New(serve.Options{Workers: 1})
	if err := s.Swap("vibration-anomaly", "1.0.0", m); err != nil {
		t.Fatal(err)
	}
	ln, err := serve.ListenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "eflt")
	if err != nil {
		t.Fatal(err)
	}
	socket = filepath.Join(dir, "api.sock")
	uln, err := serve.ListenUnix(socket, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, uln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		s.Close()
		os.RemoveAll(dir)
	})
	return "http://" + ln.Addr().String(), socket, input
}

func TestLoadtest(t *testing.T) {
	url, socket, input := serveDemo(t)
	in := filepath.Join(t.TempDir(), "input.bin")
	if err := os.WriteFile(in, input, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"tcp binary", []string{"--url", url, "--input", in}},
		{"socket json zeros", []string{"--socket", socket, "--form", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			loadtestOut = &out
			defer func() { loadtestOut = os.Stdout }()
			args := append([]string{"--model", "vibration-anomaly", "--concurrency", "2", "--duration", "300ms", "--json"}, tc.args...)
			if err := runLoadtest(context.Background(), args); err != nil {
				t.Fatal(err)
			}
			var rep loadReport
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("%v in %s", err, out.String())
			}
			if rep.OK == 0 || rep.Errors != 0 || rep.Version != "1.0.0" || rep.Throughput <= 0 {
				t.Errorf("report %+v", rep)
			}
			if !(rep.P50 > 0 && rep.P50 <= rep.P95 && rep.P95 <= rep.P99 && rep.P99 <= rep.Max) {
				t.Errorf("percentiles out of order: %v %v %v %v", rep.P50, rep.P95, rep.P99, rep.Max)
			}
		})
	}
	var out bytes.Buffer
	loadtestOut = &out
	defer func() { loadtestOut = os.Stdout }()
	if err := runLoadtest(context.Background(), []string{"--url", url, "--model", "vibration-anomaly", "--duration", "100ms"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"throughput", "p50", "p99", "rejected (429)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestLoadtestErrors(t *testing.T) {
	url, _, _ := serveDemo(t)
	short := filepath.Join(t.TempDir(), "short.bin")
	if err := os.WriteFile(short, []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--model", "m"}, "--url and --socket"},
		{[]string{"--url", url}, "--model is required"},
		{[]string{"--url", url, "--model", "m", "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"--url", url, "--model", "nope"}, `"nope"`},
		{[]string{"--url", url, "--model", "vibration-anomaly", "--input", short}, "has 3 bytes"},
		{[]string{"--url", "ftp://x", "--model", "m"}, "base URL"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := runLoadtest(ctx, append(tc.args, "--duration", "50ms"))
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%v: %v, want an error saying %s", tc.args, err, tc.says)
		}
	}
}
