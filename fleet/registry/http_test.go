package registry

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/runtime/runtimetest"
	"github.com/edgefleet/edgefleet/proto"
)

func serve(t *testing.T, r *Registry) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(r.Handler()) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

type part struct {
	name string
	data []byte
}

// multipartBody streams the parts through a pipe, as a client uploading a
// large file would, and returns the body and its Content-Type.
func multipartBody(t *testing.T, parts ...part) (io.Reader, string) {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for _, p := range parts {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.name, p.name))
			if p.name == "metadata" {
				h.Set("Content-Disposition", `form-data; name="metadata"`)
				h.Set("Content-Type", "application/json")
			}
			w, err := mw.CreatePart(h)
			if err == nil {
				_, err = w.Write(p.data)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	return pr, mw.FormDataContentType()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call sends a request and decodes a JSON answer into out (if not nil),
// returning the status and raw body.
func call(t *testing.T, method, url, ctype string, body io.Reader, out any, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, raw
}

func TestHTTPPublishMultipartAndDownload(t *testing.T) {
	r := openTest(t, Options{})
	srv := serve(t, r)
	model := blob("tflite-bytes", 300_001)
	input := blob("in", 64)
	output := blob("out", 10)
	meta := PublishRequest{
		Version: "1.0.0",
		Lineage: proto.Lineage{SourceCommit: "0123abc", Notes: "from the CLI"},
		Variants: []VariantSpec{{
			Format: "tflite", Precision: "int8", Backend: "tflite", Profiles: []string{"raspberry-pi-4"},
			Artifact: proto.ArtifactRef{SHA256: digest(model)}, // declared, so the upload is checked
		}},
	}
	body, ctype := multipartBody(t,
		part{"metadata", mustJSON(t, meta)},
		part{"variants[0].artifact", model},
		part{"variants[0].self_test.inputs[0]", input},
		part{"variants[0].self_test.expected_outputs[0]", output},
	)
	var v Version
	status, hdr, raw := call(t, "POST", srv.URL+"/api/v1/models/kws/versions", ctype, body, &v)
	if status != http.StatusCreated {
		t.Fatalf("publish: %d %s", status, raw)
	}
	if hdr.Get("Location") != "/api/v1/models/kws/versions/1.0.0" {
		t.Fatalf("Location %q", hdr.Get("Location"))
	}
	va := v.Variants[0]
	if va.Artifact.Size != uint64(len(model)) || va.SelfTest == nil || va.SelfTest.Inputs[0].SHA256 != digest(input) || va.SelfTest.ExpectedOutputs[0].Size != uint64(len(output)) {
		t.Fatalf("published variant %+v", va)
	}

	// The agent's path: fetch the public key, verify the manifest, download
	// half, resume the rest with Range, check the bytes against the manifest.
	var key SigningKeyInfo
	if status, _, raw := call(t, "GET", srv.URL+"/api/v1/signing-key", "", nil, &key); status != 200 || key.Algorithm != "ed25519" {
		t.Fatalf("signing key: %d %s", status, raw)
	}
	var got Version
	if status, _, raw := call(t, "GET", srv.URL+"/api/v1/models/kws/versions/1.0.0", "", nil, &got); status != 200 {
		t.Fatalf("get version: %d %s", status, raw)
	}
	m, err := proto.VerifyManifest(ed25519.PublicKey(key.PublicKey), got.Variants[0].Manifest, got.Variants[0].Signature)
	if err != nil {
		t.Fatalf("manifest from the API: %v", err)
	}
	url := srv.URL + ArtifactPath(m.Artifact.SHA256)
	half := len(model) / 2
	status, hdr, first := call(t, "GET", url, "", nil, nil, "Range", fmt.Sprintf("bytes=0-%d", half-1))
	if status != http.StatusPartialContent || len(first) != half {
		t.Fatalf("first half: %d, %d bytes", status, len(first))
	}
	etag := hdr.Get("ETag")
	if etag != `"`+m.Artifact.SHA256+`"` {
		t.Fatalf("ETag %q, want the quoted sha256", etag)
	}
	status, _, rest := call(t, "GET", url, "", nil, nil, "Range", fmt.Sprintf("bytes=%d-", half), "If-Range", etag)
	if status != http.StatusPartialContent || len(rest) != len(model)-half {
		t.Fatalf("rest: %d, %d bytes", status, len(rest))
	}
	if err := m.CheckArtifact(io.MultiReader(bytes.NewReader(first), bytes.NewReader(rest))); err != nil {
		t.Fatalf("resumed download fails the manifest: %v", err)
	}
	if status, _, body := call(t, "GET", url, "", nil, nil, "If-None-Match", etag); status != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("If-None-Match: %d with %d bytes, want 304 and no body", status, len(body))
	}
	status, _, whole := call(t, "GET", url, "", nil, nil)
	if status != 200 || digest(whole) != m.Artifact.SHA256 {
		t.Fatalf("whole download: %d", status)
	}
	// Self-test tensors come from the same endpoint.
	_, _, in := call(t, "GET", srv.URL+ArtifactPath(m.SelfTest.Inputs[0].SHA256), "", nil, nil)
	if err := m.SelfTest.Inputs[0].CheckBytes(in); err != nil {
		t.Fatalf("self-test input: %v", err)
	}
	// A tampered download (one byte flipped) is caught by the manifest.
	tampered := bytes.Clone(whole)
	tampered[len(tampered)/3] ^= 1
	if err := m.CheckArtifact(bytes.NewReader(tampered)); err == nil {
		t.Fatal("tampered artifact accepted")
	}

	// Re-sending the same push is idempotent: 200 and the stored version.
	body, ctype = multipartBody(t, part{"metadata", mustJSON(t, meta)}, part{"variants[0].artifact", model},
		part{"variants[0].self_test.inputs[0]", input}, part{"variants[0].self_test.expected_outputs[0]", output})
	var again Version
	if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/kws/versions", ctype, body, &again); status != 200 || !again.Published.Equal(v.Published) {
		t.Fatalf("idempotent re-publish: %d %s", status, raw)
	}

	var listing struct {
		Name        string           `json:"name"`
		Latest      string           `json:"latest"`
		VersionList []VersionSummary `json:"version_list"`
	}
	if status, _, raw := call(t, "GET", srv.URL+"/api/v1/models/kws", "", nil, &listing); status != 200 || listing.Latest != "1.0.0" || len(listing.VersionList) != 1 || listing.VersionList[0].Variants[0].Size != uint64(len(model)) {
		t.Fatalf("model: %d %s", status, raw)
	}
}

