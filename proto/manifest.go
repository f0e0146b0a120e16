package proto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"unicode/utf8"
)

// Manifest errors. They live here rather than in errors.go so the manifest
// can be reviewed as one file; they follow the same rules.
var (
	// ErrSignature is returned when a manifest signature is missing, has the
	// wrong length, or does not verify with the given public key.
	ErrSignature = errors.New("manifest signature invalid")
	// ErrArtifactMismatch is returned when an artifact's bytes do not have
	// the size or sha256 its manifest names.
	ErrArtifactMismatch = errors.New("artifact does not match its manifest")
)

// ManifestSchema is the manifest layout this build writes and reads. A
// verifier refuses a schema it does not know rather than guessing: the
// manifest is the one thing a device trusts, so an unknown field is never
// silently ignored.
//
//   - 1 (2026-11-27): first layout.
const ManifestSchema = 1

// Limits on a manifest. Manifests reach devices inside DesiredModel, so they
// stay far below MaxPayloadBytes.
const (
	MaxManifestBytes   = 64 << 10
	MaxArtifactBytes   = 1 << 40 // a sanity bound, not a policy; the registry sets its own
	MaxManifestList    = 64      // profiles, metrics
	MaxSelfTestTensors = 16
	MaxNotesBytes      = 4096
	maxFieldLen        = 128
)

// ManifestFieldError names the manifest field that broke a rule. It wraps
// ErrInvalid.
type ManifestFieldError struct {
	Field  string // JSON name, with an index for list items: "profiles[2]"
	Reason string
}

func (e *ManifestFieldError) Error() string {
	return fmt.Sprintf("%v: manifest field %s: %s", ErrInvalid, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ManifestFieldError) Unwrap() error { return ErrInvalid }

// Manifest describes one variant of one model version: everything a device
// needs to decide whether to run it and to check the bytes it downloads.
// The server signs its canonical encoding (see Canonical); devices verify
// the signature over the exact bytes they received before decoding them.
//
// The JSON field names are declared in byte order, so encoding/json writes
// every object with sorted keys. Keep it so when adding fields (a test
// checks), and bump ManifestSchema.
type Manifest struct {
	Artifact ArtifactRef `json:"artifact"`
	Backend  string      `json:"backend"`
	Format   string      `json:"format"`
	Lineage  Lineage     `json:"lineage"`
	// Metrics are this variant's own evaluation figures (an int8 variant's
	// accuracy differs from the float one's); Lineage.Metrics are the
	// version's.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// MinAgentVersion is a hashicorp/go-version constraint such as
	// ">= 0.3.0"; empty means any agent.
	MinAgentVersion string `json:"min_agent_version,omitempty"`
	Model           string `json:"model"`
	Precision       string `json:"precision"`
	// Profiles are the firmware profiles the variant was built for; empty
	// means every profile.
	Profiles []string  `json:"profiles,omitempty"`
	Schema   int       `json:"schema"`
	SelfTest *SelfTest `json:"self_test,omitempty"`
	Variant  string    `json:"variant"`
	Version  string    `json:"version"`
}

// ArtifactRef names a blob by content: its sha256 (lowercase hex) and size.
type ArtifactRef struct {
	SHA256 string `json:"sha256"`
	Size   uint64 `json:"size"`
}

// Lineage records where a model version came from.
type Lineage struct {
	DatasetHash  string             `json:"dataset_hash,omitempty"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
	Notes        string             `json:"notes,omitempty"`
	SourceCommit string             `json:"source_commit,omitempty"`
}

// SelfTest is the sample a device runs after loading a variant and before
// switching to it. Inputs and ExpectedOutputs are raw little-endian tensors
// in graph order (the layout of ../shared/models cases), fetched like the
// artifact itself. Tolerance is the largest absolute difference allowed per
// element; 0 means identical.
type SelfTest struct {
	ExpectedOutputs []ArtifactRef `json:"expected_outputs,omitempty"`
	Inputs          []ArtifactRef `json:"inputs"`
	Tolerance       float64       `json:"tolerance,omitempty"`
}

var (
	reName      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	reVersion   = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)
	reSHA256    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reCommit    = regexp.MustCompile(`^[0-9a-f]{7,64}$`)
	rePrintable = regexp.MustCompile(`^[\x21-\x7e]+$`)
	reMetricKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/@-]{0,63}$`)
	reSpaced    = regexp.MustCompile(`^[\x20-\x7e]+$`)
)

