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
)

// sharedModel returns a shared model folder, skipping when the shared
// models are absent.
func sharedModel(t *testing.T, name string) string {
	t.Helper()
	root := os.Getenv("EDGEFLEET_SHARED_MODELS")
	if root == "" {
		root = filepath.Join("..", "..", "..", "shared", "models")
	}
	dir := filepath.Join(root, name)
	if _, err := os.Stat(filepath.Join(dir, "model.tflite")); err != nil {
		t.Skipf("shared model %s not found (set EDGEFLEET_SHARED_MODELS): %v", name, err)
	}
	return dir
}

func quiet(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := benchOut
	benchOut = &buf
	t.Cleanup(func() { benchOut = old })
	return &buf
}

// TestInferSharedCase runs infer on the shared person-detection cases and
// compares the written outputs with LiteRT's, byte for byte.
func TestInferSharedCase(t *testing.T) {
	dir := sharedModel(t, "tflm_person_detect_int8")
	quiet(t)
	for _, c := range []string{"person", "no_person"} {
		out := t.TempDir()
		err := runInfer(context.Background(), []string{
			"--model", filepath.Join(dir, "model.tflite"),
			"--input", filepath.Join(dir, "cases", c, "input_0.bin"),
			"--output-dir", out, "--backend", "tflite", "--set", "rounding=litert",
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, "output_0.bin"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(dir, "cases", c, "output_0.litertjs.bin"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %s: infer wrote %v, LiteRT gives %v", c, got, want)
		}
	}
}

func TestInferErrors(t *testing.T) {
	dir := sharedModel(t, "tflm_person_detect_int8")
	quiet(t)
	model := filepath.Join(dir, "model.tflite")
	short := filepath.Join(t.TempDir(), "short.bin")
	if err := os.WriteFile(short, []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"--output-dir", t.TempDir()}, "--model is required"},
		{[]string{"--model", model}, "--output-dir is required"},
		{[]string{"--model", model, "--output-dir", t.TempDir()}, "has 1 inputs"},
		{[]string{"--model", model, "--input", short, "--output-dir", t.TempDir()}, "has 3 bytes"},
		{[]string{"--model", model, "--input", short, "--output-dir", t.TempDir(), "--backend", "nosuch"}, "unknown inference backend"},
		{[]string{"--model", model, "--input", short, "--output-dir", t.TempDir(), "--set", "novalue"}, "key=value"},
	}
	for _, c := range cases {
		err := runInfer(context.Background(), c.args)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("infer %v: error %v, want one mentioning %q", c.args, err, c.msg)
		}
	}
}

func TestBenchJSON(t *testing.T) {
	dir := sharedModel(t, "tflm_micro_speech_int8")
	buf := quiet(t)
	err := runBench(context.Background(), []string{"--model", filepath.Join(dir, "model.tflite"), "--runs", "20", "--warmup", "2", "--json"})
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
		t.Fatalf("bench --json printed %q: %v", buf, err)
	}
	for _, k := range []string{"load_ms", "p50_ms", "p95_ms", "p99_ms", "allocs_per_run", "peak_rss_bytes"} {
		if _, ok := r[k].(float64); !ok {
			t.Errorf("bench --json lacks numeric %q: %s", k, buf)
		}
	}
	if r["p50_ms"].(float64) <= 0 || r["p50_ms"].(float64) > r["p99_ms"].(float64) {
		t.Errorf("percentiles out of order: %s", buf)
	}
	if r["allocs_per_run"].(float64) != 0 {
		t.Errorf("the built-in engine allocated per run: %s", buf)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 95: 95, 99: 99, 100: 100} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
}

func TestTensorForDynamic(t *testing.T) {
	info := runtime.TensorInfo{Name: "x", DType: runtime.Float32, Shape: []int{-1, 3}}
	tt, err := tensorFor(info, make([]byte, 4*6), "in")
	if err != nil || tt.Shape[0] != 2 || tt.Shape[1] != 3 {
		t.Fatalf("got %v, %v; want shape [2 3]", tt.Shape, err)
	}
	if _, err := tensorFor(info, make([]byte, 4*5), "in"); err == nil {
		t.Fatal("20 bytes accepted for rows of 3 float32")
	}
}
