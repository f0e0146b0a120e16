// Package runtimetest is the conformance suite every inference backend runs
// from its own tests, in the manner of testing/slogtest: one call,
//
//	runtimetest.Run(t, backend, runtimetest.Options{Format: "tflite"})
//
// opens every model of that format in the shared models directory
// (../shared/models or $EDGEFLEET_SHARED_MODELS; see its README), checks the
// inputs and outputs it reports, runs every case against the reference
// outputs of real runtimes, and checks what a gateway relies on beyond
// correct numbers: sessions running concurrently, a model closed while busy,
// bad inputs rejected with runtime.ErrInput, and truncated or corrupted model
// files refused or run without a panic or a hang.
//
// The shared models are read in place and never copied into the repository.
package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// Options select the models and tune the suite.
type Options struct {
	// Format is the model format to test: "tflite" or "onnx".
	Format string
	// Skip maps a model name ("tflm_person_detect_int8") or a model and case
	// ("tflm_person_detect_int8/person") to the reason it is skipped.
	Skip map[string]string
	// Open is passed to Backend.Open.
	Open runtime.Options
	// Uint8Steps is how far uint8 TFLite outputs may be from the reference
	// (README: "a few steps"); 0 means 2.
	Uint8Steps int
	// Goroutines is the number of concurrent sessions; 0 means 4.
	Goroutines int
	// Corrupt is the number of byte-flipped variants tried per model, besides
	// the truncated ones; 0 means 8, negative means none at all.
	Corrupt int
	// Seed makes the corrupted variants reproducible; 0 means 1.
	Seed uint64
	// Timeout bounds each open and run; longer means the backend hung.
	// 0 means 2 minutes.
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Uint8Steps == 0 {
		o.Uint8Steps = 2
	}
	if o.Goroutines <= 0 {
		o.Goroutines = 4
	}
	if o.Corrupt == 0 {
		o.Corrupt = 8
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	return o
}

// tester is the part of *testing.T the suite uses. It exists so that the
// suite's own tests can run it against broken backends and see it fail.
type tester interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Run(name string, f func(t tester)) bool
}

type realT struct{ *testing.T }

func (r realT) Run(name string, f func(t tester)) bool {
	return r.T.Run(name, func(t *testing.T) { f(realT{t}) })
}

// Run runs the conformance suite for backend b over the shared models of
// opts.Format. It skips when the shared models are absent or the backend is
// unavailable, and fails when there is no model of that format at all.
// Subtests are named by model and case, e.g. Run/tflm_hello_world_int8/x_1.0000.
func Run(t *testing.T, b runtime.Backend, opts Options) {
	t.Helper()
	dir := Dir(t)
	run(realT{t}, dir, b, opts)
}

func run(t tester, dir string, b runtime.Backend, opts Options) {
	t.Helper()
	opts = opts.withDefaults()
	if opts.Format == "" {
		t.Fatalf("runtimetest: Options.Format is empty; set it to \"tflite\" or \"onnx\"")
	}
	if !slices.Contains(b.Formats(), opts.Format) {
		t.Fatalf("backend %s runs %v, not %q", b.Name(), b.Formats(), opts.Format)
	}
	if err := b.Available(); err != nil {
		t.Skipf("backend %s is unavailable: %v", b.Name(), err)
	}
	models, err := loadModels(dir, opts.Format)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(models) == 0 {
		t.Fatalf("no %s models in %s", opts.Format, dir)
	}
	s := suite{b: b, opts: opts}
	for _, m := range models {
		t.Run(m.Name, func(t tester) { s.model(t, m) })
	}
	// Closing while busy is about the backend, not a model: the smallest
	// model that is not skipped is enough and keeps it quick.
	var small *Model
	var smallSize int64
	for i, m := range models {
		if _, skip := opts.Skip[m.Name]; skip || len(m.Cases) == 0 {
			continue
		}
		if st, err := os.Stat(m.Path); err == nil && (small == nil || st.Size() < smallSize) {
			small, smallSize = &models[i], st.Size()
		}
	}
	t.Run("close_while_busy", func(t tester) {
		if small == nil {
			t.Skipf("every model is skipped")
		}
		s.closeWhileBusy(t, *small)
	})
}

type suite struct {
	b    runtime.Backend
	opts Options
}