// ManifestFormats are the model formats a manifest may name.
var ManifestFormats = []string{"tflite", "onnx"}

// ValidName reports whether s may be used as a model, variant, backend,
// precision or firmware-profile name: lowercase, digits, '.', '_', '-', at
// most 64 bytes. These names end up in URLs, file names and MQTT payloads.
func ValidName(s string) bool { return reName.MatchString(s) }

// ValidSemver reports whether s is a strict MAJOR.MINOR.PATCH[-PRERELEASE]
// version without build metadata or a "v" prefix: the one spelling the
// registry stores, so the signed bytes have a single form per version.
func ValidSemver(s string) bool { return len(s) <= maxFieldLen && reVersion.MatchString(s) }

// ValidSHA256 reports whether s is a lowercase hex sha256.
func ValidSHA256(s string) bool { return reSHA256.MatchString(s) }

// Validate checks every field and returns a *ManifestFieldError for the
// first one that breaks a rule.
func (m *Manifest) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ManifestFieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if m.Schema != ManifestSchema {
		return bad("schema", "is %d; this build reads schema %d", m.Schema, ManifestSchema)
	}
	if !ValidName(m.Model) {
		return bad("model", "%q is not a name (lowercase letters, digits, '.', '_', '-', at most 64)", truncate(m.Model))
	}
	if !ValidSemver(m.Version) {
		return bad("version", "%q is not a MAJOR.MINOR.PATCH[-PRERELEASE] version", truncate(m.Version))
	}
	if !ValidName(m.Variant) {
		return bad("variant", "%q is not a name (lowercase letters, digits, '.', '_', '-', at most 64)", truncate(m.Variant))
	}
	if !validFormat(m.Format) {
		return bad("format", "%q is not one of %v", truncate(m.Format), ManifestFormats)
	}
	if !ValidName(m.Precision) {
		return bad("precision", "%q is not a name such as int8 or fp32", truncate(m.Precision))
	}
	if !ValidName(m.Backend) {
		return bad("backend", "%q is not a backend name such as tflite or onnxruntime", truncate(m.Backend))
	}
	if err := m.Artifact.validate("artifact"); err != nil {
		return err
	}
	if len(m.Profiles) > MaxManifestList {
		return bad("profiles", "has %d entries, limit %d", len(m.Profiles), MaxManifestList)
	}
	seen := make(map[string]bool, len(m.Profiles))
	for i, p := range m.Profiles {
		if !ValidName(p) {
			return bad(fmt.Sprintf("profiles[%d]", i), "%q is not a firmware profile name", truncate(p))
		}
		if seen[p] {
			return bad(fmt.Sprintf("profiles[%d]", i), "%q is listed twice", p)
		}
		seen[p] = true
	}
	if m.MinAgentVersion != "" && (len(m.MinAgentVersion) > maxFieldLen || !reSpaced.MatchString(m.MinAgentVersion)) {
		return bad("min_agent_version", "%q is not a version constraint such as \">= 0.3.0\"", truncate(m.MinAgentVersion))
	}
	if err := validateMetrics("metrics", m.Metrics); err != nil {
		return err
	}
	if err := m.Lineage.validate(); err != nil {
		return err
	}
	if m.SelfTest != nil {
		if err := m.SelfTest.validate(); err != nil {
			return err
		}
	}
	return nil
}

func validFormat(f string) bool {
	for _, ok := range ManifestFormats {
		if f == ok {
			return true
		}
	}
	return false
}

