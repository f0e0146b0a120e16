package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

func init() {
	register("bench", "measure load time and latency of a model", runBench)
}

// benchOut receives bench's report; tests replace it.
var benchOut io.Writer = os.Stdout

// maxBenchRuns bounds --runs and --warmup.
const maxBenchRuns = 1_000_000

// benchResult is what bench reports; --json prints it as one object.
type benchResult struct {
	Model        string  `json:"model"`
	Backend      string  `json:"backend"`
	Runs         int     `json:"runs"`
	Threads      int     `json:"threads"`
	LoadMS       float64 `json:"load_ms"`
	P50MS        float64 `json:"p50_ms"`
	P95MS        float64 `json:"p95_ms"`
	P99MS        float64 `json:"p99_ms"`
	MinMS        float64 `json:"min_ms"`
	MaxMS        float64 `json:"max_ms"`
	AllocsPerRun float64 `json:"allocs_per_run"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var bf backendFlags
	bf.register(fs)
	runs := fs.Int("runs", 100, "timed inferences")
	warmup := fs.Int("warmup", 10, "untimed inferences first")
	asJSON := fs.Bool("json", false, "print one JSON object")
	var inputs listFlag
	fs.Var(&inputs, "input", "raw input tensor `file` per model input (default: zeros)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *runs > maxBenchRuns || *warmup < 0 || *warmup > maxBenchRuns {
		return fmt.Errorf("--runs must be 1..%d and --warmup 0..%d", maxBenchRuns, maxBenchRuns)
	}
	start := time.Now()
	m, be, err := bf.open(ctx)
	if err != nil {
		return err
	}
	load := time.Since(start)
	defer m.Close()
	infos := m.Inputs()
	if len(inputs) != 0 && len(inputs) != len(infos) {
		return fmt.Errorf("the model has %d inputs, got %d --input files", len(infos), len(inputs))
	}
	ins := make([]runtime.Tensor, len(infos))
	for i, info := range infos {
		var data []byte
		if len(inputs) > 0 {
			if data, err = readLimited(inputs[i], maxModelBytes); err != nil {
				return err
			}
		} else {
			shape := append([]int(nil), info.Shape...)
			for j, d := range shape {
				if d < 0 {
					shape[j] = 1
				}
			}
			n := runtime.ByteSize(info.DType, shape)
			if n < 0 {
				return fmt.Errorf("input %q has no usable shape %v", info.Name, info.Shape)
			}
			data = make([]byte, n)
		}
		if ins[i], err = tensorFor(info, data, "input "+strconv.Itoa(i)); err != nil {
			return err
		}
	}
	s, err := m.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	outs := make([]runtime.Tensor, len(m.Outputs()))
	for range *warmup {
		if err := s.Run(ctx, ins, outs); err != nil {
			return err
		}
	}
	lat := make([]time.Duration, *runs)
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	for i := range lat {
		t := time.Now()
		if err := s.Run(ctx, ins, outs); err != nil {
			return err
		}
		lat[i] = time.Since(t)
	}
	goruntime.ReadMemStats(&after)
	if err := ctx.Err(); err != nil {
		return err
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
	r := benchResult{
		Model: bf.model, Backend: be.Name(), Runs: *runs, Threads: bf.threads,
		LoadMS: ms(load),
		P50MS:  ms(percentile(lat, 50)), P95MS: ms(percentile(lat, 95)), P99MS: ms(percentile(lat, 99)),
		MinMS: ms(lat[0]), MaxMS: ms(lat[len(lat)-1]),
		AllocsPerRun: float64(after.Mallocs-before.Mallocs) / float64(*runs),
		PeakRSSBytes: peakRSS(),
	}
	if *asJSON {
		return json.NewEncoder(benchOut).Encode(r)
	}
	fmt.Fprintf(benchOut, "model      %s\nbackend    %s (%d thread(s))\nload       %.3f ms\nruns       %d after %d warm-up\n", r.Model, r.Backend, r.Threads, r.LoadMS, r.Runs, *warmup)
	fmt.Fprintf(benchOut, "latency    p50 %.3f ms  p95 %.3f ms  p99 %.3f ms  (min %.3f, max %.3f)\n", r.P50MS, r.P95MS, r.P99MS, r.MinMS, r.MaxMS)
	fmt.Fprintf(benchOut, "allocs     %.1f per run\npeak RSS   %.1f MiB\n", r.AllocsPerRun, float64(r.PeakRSSBytes)/(1<<20))
	return nil
}

// percentile returns the p-th percentile of sorted durations (nearest
// rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// peakRSS reads the process's resident-set high-water mark (VmHWM) from
// /proc; 0 where /proc is absent.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}