func TestHTTPRawUploadThenJSONPublish(t *testing.T) {
	r := openTest(t, Options{})
	srv := serve(t, r)
	data := blob("onnx", 5000)
	var ref proto.ArtifactRef
	status, hdr, raw := call(t, "POST", srv.URL+"/api/v1/artifacts", "application/octet-stream", bytes.NewReader(data), &ref, "X-Content-SHA256", digest(data))
	if status != http.StatusCreated || ref.SHA256 != digest(data) || hdr.Get("Location") != ArtifactPath(ref.SHA256) {
		t.Fatalf("upload: %d %s", status, raw)
	}
	req := PublishRequest{Version: "0.1.0", Variants: []VariantSpec{{Format: "onnx", Precision: "fp32", Backend: "onnxruntime", Artifact: proto.ArtifactRef{SHA256: ref.SHA256}}}}
	var v Version
	if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/vad/versions", "application/json", bytes.NewReader(mustJSON(t, req)), &v); status != 201 {
		t.Fatalf("publish: %d %s", status, raw)
	}
	for i := range 3 {
		req.Version = fmt.Sprintf("0.2.%d", i)
		for _, name := range []string{"a-model", "b-model"} {
			if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/"+name+"/versions", "application/json", bytes.NewReader(mustJSON(t, req)), nil); status != 201 {
				t.Fatalf("publish %s: %d %s", name, status, raw)
			}
		}
	}
	// Pages of two: a-model, b-model | vad.
	var page struct {
		Models []Model `json:"models"`
		Next   string  `json:"next"`
	}
	call(t, "GET", srv.URL+"/api/v1/models?limit=2", "", nil, &page)
	if len(page.Models) != 2 || page.Models[0].Name != "a-model" || page.Models[1].Versions != 3 || page.Next != "b-model" {
		t.Fatalf("first page %+v", page)
	}
	page.Models, page.Next = nil, ""
	call(t, "GET", srv.URL+"/api/v1/models?limit=2&after=b-model", "", nil, &page)
	if len(page.Models) != 1 || page.Models[0].Name != "vad" || page.Next != "" {
		t.Fatalf("second page %+v", page)
	}
}

