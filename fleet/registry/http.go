package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// Limits on the HTTP API.
const (
	MaxMetadataBytes = 1 << 20
	MaxUploadParts   = 64
	DefaultPageSize  = 100
	MaxPageSize      = 1000
)

// Routes lists the method and path patterns Register adds.
var Routes = []string{
	"POST /api/v1/models/{name}/versions",
	"GET /api/v1/models",
	"GET /api/v1/models/{name}",
	"GET /api/v1/models/{name}/versions/{version}",
	"POST /api/v1/artifacts",
	"GET /api/v1/signing-key",
	"GET /artifacts/{sha256}",
}

// Handler returns an http.Handler serving Routes.
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	r.Register(mux)
	return mux
}

// Register adds the registry's routes (see Routes) to mux, so the fleet
// API can mount them next to its own. Authentication is the caller's:
// wrap mux. Devices need GET /artifacts/ and nothing else.
func (r *Registry) Register(mux *http.ServeMux) {
	h := []http.HandlerFunc{r.handlePublish, r.handleModels, r.handleModel, r.handleVersion, r.handleUpload, r.handleKey, r.handleArtifact}
	for i, p := range Routes {
		mux.HandleFunc(p, h[i])
	}
}

// apiError is the body of every 4xx and 5xx answer.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers with the status err calls for. Messages of expected
// errors go to the user as they are; anything else is logged and the user
// gets a generic message, so internal paths and causes stay in the log.
func (r *Registry) writeError(w http.ResponseWriter, req *http.Request, err error) {
	var fe *FieldError
	var mbe *http.MaxBytesError
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, apiError{Error: fe.Error(), Field: fe.Field})
		return
	case errors.As(err, &mbe):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: fmt.Sprintf("request body is larger than the %d-byte limit", mbe.Limit)})
		return
	case errors.Is(err, ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, ErrDigestMismatch):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrArtifactNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrVersionExists):
		status = http.StatusConflict
	case errors.Is(err, ErrArtifactTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrInsufficientSpace):
		status = http.StatusInsufficientStorage
	case errors.Is(err, ErrClosed):
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusInternalServerError {
		r.log.Error("registry request failed", "method", req.Method, "path", req.URL.Path, "err", err)
		writeJSON(w, status, apiError{Error: "internal error; the server log has the cause"})
		return
	}
	writeJSON(w, status, apiError{Error: err.Error()})
}

func badRequest(field, format string, args ...any) error { return fieldErr(field, format, args...) }

// handlePublish creates a version. Two forms:
//
//   - Content-Type application/json: a PublishRequest whose artifacts are
//     already uploaded (POST /api/v1/artifacts).
//   - multipart/form-data: a first part named "metadata" holding the
//     PublishRequest, then one file part per artifact, named by the field it
//     fills: "variants[0].artifact", "variants[0].self_test.inputs[0]",
//     "variants[0].self_test.expected_outputs[0]". Files are streamed into
//     the artifact store as they arrive and hashed while written; a sha256
//     the metadata declares for that field must match.
//
// 201 with the Version when created, 200 when the same content was already
// published.
func (r *Registry) handlePublish(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	if err := CheckName(name); err != nil {
		r.writeError(w, req, err)
		return
	}
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	var pr PublishRequest
	switch mt {
	case "application/json":
		if err := decodeJSON(http.MaxBytesReader(w, req.Body, MaxMetadataBytes), &pr); err != nil {
			r.writeError(w, req, err)
			return
		}
	case "multipart/form-data":
		limit := 2*r.opts.MaxArtifactBytes + MaxMetadataBytes
		req.Body = http.MaxBytesReader(w, req.Body, limit)
		if err := r.readMultipart(req, &pr); err != nil {
			r.writeError(w, req, err)
			return
		}
	default:
		writeJSON(w, http.StatusUnsupportedMediaType, apiError{Error: fmt.Sprintf("Content-Type %q: send application/json metadata, or multipart/form-data with a \"metadata\" part and file parts", req.Header.Get("Content-Type"))})
		return
	}
	v, created, err := r.Publish(req.Context(), name, pr)
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("Location", "/api/v1/models/"+name+"/versions/"+v.Version)
	writeJSON(w, status, v)
}

func decodeJSON(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("metadata", "is not valid JSON for a publish request: %v", err)
	}
	if dec.More() {
		return badRequest("metadata", "has data after the JSON object")
	}
	return nil
}