func (s suite) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opts.Timeout)
}

func (s suite) model(t tester, m Model) {
	if reason, ok := s.opts.Skip[m.Name]; ok {
		t.Skipf("skipped: %s", reason)
	}
	data, err := os.ReadFile(m.Path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	mod, err := s.b.Open(ctx, data, s.opts.Open)
	if err != nil {
		t.Fatalf("Open %s: %v", m.Path, err)
	}
	defer func() {
		if err := mod.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	t.Run("io", func(t tester) { checkInfos(t, m, mod) })

	// Outputs of each case as this backend computed them, for the
	// concurrent runs to agree with.
	seq := make([][]runtime.Tensor, len(m.Cases))
	for i, c := range m.Cases {
		t.Run(c.Name, func(t tester) {
			if reason, ok := s.opts.Skip[m.Name+"/"+c.Name]; ok {
				t.Skipf("skipped: %s", reason)
			}
			seq[i] = s.runCase(t, m, mod, c)
		})
	}
	t.Run("bad_input", func(t tester) { s.badInput(t, m, mod) })
	t.Run("concurrent", func(t tester) { s.concurrent(t, mod, m, seq) })
	t.Run("corrupt", func(t tester) { s.corrupt(t, m, data) })
}

// checkInfos compares what the backend reports with meta.json.
func checkInfos(t tester, m Model, mod runtime.Model) {
	t.Helper()
	check := func(kind string, got []runtime.TensorInfo, want []Info) {
		if len(got) != len(want) {
			t.Errorf("%d %ss, meta.json has %d: got %v", len(got), kind, len(want), got)
			return
		}
		for i, w := range want {
			g := got[i]
			if g.Name != w.Name {
				t.Errorf("%s %d is named %q, want %q", kind, i, g.Name, w.Name)
			}
			if g.DType != w.DType {
				t.Errorf("%s %d (%s) is %s, want %s", kind, i, w.Name, g.DType, w.DType)
			}
			if !shapeMatches(g.Shape, w) {
				t.Errorf("%s %d (%s) has shape %v, want %v (-1 for symbolic dimensions %v)", kind, i, w.Name, g.Shape, w.Shape, w.DimNames)
			}
			if w.Quant != nil && m.Format == "tflite" {
				switch {
				case g.Quant == nil:
					t.Errorf("%s %d (%s) has no quantization, want scale %v zero point %v", kind, i, w.Name, w.Quant.Scale, w.Quant.ZeroPoint)
				case !slices.Equal(g.Quant.Scale, w.Quant.Scale) || !slices.Equal(g.Quant.ZeroPoint, w.Quant.ZeroPoint):
					t.Errorf("%s %d (%s) quantization scale %v zero point %v, want %v %v", kind, i, w.Name, g.Quant.Scale, g.Quant.ZeroPoint, w.Quant.Scale, w.Quant.ZeroPoint)
				}
			}
		}
	}
	check("input", mod.Inputs(), m.Inputs)
	check("output", mod.Outputs(), m.Outputs)
}

// shapeMatches accepts -1 where meta.json names a dimension or where the
// TFLite shape_signature marks it dynamic, and the exact size elsewhere.
func shapeMatches(got []int, want Info) bool {
	if len(got) != len(want.Shape) {
		return false
	}
	for i, w := range want.Shape {
		dynamic := w < 0 || (i < len(want.Signature) && want.Signature[i] < 0)
		switch {
		case got[i] == w && w >= 0:
		case got[i] == -1 && dynamic:
		default:
			return false
		}
	}
	return true
}

// runCase runs one case twice on one session, the second time reusing the
// output tensors, and compares both with the reference.
func (s suite) runCase(t tester, m Model, mod runtime.Model, c Case) []runtime.Tensor {
	t.Helper()
	sess, err := mod.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	defer sess.Close()
	ctx, cancel := s.ctx()
	defer cancel()
	outs := make([]runtime.Tensor, len(mod.Outputs()))
	if err := sess.Run(ctx, c.Inputs, outs); err != nil {
		t.Fatalf("Run: %v", err)
	}
	first := cloneTensors(outs)
	for i, want := range c.Want {
		d := compare(m.Format, outs[i], want, s.opts.Uint8Steps)
		if d.mismatch != "" {
			t.Errorf("output %d (%s) vs %s: %s", i, m.Outputs[i].Name, c.Reference, d.mismatch)
			continue
		}
		switch {
		case want.DType == runtime.Uint8 && m.Format == "tflite":
			t.Logf("output %d vs %s: largest difference %d steps", i, c.Reference, d.maxSteps)
		case d.maxRel > 0:
			t.Logf("output %d vs %s: largest relative difference %.3g", i, c.Reference, d.maxRel)
		}
	}
	for _, rt := range keys(c.Others) {
		for i, want := range c.Others[rt] {
			if d := compare(m.Format, outs[i], want, s.opts.Uint8Steps); d.mismatch != "" {
				t.Logf("output %d vs %s (informational): %s", i, rt, d.mismatch)
			}
		}
	}
	// Run again into the same tensors: reused buffers must not leak the
	// previous run's data or shapes.
	if err := sess.Run(ctx, c.Inputs, outs); err != nil {
		t.Fatalf("second Run on the same session: %v", err)
	}
	for i := range outs {
		if !tensorEqual(outs[i], first[i]) {
			t.Errorf("output %d differs between two runs of the same session with the same input", i)
		}
	}
	return first
}

// badInput feeds inputs of the wrong dtype, rank, dimension, size and
// count; each must fail with runtime.ErrInput, and the session must still
// work afterwards.
func (s suite) badInput(t tester, m Model, mod runtime.Model) {
	if len(m.Cases) == 0 || len(m.Inputs) == 0 {
		t.Skipf("no case to derive bad inputs from")
	}
	c := m.Cases[0]
	sess, err := mod.NewSession()
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	defer sess.Close()
	ctx, cancel := s.ctx()
	defer cancel()
	outs := make([]runtime.Tensor, len(m.Outputs))
	with := func(t0 runtime.Tensor) []runtime.Tensor {
		in := slices.Clone(c.Inputs)
		in[0] = t0
		return in
	}
	in0 := c.Inputs[0]
	type bad struct {
		name string
		in   []runtime.Tensor
		outs []runtime.Tensor
	}
	var cases []bad
	other := runtime.Float32
	if in0.DType == runtime.Float32 {
		other = runtime.Int32
	}
	cases = append(cases,
		bad{"dtype", with(runtime.Tensor{DType: other, Shape: in0.Shape, Data: make([]byte, runtime.ByteSize(other, in0.Shape))}), outs},
		bad{"rank", with(runtime.Tensor{DType: in0.DType, Shape: append(slices.Clone(in0.Shape), 1), Data: in0.Data}), outs},
		bad{"count", c.Inputs[:len(c.Inputs)-1], outs},
		bad{"outputs", c.Inputs, make([]runtime.Tensor, len(m.Outputs)+1)},
	)
	if len(in0.Data) > 0 {
		cases = append(cases, bad{"size", with(runtime.Tensor{DType: in0.DType, Shape: in0.Shape, Data: in0.Data[:len(in0.Data)-1]}), outs})
	}
	for i, d := range m.Inputs[0].Shape {
		if d > 0 {
			shape := slices.Clone(in0.Shape)
			shape[i] = d + 1
			cases = append(cases, bad{"dim", with(runtime.Tensor{DType: in0.DType, Shape: shape, Data: make([]byte, runtime.ByteSize(in0.DType, shape))}), outs})
			break
		}
	}
	for _, bc := range cases {
		err := sess.Run(ctx, bc.in, bc.outs)
		switch {
		case err == nil:
			t.Errorf("%s: Run with %s succeeded, want an error wrapping runtime.ErrInput", bc.name, describe(bc.in, len(bc.outs)))
		case !errors.Is(err, runtime.ErrInput):
			t.Errorf("%s: Run with %s: %v, want an error wrapping runtime.ErrInput", bc.name, describe(bc.in, len(bc.outs)), err)
		default:
			t.Logf("%s: %v", bc.name, err)
		}
	}
	if err := sess.Run(ctx, c.Inputs, outs); err != nil {
		t.Errorf("good Run after bad inputs: %v", err)
	}
}

func describe(in []runtime.Tensor, nout int) string {
	var b bytes.Buffer
	for i, t := range in {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s%v (%d bytes)", t.DType, t.Shape, len(t.Data))
	}
	fmt.Fprintf(&b, " and %d outputs", nout)
	return b.String()
}

// concurrent runs every case from several goroutines, each with its own
// session, and expects the outputs the sequential runs produced.
func (s suite) concurrent(t tester, mod runtime.Model, m Model, seq [][]runtime.Tensor) {
	var idx []int
	for i := range m.Cases {
		if seq[i] != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		t.Skipf("no case ran sequentially")
	}
	ctx, cancel := s.ctx()
	defer cancel()
	const rounds = 2
	errs := make([]error, s.opts.Goroutines)
	var wg sync.WaitGroup
	for g := range s.opts.Goroutines {
		wg.Go(func() {
			sess, err := mod.NewSession()
			if err != nil {
				errs[g] = fmt.Errorf("NewSession: %w", err)
				return
			}
			defer sess.Close()
			outs := make([]runtime.Tensor, len(m.Outputs))
			for r := range rounds {
				for k := range idx {
					// Goroutines start on different cases so that different
					// inputs are in flight at once.
					i := idx[(k+g)%len(idx)]
					if err := sess.Run(ctx, m.Cases[i].Inputs, outs); err != nil {
						errs[g] = fmt.Errorf("round %d case %s: %w", r, m.Cases[i].Name, err)
						return
					}
					for o := range outs {
						if !tensorEqual(outs[o], seq[i][o]) {
							errs[g] = fmt.Errorf("round %d case %s: output %d differs from the sequential run", r, m.Cases[i].Name, o)
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d of %d: %v", g, s.opts.Goroutines, err)
		}
	}
}

// closeWhileBusy closes a model while sessions run on it: no crash, the
// close completes, and runs after it return runtime.ErrClosed.
func (s suite) closeWhileBusy(t tester, m Model) {
	data, err := os.ReadFile(m.Path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	mod, err := s.b.Open(ctx, data, s.opts.Open)
	if err != nil {
		t.Fatalf("Open %s: %v", m.Name, err)
	}
	in := m.Cases[0].Inputs
	n := s.opts.Goroutines
	ready := make(chan struct{}, n)
	closed := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var once sync.Once
			signal := func() { once.Do(func() { ready <- struct{}{} }) }
			defer signal()
			sess, err := mod.NewSession()
			if err != nil {
				errs <- fmt.Errorf("NewSession before Close: %w", err)
				return
			}
			defer sess.Close()
			outs := make([]runtime.Tensor, len(m.Outputs))
			for {
				err := sess.Run(ctx, in, outs)
				if errors.Is(err, runtime.ErrClosed) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("Run while the model closes: %v, want success or runtime.ErrClosed", err)
					return
				}
				signal()
				select {
				case <-closed:
					// Close has returned, so this run starts after it.
					if err := sess.Run(ctx, in, outs); !errors.Is(err, runtime.ErrClosed) {
						errs <- fmt.Errorf("Run after the model's Close returned: %v, want runtime.ErrClosed", err)
					}
					return
				case <-ctx.Done():
					errs <- fmt.Errorf("still running at the deadline: %w", ctx.Err())
					return
				default:
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	for range n {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatalf("sessions did not complete a first run within %v", s.opts.Timeout)
		}
	}
	closeErr := make(chan error, 1)
	go func() { closeErr <- mod.Close() }()
	select {
	case err := <-closeErr:
		if err != nil {
			t.Errorf("Close while busy: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("Close while sessions run did not return within %v", s.opts.Timeout)
	}
	close(closed)
	select {
	case <-finished:
	case <-ctx.Done():
		t.Fatalf("sessions did not stop within %v of Close", s.opts.Timeout)
	}
	close(errs)
	for err := range errs {
		t.Errorf("%v", err)
	}
	if sess, err := mod.NewSession(); !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("NewSession after Close: %v, want runtime.ErrClosed", err)
		if sess != nil {
			sess.Close()
		}
	}
	if err := mod.Close(); err != nil && !errors.Is(err, runtime.ErrClosed) {
		t.Errorf("second Close: %v, want nil or runtime.ErrClosed", err)
	}
}

// corrupt opens truncated and byte-flipped copies of the model file. Each
// must either fail to open with an error or open into a model that runs (or
// refuses to) without a panic or a hang. The variants are a fixed set drawn
// from a seeded generator, so a failure names a reproducible variant.
func (s suite) corrupt(t tester, m Model, data []byte) {
	if s.opts.Corrupt < 0 {
		t.Skipf("Options.Corrupt < 0")
	}
	type variant struct {
		name string
		data []byte
	}
	var vs []variant
	n := len(data)
	seen := map[int]bool{}
	for _, p := range []int{0, 1, 4, 16, 64, n / 8, n / 2, n - 1} {
		if p >= 0 && p < n && !seen[p] {
			seen[p] = true
			vs = append(vs, variant{fmt.Sprintf("prefix_%d_of_%d", p, n), data[:p:p]})
		}
	}
	h := fnv.New64a()
	h.Write([]byte(m.Name))
	rng := rand.New(rand.NewPCG(s.opts.Seed, h.Sum64()))
	for i := range s.opts.Corrupt {
		d := bytes.Clone(data)
		// Half the variants hit the first bytes, where the headers and
		// tables are; the rest anywhere.
		span := n
		if i%2 == 0 {
			span = min(n, 256)
		}
		var at []int
		for range 1 + rng.IntN(4) {
			p := rng.IntN(span)
			d[p] ^= byte(1 + rng.IntN(255))
			at = append(at, p)
		}
		vs = append(vs, variant{fmt.Sprintf("flip_%d_at_%v", i, at), d})
	}
	opened := 0
	for _, v := range vs {
		err := s.tryCorrupt(m, v.data)
		switch {
		case errors.Is(err, errOpened):
			opened++
		case err != nil:
			t.Errorf("%s: %v", v.name, err)
		}
	}
	t.Logf("%d corrupted variants: %d refused at Open, %d opened and ran or refused to run", len(vs), len(vs)-opened, opened)
}

// tryCorrupt returns nil when Open refused the model with an error,
// errOpened when it opened and then behaved, and any other error for a
// panic or a hang.
func (s suite) tryCorrupt(m Model, data []byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("panic: %v", p)
			}
		}()
		mod, err := s.b.Open(ctx, data, s.opts.Open)
		if err != nil {
			if mod != nil {
				done <- fmt.Errorf("Open returned both a model and the error %v", err)
				return
			}
			done <- nil
			return
		}
		defer mod.Close()
		sess, err := mod.NewSession()
		if err != nil {
			done <- errOpened
			return
		}
		defer sess.Close()
		in := inputsFor(mod.Inputs(), m)
		if in != nil {
			// Any error is fine; the model is broken.
			_ = sess.Run(ctx, in, make([]runtime.Tensor, len(mod.Outputs())))
		}
		done <- errOpened
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %v: the backend hangs", s.opts.Timeout)
	}
}

// maxCorruptInput bounds the inputs made up for a corrupted model, whose
// reported shapes may be absurd.
const maxCorruptInput = 64 << 20

// inputsFor returns the first case's inputs when they fit the (possibly
// corrupted) model's inputs, else zeros of its shapes with dynamic
// dimensions as 1, or nil when those would be too large.
func inputsFor(infos []runtime.TensorInfo, m Model) []runtime.Tensor {
	if len(m.Cases) > 0 && len(m.Cases[0].Inputs) == len(infos) {
		ok := true
		for i, info := range infos {
			if runtime.CheckInput(info, m.Cases[0].Inputs[i]) != nil {
				ok = false
				break
			}
		}
		if ok {
			return m.Cases[0].Inputs
		}
	}
	in := make([]runtime.Tensor, len(infos))
	total := 0
	for i, info := range infos {
		shape := slices.Clone(info.Shape)
		for j, d := range shape {
			if d < 0 {
				shape[j] = 1
			}
		}
		size := runtime.ByteSize(info.DType, shape)
		if size < 0 || size > maxCorruptInput-total {
			return nil
		}
		total += size
		in[i] = runtime.Tensor{DType: info.DType, Shape: shape, Data: make([]byte, size)}
	}
	return in
}

func cloneTensors(ts []runtime.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ts))
	for i, t := range ts {
		out[i] = runtime.Tensor{DType: t.DType, Shape: slices.Clone(t.Shape), Data: bytes.Clone(t.Data)}
	}
	return out
}

func tensorEqual(a, b runtime.Tensor) bool {
	return a.DType == b.DType && slices.Equal(a.Shape, b.Shape) && bytes.Equal(a.Data, b.Data)
}