func (a ArtifactRef) validate(field string) error {
	if !ValidSHA256(a.SHA256) {
		return &ManifestFieldError{Field: field + ".sha256", Reason: fmt.Sprintf("%q is not 64 lowercase hex digits", truncate(a.SHA256))}
	}
	if a.Size == 0 || a.Size > MaxArtifactBytes {
		return &ManifestFieldError{Field: field + ".size", Reason: fmt.Sprintf("%d is outside 1..%d", a.Size, uint64(MaxArtifactBytes))}
	}
	return nil
}

func (l Lineage) validate() error {
	if l.SourceCommit != "" && !reCommit.MatchString(l.SourceCommit) {
		return &ManifestFieldError{Field: "lineage.source_commit", Reason: fmt.Sprintf("%q is not a lowercase hex commit id (7 to 64 digits)", truncate(l.SourceCommit))}
	}
	if l.DatasetHash != "" && (len(l.DatasetHash) > maxFieldLen || !rePrintable.MatchString(l.DatasetHash)) {
		return &ManifestFieldError{Field: "lineage.dataset_hash", Reason: fmt.Sprintf("%q is not a hash (printable ASCII without spaces, at most %d bytes)", truncate(l.DatasetHash), maxFieldLen)}
	}
	if len(l.Notes) > MaxNotesBytes {
		return &ManifestFieldError{Field: "lineage.notes", Reason: fmt.Sprintf("is %d bytes, limit %d", len(l.Notes), MaxNotesBytes)}
	}
	if !utf8.ValidString(l.Notes) {
		return &ManifestFieldError{Field: "lineage.notes", Reason: "is not valid UTF-8"}
	}
	return validateMetrics("lineage.metrics", l.Metrics)
}

func validateMetrics(field string, m map[string]float64) error {
	if len(m) > MaxManifestList {
		return &ManifestFieldError{Field: field, Reason: fmt.Sprintf("has %d entries, limit %d", len(m), MaxManifestList)}
	}
	for k, v := range m {
		if !reMetricKey.MatchString(k) {
			return &ManifestFieldError{Field: field, Reason: fmt.Sprintf("key %q is not a metric name (letters, digits, '.', '_', '/', '@', '-', at most 64)", truncate(k))}
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return &ManifestFieldError{Field: field + "." + k, Reason: fmt.Sprintf("%v is not a finite number", v)}
		}
	}
	return nil
}

func (s *SelfTest) validate() error {
	if len(s.Inputs) == 0 {
		return &ManifestFieldError{Field: "self_test.inputs", Reason: "is empty; a self-test needs at least one input tensor"}
	}
	if len(s.Inputs) > MaxSelfTestTensors {
		return &ManifestFieldError{Field: "self_test.inputs", Reason: fmt.Sprintf("has %d tensors, limit %d", len(s.Inputs), MaxSelfTestTensors)}
	}
	if len(s.ExpectedOutputs) > MaxSelfTestTensors {
		return &ManifestFieldError{Field: "self_test.expected_outputs", Reason: fmt.Sprintf("has %d tensors, limit %d", len(s.ExpectedOutputs), MaxSelfTestTensors)}
	}
	for i, a := range s.Inputs {
		if err := a.validate(fmt.Sprintf("self_test.inputs[%d]", i)); err != nil {
			return err
		}
	}
	for i, a := range s.ExpectedOutputs {
		if err := a.validate(fmt.Sprintf("self_test.expected_outputs[%d]", i)); err != nil {
			return err
		}
	}
	if math.IsNaN(s.Tolerance) || math.IsInf(s.Tolerance, 0) || s.Tolerance < 0 {
		return &ManifestFieldError{Field: "self_test.tolerance", Reason: fmt.Sprintf("%v is not a finite number >= 0", s.Tolerance)}
	}
	return nil
}

// Canonical validates m and returns its canonical bytes: compact JSON
// (no insignificant whitespace, no trailing newline), object keys in byte
// order at every level, strings escaped the way encoding/json escapes them
// without HTML escaping, numbers as encoding/json formats a float64 or
// integer. The same Manifest always yields the same bytes, and
// DecodeManifest accepts only bytes this function could have produced.
func (m *Manifest) Canonical() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := encodeManifest(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestBytes)
	}
	return b, nil
}