var rePartName = regexp.MustCompile(`^variants\[(\d+)\]\.(artifact|self_test\.inputs\[(\d+)\]|self_test\.expected_outputs\[(\d+)\])$`)

func (r *Registry) readMultipart(req *http.Request, pr *PublishRequest) error {
	mr, err := req.MultipartReader()
	if err != nil {
		return badRequest("body", "is not a multipart form: %v", err)
	}
	haveMeta := false
	seen := map[string]bool{}
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return err
			}
			return badRequest("body", "multipart form is malformed: %v", err)
		}
		if n >= MaxUploadParts {
			part.Close()
			return badRequest("body", "has more than %d parts", MaxUploadParts)
		}
		field := part.FormName()
		if seen[field] {
			part.Close()
			return badRequest(field, "part appears twice")
		}
		seen[field] = true
		if field == "metadata" {
			err = decodeJSON(io.LimitReader(part, MaxMetadataBytes+1), pr)
			part.Close()
			if err != nil {
				return err
			}
			haveMeta = true
			continue
		}
		if !haveMeta {
			part.Close()
			return badRequest(field, "file part arrived before the \"metadata\" part; send metadata first")
		}
		ref, err := partTarget(pr, field)
		if err != nil {
			part.Close()
			return err
		}
		stored, err := r.artifacts.Put(req.Context(), part, PutOptions{Limit: r.opts.MaxArtifactBytes, Size: -1, SHA256: ref.SHA256})
		part.Close()
		if err != nil {
			if errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrArtifactTooLarge) {
				return fmt.Errorf("%s: %w", field, err)
			}
			var fe *FieldError
			if errors.As(err, &fe) {
				return fieldErr(field, "%s", fe.Reason)
			}
			return err
		}
		if ref.Size != 0 && ref.Size != stored.Size {
			return fmt.Errorf("%s: %w: received %d bytes, the metadata declares %d", field, ErrDigestMismatch, stored.Size, ref.Size)
		}
		*ref = stored
	}
	if !haveMeta {
		return badRequest("metadata", "part is missing; the form needs a \"metadata\" part with the publish request")
	}
	return nil
}

// partTarget finds the artifact reference a file part fills in. Self-test
// lists grow by one when a part names the next index, so a client need not
// send placeholders.
func partTarget(pr *PublishRequest, field string) (*proto.ArtifactRef, error) {
	m := rePartName.FindStringSubmatch(field)
	if m == nil {
		return nil, badRequest(field, "is not a known part name; use \"metadata\", \"variants[N].artifact\", \"variants[N].self_test.inputs[M]\" or \"variants[N].self_test.expected_outputs[M]\"")
	}
	i, err := strconv.Atoi(m[1])
	if err != nil || i >= len(pr.Variants) {
		return nil, badRequest(field, "names variant %s, the metadata has %d", m[1], len(pr.Variants))
	}
	v := &pr.Variants[i]
	if m[2] == "artifact" {
		return &v.Artifact, nil
	}
	if v.SelfTest == nil {
		v.SelfTest = &proto.SelfTest{}
	}
	list := &v.SelfTest.Inputs
	idx := m[3]
	if m[4] != "" {
		list, idx = &v.SelfTest.ExpectedOutputs, m[4]
	}
	j, err := strconv.Atoi(idx)
	if err != nil || j > len(*list) || j >= proto.MaxSelfTestTensors {
		return nil, badRequest(field, "index %s skips ahead; send tensors in order from 0, at most %d", idx, proto.MaxSelfTestTensors)
	}
	if j == len(*list) {
		*list = append(*list, proto.ArtifactRef{})
	}
	return &(*list)[j], nil
}

// handleUpload stores the raw request body as an artifact and answers
// {"sha256":…, "size":…}. An X-Content-SHA256 header, if sent, must match
// the bytes. Uploading bytes that are already stored is harmless.
func (r *Registry) handleUpload(w http.ResponseWriter, req *http.Request) {
	declared := strings.ToLower(strings.TrimSpace(req.Header.Get("X-Content-SHA256")))
	if declared != "" && !proto.ValidSHA256(declared) {
		r.writeError(w, req, badRequest("X-Content-SHA256", "%q is not 64 hex digits", truncate(declared)))
		return
	}
	if req.ContentLength > r.opts.MaxArtifactBytes {
		r.writeError(w, req, fmt.Errorf("%w: Content-Length %d, limit %d", ErrArtifactTooLarge, req.ContentLength, r.opts.MaxArtifactBytes))
		return
	}
	body := http.MaxBytesReader(w, req.Body, r.opts.MaxArtifactBytes+1)
	ref, err := r.artifacts.Put(req.Context(), body, PutOptions{Limit: r.opts.MaxArtifactBytes, Size: req.ContentLength, SHA256: declared})
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	w.Header().Set("Location", ArtifactPath(ref.SHA256))
	writeJSON(w, http.StatusCreated, ref)
}