// TestHTTPErrors checks that bad input gets a 4xx JSON answer that names
// what was wrong.
func TestHTTPErrors(t *testing.T) {
	r := openTest(t, Options{MaxArtifactBytes: 4096})
	srv := serve(t, r)
	good := blob("g", 100)
	ref := put(t, r, good)
	okReq := PublishRequest{Version: "1.0.0", Variants: []VariantSpec{{Format: "tflite", Precision: "int8", Backend: "tflite", Artifact: ref}}}
	if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/m/versions", "application/json", bytes.NewReader(mustJSON(t, okReq)), nil); status != 201 {
		t.Fatalf("base publish: %d %s", status, raw)
	}
	meta := func(mod func(*PublishRequest)) []byte {
		req := okReq
		req.Variants = append([]VariantSpec(nil), okReq.Variants...)
		req.Version = "2.0.0"
		if mod != nil {
			mod(&req)
		}
		return mustJSON(t, req)
	}
	mp := func(parts ...part) (io.Reader, string) { return multipartBody(t, parts...) }

	type tc struct {
		name, method, path, ctype string
		body                      func() (io.Reader, string)
		status                    int
		mention                   string // must appear in the error message
		field                     string
	}
	jsonBody := func(b []byte) func() (io.Reader, string) {
		return func() (io.Reader, string) { return bytes.NewReader(b), "application/json" }
	}
	cases := []tc{
		{name: "bad model name", method: "POST", path: "/api/v1/models/Bad%20Name/versions", body: jsonBody(meta(nil)), status: 400, mention: "model name", field: "name"},
		{name: "unsupported content type", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) { return strings.NewReader("x"), "text/plain" }, status: 415, mention: "multipart/form-data"},
		{name: "not json", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody([]byte("{")), status: 400, mention: "not valid JSON", field: "metadata"},
		{name: "unknown json field", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody([]byte(`{"version":"2.0.0","colour":"red"}`)), status: 400, mention: "colour", field: "metadata"},
		{name: "oversized metadata", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody(append([]byte(`{"version":"`), bytes.Repeat([]byte("x"), MaxMetadataBytes)...)), status: 413, mention: "limit"},
		{name: "bad version", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody(meta(func(p *PublishRequest) { p.Version = "one" })), status: 400, mention: "semantic version", field: "version"},
		{name: "bad format", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody(meta(func(p *PublishRequest) { p.Variants[0].Format = "exe" })), status: 400, mention: "exe", field: "variants[0].format"},
		{name: "artifact not uploaded", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody(meta(func(p *PublishRequest) { p.Variants[0].Artifact = proto.ArtifactRef{SHA256: digest([]byte("nope"))} })), status: 400, mention: "upload it first", field: "variants[0].artifact.sha256"},
		{name: "immutable version", method: "POST", path: "/api/v1/models/m/versions", body: jsonBody(meta(func(p *PublishRequest) { p.Version = "1.0.0"; p.Variants[0].Precision = "uint8" })), status: 409, mention: "new version"},
		{name: "metadata missing", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) { return mp() }, status: 400, mention: "metadata", field: "metadata"},
		{name: "file before metadata", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"variants[0].artifact", good}, part{"metadata", meta(nil)})
		}, status: 400, mention: "send metadata first", field: "variants[0].artifact"},
		{name: "unknown part", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(nil)}, part{"model", good})
		}, status: 400, mention: "not a known part name", field: "model"},
		{name: "part for a missing variant", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(nil)}, part{"variants[3].artifact", good})
		}, status: 400, mention: "names variant 3", field: "variants[3].artifact"},
		{name: "self-test tensors out of order", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(nil)}, part{"variants[0].self_test.inputs[1]", good})
		}, status: 400, mention: "in order", field: "variants[0].self_test.inputs[1]"},
		{name: "uploaded bytes differ from declared sha256", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(nil)}, part{"variants[0].artifact", blob("other", 100)})
		}, status: 422, mention: "variants[0].artifact"},
		{name: "artifact over the limit", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(func(p *PublishRequest) { p.Variants[0].Artifact = proto.ArtifactRef{} })}, part{"variants[0].artifact", blob("big", 4097)})
		}, status: 413, mention: "4096"},
		{name: "duplicate part", method: "POST", path: "/api/v1/models/m/versions", body: func() (io.Reader, string) {
			return mp(part{"metadata", meta(nil)}, part{"metadata", meta(nil)})
		}, status: 400, mention: "twice", field: "metadata"},
		{name: "raw upload over the limit", method: "POST", path: "/api/v1/artifacts", body: func() (io.Reader, string) { return bytes.NewReader(blob("big", 5000)), "" }, status: 413, mention: "limit"},
		{name: "raw upload, unknown length, over the limit", method: "POST", path: "/api/v1/artifacts", body: func() (io.Reader, string) { return io.MultiReader(bytes.NewReader(blob("big", 5000))), "" }, status: 413, mention: "4096"},
		{name: "raw upload, sha256 mismatch", method: "POST", path: "/api/v1/artifacts?", body: func() (io.Reader, string) { return bytes.NewReader(good[:50]), "" }, status: 422, mention: "declared"},
		{name: "raw upload, empty", method: "POST", path: "/api/v1/artifacts", body: func() (io.Reader, string) { return bytes.NewReader(nil), "" }, status: 400, mention: "empty", field: "artifact"},
		{name: "unknown model", method: "GET", path: "/api/v1/models/ghost", status: 404, mention: "ghost"},
		{name: "unknown version", method: "GET", path: "/api/v1/models/m/versions/9.0.0", status: 404, mention: "9.0.0"},
		{name: "malformed version in path", method: "GET", path: "/api/v1/models/m/versions/latest", status: 400, mention: "semantic version", field: "version"},
		{name: "bad page size", method: "GET", path: "/api/v1/models?limit=0", status: 400, mention: "1 to 1000", field: "limit"},
		{name: "artifact path not a sha256", method: "GET", path: "/artifacts/..%2f..%2fetc%2fpasswd", status: 400, mention: "hex", field: "sha256"},
		{name: "artifact absent", method: "GET", path: "/artifacts/" + digest([]byte("absent")), status: 404, mention: "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body io.Reader
			ctype := c.ctype
			if c.body != nil {
				body, ctype = c.body()
			}
			var hdr []string
			if strings.HasSuffix(c.path, "?") {
				hdr = []string{"X-Content-SHA256", digest(good)}
			}
			status, h, raw := call(t, c.method, srv.URL+c.path, ctype, body, nil, hdr...)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, raw)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want application/json", ct)
			}
			var e apiError
			if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
				t.Fatalf("error body %q is not {\"error\":…}: %v", raw, err)
			}
			if !strings.Contains(e.Error, c.mention) {
				t.Errorf("error %q does not mention %q", e.Error, c.mention)
			}
			if e.Field != c.field {
				t.Errorf("field %q, want %q (%s)", e.Field, c.field, e.Error)
			}
		})
	}
	// Nothing above changed the published version.
	v, err := r.Version(t.Context(), "m", "1.0.0")
	if err != nil || v.Variants[0].Precision != "int8" {
		t.Fatalf("published version changed: %+v, %v", v, err)
	}
	if vs, _ := r.Versions(t.Context(), "m"); len(vs) != 1 {
		t.Fatalf("%d versions of m, want 1", len(vs))
	}
}

