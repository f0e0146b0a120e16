package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/fleet/registry"
	"github.com/edgefleet/edgefleet/proto"
)

const modelUsage = `  edgefleet model push FILE --name N --version V [--profile P ...] [--sample-input F --expected-output F]
                          [--format tflite|onnx] [--precision int8|fp32|...] [--backend B] [--min-agent ">= 0.3.0"]
                          [--tolerance T] [--source-commit C] [--notes TEXT] [--json]
`

func modelCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "push" {
		return usageError{"model: the only action is push"}
	}
	return modelPush(ctx, args[1:], getenv, stdout, stderr)
}

func modelPush(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edgefleet model push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "model name (required)")
	ver := fs.String("version", "", "version, MAJOR.MINOR.PATCH (required)")
	var profiles stringList
	fs.Var(&profiles, "profile", "firmware profile the variant is built for (repeatable; none = any)")
	format := fs.String("format", "", "tflite or onnx (default from the file extension)")
	precision := fs.String("precision", "fp32", "precision, e.g. int8 or fp32")
	backend := fs.String("backend", "", "backend that runs it (default tflite for tflite, onnxruntime for onnx)")
	minAgent := fs.String("min-agent", "", "agent version constraint, e.g. \">= 0.3.0\"")
	input := fs.String("sample-input", "", "self-test input tensor (raw little-endian bytes)")
	expected := fs.String("expected-output", "", "self-test expected output tensor")
	tolerance := fs.Float64("tolerance", 0, "largest absolute difference allowed per output element")
	commit := fs.String("source-commit", "", "lineage: source commit")
	notes := fs.String("notes", "", "lineage: notes")
	asJSON := fs.Bool("json", false, "print the published version as JSON")
	server := serverFlag(fs, getenv)
	file, err := parseOperand(fs, args, "model push")
	if err != nil {
		return err
	}
	switch {
	case file == "":
		return usageError{"model push: which FILE?"}
	case *name == "" || *ver == "":
		return usageError{"model push: --name and --version are required"}
	case (*input == "") != (*expected == "") && *expected != "":
		return usageError{"model push: --expected-output needs --sample-input"}
	}
	if *format == "" {
		switch strings.ToLower(filepath.Ext(file)) {
		case ".tflite":
			*format = "tflite"
		case ".onnx":
			*format = "onnx"
		default:
			return usageError{fmt.Sprintf("model push: cannot tell the format of %s; give --format tflite or onnx", file)}
		}
	}
	if *backend == "" {
		*backend = map[string]string{"tflite": "tflite", "onnx": "onnxruntime"}[*format]
	}
	spec := registry.VariantSpec{Format: *format, Precision: *precision, Backend: *backend, Profiles: profiles, MinAgentVersion: *minAgent}
	parts := []filePart{{field: "variants[0].artifact", path: file}}
	if *input != "" {
		spec.SelfTest = &proto.SelfTest{Tolerance: *tolerance}
		parts = append(parts, filePart{field: "variants[0].self_test.inputs[0]", path: *input})
		if *expected != "" {
			parts = append(parts, filePart{field: "variants[0].self_test.expected_outputs[0]", path: *expected})
		}
	}
	meta := registry.PublishRequest{Version: *ver, Lineage: proto.Lineage{SourceCommit: *commit, Notes: *notes}, Variants: []registry.VariantSpec{spec}}
	var total int64
	for i, p := range parts {
		st, err := os.Stat(p.path)
		if err != nil {
			return fmt.Errorf("model push: %w", err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("model push: %s is not a regular file", p.path)
		}
		parts[i].size = st.Size()
		total += st.Size()
	}
	base, err := url.Parse(*server)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("server address %q is not an http(s) URL like http://127.0.0.1:8080", *server)
	}
	var bar *progressBar
	if isTerminal(stderr) {
		bar = &progressBar{w: stderr, total: total, label: filepath.Base(file)}
	}
	v, err := upload(ctx, strings.TrimSuffix(*server, "/")+"/api/v1/models/"+url.PathEscape(*name)+"/versions", meta, parts, bar)
	bar.finish()
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, v)
	}
	va := v.Variants[0]
	fmt.Fprintf(stdout, "published %s %s: variant %s, %d bytes, sha256 %s, signed by key %s\n", v.Model, v.Version, va.ID, va.Artifact.Size, va.Artifact.SHA256, va.KeyID)
	return nil
}

type filePart struct {
	field, path string
	size        int64
}

// upload streams the metadata and files as one multipart request, so a
// large model is never held in memory.
func upload(ctx context.Context, endpoint string, meta registry.PublishRequest, parts []filePart, bar *progressBar) (*registry.Version, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pw.CloseWithError(writeParts(mw, meta, parts, bar))
	}()
	defer func() {
		pr.Close() // unblocks the writer if the request ended early
		wg.Wait()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if tok := strings.TrimSpace(os.Getenv("EDGEFLEET_TOKEN")); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok) // the server's API token (fleet/auth)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Minute}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("upload to %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("upload: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
			Field string `json:"field"`
		}
		json.Unmarshal(body, &e)
		if e.Error == "" {
			return nil, fmt.Errorf("server answered %s", resp.Status)
		}
		if e.Field != "" && !strings.Contains(e.Error, e.Field) {
			return nil, fmt.Errorf("%s (field %s)", e.Error, e.Field)
		}
		return nil, errors.New(e.Error)
	}
	var v registry.Version
	if err := json.Unmarshal(body, &v); err != nil || len(v.Variants) == 0 {
		return nil, fmt.Errorf("upload: answer is not a published version: %v", err)
	}
	return &v, nil
}

func writeParts(mw *multipart.Writer, meta registry.PublishRequest, parts []filePart, bar *progressBar) error {
	mh := make(map[string][]string)
	mh["Content-Disposition"] = []string{`form-data; name="metadata"`}
	mh["Content-Type"] = []string{"application/json"}
	w, err := mw.CreatePart(mh)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(meta); err != nil {
		return err
	}
	for _, p := range parts {
		f, err := os.Open(p.path)
		if err != nil {
			return err
		}
		w, err := mw.CreateFormFile(p.field, filepath.Base(p.path))
		if err == nil {
			_, err = io.Copy(w, &countingReader{r: f, bar: bar})
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("send %s: %w", p.path, err)
		}
	}
	return mw.Close()
}

type countingReader struct {
	r   io.Reader
	bar *progressBar
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.bar.add(int64(n))
	return n, err
}

// progressBar draws "[#####.....]  45%  1.2/2.6 MiB" on a terminal, at
// most ten times a second. A nil bar does nothing.
type progressBar struct {
	w     io.Writer
	total int64
	label string
	mu    sync.Mutex
	done  int64
	drawn time.Time
}

func (b *progressBar) add(n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if time.Since(b.drawn) >= 100*time.Millisecond || b.done == b.total {
		b.draw()
	}
}

func (b *progressBar) draw() {
	b.drawn = time.Now()
	frac := 1.0
	if b.total > 0 {
		frac = float64(b.done) / float64(b.total)
	}
	const width = 30
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%s [%s%s] %3.0f%% %.1f/%.1f MiB", b.label, strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100,
		float64(b.done)/(1<<20), float64(b.total)/(1<<20))
}

func (b *progressBar) finish() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw()
	fmt.Fprintln(b.w)
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