func encodeManifest(m *Manifest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("%w: encode manifest: %v", ErrInvalid, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// DecodeManifest parses canonical manifest bytes. It does not check a
// signature: callers that act on the result use VerifyManifest. It rejects
// anything over MaxManifestBytes, unknown fields, a schema other than
// ManifestSchema, any field that breaks a rule, and bytes that are not in
// canonical form — so duplicate keys, differently cased keys or extra
// whitespace cannot make two parsers see two different manifests behind
// one signature.
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestBytes)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: manifest is not valid UTF-8", ErrMalformed)
	}
	// Read the schema alone first so a manifest from a newer server gets
	// "schema 2 is not supported" rather than "unknown field".
	var head struct {
		Schema json.RawMessage `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: manifest is not a JSON object: %v", ErrMalformed, err)
	}
	if len(head.Schema) == 0 {
		return nil, fmt.Errorf("%w: manifest has no schema field", ErrInvalid)
	}
	var schema int
	if err := json.Unmarshal(head.Schema, &schema); err != nil || schema != ManifestSchema {
		return nil, fmt.Errorf("%w: manifest schema %s is not supported; this build reads schema %d (a newer server may need a newer agent)",
			ErrInvalid, truncate(string(head.Schema)), ManifestSchema)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: manifest has data after the JSON object", ErrMalformed)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	again, err := encodeManifest(&m)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: manifest is not in canonical form (sorted keys, no whitespace, no duplicate or differently cased keys)", ErrMalformed)
	}
	return &m, nil
}

// SignManifest returns m's canonical bytes and the ed25519 signature over
// them.
func SignManifest(key ed25519.PrivateKey, m *Manifest) (manifest, sig []byte, err error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, nil, fmt.Errorf("%w: signing key is %d bytes, want %d", ErrInvalid, len(key), ed25519.PrivateKeySize)
	}
	b, err := m.Canonical()
	if err != nil {
		return nil, nil, err
	}
	return b, ed25519.Sign(key, b), nil
}

// VerifyManifest checks sig over the exact manifest bytes with pub, and only
// then decodes them. A device calls it with the key it pinned at enrolment,
// before it downloads or trusts anything the manifest names.
func VerifyManifest(pub ed25519.PublicKey, manifest, sig []byte) (*Manifest, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrSignature, len(pub), ed25519.PublicKeySize)
	}
	if len(manifest) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrTooLarge, len(manifest), MaxManifestBytes)
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want %d", ErrSignature, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, manifest, sig) {
		return nil, fmt.Errorf("%w: it does not verify with key %s; the manifest or signature was altered, or was signed by another server", ErrSignature, KeyID(pub))
	}
	return DecodeManifest(manifest)
}

// KeyID is a short, stable name for a public key, for logs and error
// messages: the first 16 hex digits of its sha256.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// CheckArtifact reads r to its end (at most one byte past the manifest's
// size) and checks the size and sha256 against the manifest.
func (m *Manifest) CheckArtifact(r io.Reader) error { return m.Artifact.Check(r) }

// Check reads r to its end, at most one byte past a.Size, and returns an
// error wrapping ErrArtifactMismatch unless the bytes have exactly a.Size
// and a.SHA256. Read errors are returned wrapped as they are.
func (a ArtifactRef) Check(r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, int64(a.Size)+1))
	if err != nil {
		return fmt.Errorf("read artifact %s: %w", short(a.SHA256), err)
	}
	switch {
	case uint64(n) > a.Size:
		return fmt.Errorf("%w: artifact %s is longer than the %d bytes the manifest names", ErrArtifactMismatch, short(a.SHA256), a.Size)
	case uint64(n) < a.Size:
		return fmt.Errorf("%w: artifact %s is %d bytes, the manifest names %d (incomplete download?)", ErrArtifactMismatch, short(a.SHA256), n, a.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return fmt.Errorf("%w: artifact sha256 is %s, the manifest names %s", ErrArtifactMismatch, got, a.SHA256)
	}
	return nil
}

// CheckBytes is Check for bytes already in memory.
func (a ArtifactRef) CheckBytes(b []byte) error { return a.Check(bytes.NewReader(b)) }

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