// handleModels lists models: ?limit= (default 100, at most 1000) and
// ?after=<name> for the next page, which the answer's "next" names.
func (r *Registry) handleModels(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	limit := DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			r.writeError(w, req, badRequest("limit", "%q is not a number from 1 to %d", truncate(s), MaxPageSize))
			return
		}
		limit = n
	}
	models, err := r.Models(req.Context(), q.Get("after"), limit+1)
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	next := ""
	if len(models) > limit {
		models = models[:limit]
		next = models[limit-1].Name
	}
	writeJSON(w, http.StatusOK, struct {
		Models []Model `json:"models"`
		Next   string  `json:"next,omitempty"`
	}{models, next})
}

// VersionSummary is a version in a model listing, without manifests.
type VersionSummary struct {
	Version   string           `json:"version"`
	Published time.Time        `json:"published"`
	Variants  []VariantSummary `json:"variants"`
}

// VariantSummary is a variant in a VersionSummary.
type VariantSummary struct {
	ID        string   `json:"id"`
	Format    string   `json:"format"`
	Precision string   `json:"precision"`
	Backend   string   `json:"backend"`
	Profiles  []string `json:"profiles,omitempty"`
	Size      uint64   `json:"size"`
	SHA256    string   `json:"sha256"`
}

func (r *Registry) handleModel(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	m, err := r.Model(req.Context(), name)
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	vs, err := r.Versions(req.Context(), name)
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	out := struct {
		Model
		VersionList []VersionSummary `json:"version_list"`
	}{Model: *m, VersionList: make([]VersionSummary, len(vs))}
	for i, v := range vs {
		s := VersionSummary{Version: v.Version, Published: v.Published, Variants: make([]VariantSummary, len(v.Variants))}
		for j, va := range v.Variants {
			s.Variants[j] = VariantSummary{ID: va.ID, Format: va.Format, Precision: va.Precision, Backend: va.Backend, Profiles: va.Profiles, Size: va.Artifact.Size, SHA256: va.Artifact.SHA256}
		}
		out.VersionList[i] = s
	}
	writeJSON(w, http.StatusOK, out)
}

func (r *Registry) handleVersion(w http.ResponseWriter, req *http.Request) {
	v, err := r.Version(req.Context(), req.PathValue("name"), req.PathValue("version"))
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// SigningKeyInfo is the answer of GET /api/v1/signing-key.
type SigningKeyInfo struct {
	Algorithm string `json:"alg"`
	KeyID     string `json:"key_id"`
	PublicKey []byte `json:"public_key"` // 32 bytes, base64 in JSON
}

func (r *Registry) handleKey(w http.ResponseWriter, req *http.Request) {
	writeJSON(w, http.StatusOK, SigningKeyInfo{Algorithm: "ed25519", KeyID: r.KeyID(), PublicKey: r.PublicKey()})
}

// handleArtifact serves a blob with Range and ETag support (the ETag is
// the quoted sha256, which never changes for a path), or redirects to a
// short-lived presigned URL when the store can make one.
func (r *Registry) handleArtifact(w http.ResponseWriter, req *http.Request) {
	sha := req.PathValue("sha256")
	if !proto.ValidSHA256(sha) {
		r.writeError(w, req, badRequest("sha256", "%q is not 64 lowercase hex digits", truncate(sha)))
		return
	}
	// No enter(): blobs do not touch the database, and a slow device must
	// not hold up Close for the length of its download.
	if p, ok := r.artifacts.(Presigner); ok {
		if _, err := r.artifacts.Stat(req.Context(), sha); err != nil {
			r.writeError(w, req, err)
			return
		}
		u, err := p.PresignGet(req.Context(), sha, r.opts.PresignExpiry)
		if err != nil {
			r.writeError(w, req, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store") // the URL expires; the blob does not
		http.Redirect(w, req, u.String(), http.StatusTemporaryRedirect)
		return
	}
	blob, err := r.artifacts.Open(req.Context(), sha)
	if err != nil {
		r.writeError(w, req, err)
		return
	}
	defer blob.Close()
	w.Header().Set("ETag", `"`+sha+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, req, "", blob.ModTime, blob)
}