// TestHTTPRealModel pushes a real model from ../shared/models with one of
// its reference cases as the self-test, the way `edgefleet model push`
// will.
func TestHTTPRealModel(t *testing.T) {
	dir := filepath.Join(runtimetest.Dir(t), "tflm_hello_world_int8")
	model, err := os.ReadFile(filepath.Join(dir, "model.tflite"))
	if err != nil {
		t.Skipf("shared model tflm_hello_world_int8 not readable: %v", err)
	}
	in, err1 := os.ReadFile(filepath.Join(dir, "cases", "x_1.5708", "input_0.bin"))
	out, err2 := os.ReadFile(filepath.Join(dir, "cases", "x_1.5708", "output_0.litertjs.bin"))
	if err1 != nil || err2 != nil {
		t.Fatalf("reference case: %v %v", err1, err2)
	}
	r := openTest(t, Options{})
	srv := serve(t, r)
	meta := PublishRequest{Version: "1.0.0", Variants: []VariantSpec{{Format: "tflite", Precision: "int8", Backend: "tflite"}}}
	body, ctype := multipartBody(t, part{"metadata", mustJSON(t, meta)}, part{"variants[0].artifact", model},
		part{"variants[0].self_test.inputs[0]", in}, part{"variants[0].self_test.expected_outputs[0]", out})
	var v Version
	if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/hello-world/versions", ctype, body, &v); status != 201 {
		t.Fatalf("publish: %d %s", status, raw)
	}
	m, err := proto.VerifyManifest(r.PublicKey(), v.Variants[0].Manifest, v.Variants[0].Signature)
	if err != nil {
		t.Fatal(err)
	}
	if m.Artifact.SHA256 != digest(model) || m.Artifact.Size != uint64(len(model)) {
		t.Fatalf("manifest names %+v, the model file is %d bytes with sha256 %s", m.Artifact, len(model), digest(model))
	}
	_, _, got := call(t, "GET", srv.URL+ArtifactPath(m.Artifact.SHA256), "", nil, nil)
	if err := m.CheckArtifact(bytes.NewReader(got)); err != nil {
		t.Fatal(err)
	}
}
