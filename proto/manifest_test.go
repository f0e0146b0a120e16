package proto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"
)

// testKey is deterministic so failures reproduce; it signs nothing real.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

var testArtifact = []byte("not really a tflite model, but bytes with a digest")

func validManifest() *Manifest {
	in := []byte{1, 2, 3, 4}
	out := []byte{9, 8}
	return &Manifest{
		Schema:          ManifestSchema,
		Model:           "person-detect",
		Version:         "1.2.0-rc.1",
		Variant:         "tflite-int8",
		Format:          "tflite",
		Precision:       "int8",
		Backend:         "tflite",
		Artifact:        ArtifactRef{SHA256: sha(testArtifact), Size: uint64(len(testArtifact))},
		Profiles:        []string{"raspberry-pi-4", "generic-arm64"},
		MinAgentVersion: ">= 0.3.0, < 2.0.0",
		Metrics:         map[string]float64{"top1": 0.871, "latency_ms@rpi4": 41.5},
		Lineage: Lineage{
			SourceCommit: "0123456789abcdef0123456789abcdef01234567",
			DatasetHash:  "sha256:" + sha([]byte("dataset")),
			Metrics:      map[string]float64{"top1": 0.88, "zero": -0.0},
			Notes:        "trained on <plant-7> & \"friends\"\nsecond line ünïcode \u2028",
		},
		SelfTest: &SelfTest{
			Inputs:          []ArtifactRef{{SHA256: sha(in), Size: uint64(len(in))}},
			ExpectedOutputs: []ArtifactRef{{SHA256: sha(out), Size: uint64(len(out))}},
			Tolerance:       1,
		},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	m := validManifest()
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := validManifest().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("two encodings of the same manifest differ:\n%s\n%s", b, b2)
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatalf("decode canonical bytes: %v\n%s", err, b)
	}
	again, err := got.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("decode/encode changed the bytes:\n%s\n%s", b, again)
	}
	if got.Lineage.Notes != m.Lineage.Notes || got.Artifact != m.Artifact || got.SelfTest.Tolerance != 1 {
		t.Fatalf("decoded manifest differs: %+v", got)
	}
	// Canonical form is compact and does not HTML-escape.
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil || !bytes.Equal(compact.Bytes(), b) {
		t.Fatalf("canonical bytes are not compact JSON (%v): %s", err, b)
	}
	if !bytes.Contains(b, []byte(`<plant-7> & \"friends\"\nsecond`)) {
		t.Fatalf("notes not encoded as documented: %s", b)
	}
}

// TestManifestKeysSorted walks the token stream and checks that every
// object's keys are in byte order, which is what makes the JSON canonical.
// It fails when someone adds a field out of order.
func TestManifestKeysSorted(t *testing.T) {
	b, err := validManifest().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		object bool
		last   string
		expect bool // next string token is a key
	}
	var stack []*frame
	keys := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.expect
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.object {
					top.expect = true
				}
				stack = append(stack, &frame{object: v == '{', expect: v == '{'})
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if isKey {
				keys++
				if v <= top.last {
					t.Errorf("key %q follows %q: keys out of order", v, top.last)
				}
				top.last = v
				top.expect = false
				continue
			}
		}
		if top != nil && top.object {
			top.expect = true
		}
	}
	if keys < 20 {
		t.Fatalf("only %d keys seen; the walk is broken", keys)
	}
}

func TestVerifyManifest(t *testing.T) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	b, sig, err := SignManifest(key, validManifest())
	if err != nil {
		t.Fatal(err)
	}
	m, err := VerifyManifest(pub, b, sig)
	if err != nil {
		t.Fatalf("valid signature rejected: %v", err)
	}
	if err := m.CheckArtifact(bytes.NewReader(testArtifact)); err != nil {
		t.Fatalf("the right artifact rejected: %v", err)
	}

	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	other := testKey(2).Public().(ed25519.PublicKey)
	cases := []struct {
		name          string
		pub           ed25519.PublicKey
		manifest, sig []byte
		want          error
	}{
		{"manifest first byte flipped", pub, flip(b, 0), sig, ErrSignature},
		{"manifest middle byte flipped", pub, flip(b, len(b)/2), sig, ErrSignature},
		{"manifest last byte flipped", pub, flip(b, len(b)-1), sig, ErrSignature},
		{"signature byte flipped", pub, b, flip(sig, 10), ErrSignature},
		{"signature last byte flipped", pub, b, flip(sig, len(sig)-1), ErrSignature},
		{"wrong key", other, b, sig, ErrSignature},
		{"short signature", pub, b, sig[:63], ErrSignature},
		{"no signature", pub, b, nil, ErrSignature},
		{"short key", pub[:31], b, sig, ErrSignature},
		{"oversized manifest", pub, make([]byte, MaxManifestBytes+1), sig, ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := VerifyManifest(c.pub, c.manifest, c.sig)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, %v; want %v", m, err, c.want)
			}
			if m != nil {
				t.Fatal("a manifest came back with an error")
			}
		})
	}

	// A correctly signed but non-canonical manifest is still refused: a
	// server bug must not produce bytes that two decoders read differently.
	var loose bytes.Buffer
	if err := json.Indent(&loose, b, "", " "); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyManifest(pub, loose.Bytes(), ed25519.Sign(key, loose.Bytes())); !errors.Is(err, ErrMalformed) {
		t.Fatalf("indented manifest: got %v, want ErrMalformed", err)
	}
}

func TestCheckArtifact(t *testing.T) {
	m := validManifest()
	flipped := bytes.Clone(testArtifact)
	flipped[7] ^= 0x80
	cases := []struct {
		name string
		r    io.Reader
		want error
	}{
		{"exact", bytes.NewReader(testArtifact), nil},
		{"one-byte reads", iotest.OneByteReader(bytes.NewReader(testArtifact)), nil},
		{"byte flipped", bytes.NewReader(flipped), ErrArtifactMismatch},
		{"truncated", bytes.NewReader(testArtifact[:len(testArtifact)-1]), ErrArtifactMismatch},
		{"one byte extra", bytes.NewReader(append(bytes.Clone(testArtifact), 0)), ErrArtifactMismatch},
		{"empty", bytes.NewReader(nil), ErrArtifactMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.CheckArtifact(c.r)
			if c.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	readErr := errors.New("connection reset")
	if err := m.CheckArtifact(iotest.ErrReader(readErr)); !errors.Is(err, readErr) || errors.Is(err, ErrArtifactMismatch) {
		t.Fatalf("read error: got %v, want the read error, not a mismatch", err)
	}
	// An endless stream is read only one byte past the size.
	n := &countingReader{}
	if err := m.CheckArtifact(n); !errors.Is(err, ErrArtifactMismatch) {
		t.Fatalf("endless stream: %v", err)
	}
	if n.n != int64(len(testArtifact))+1 {
		t.Fatalf("read %d bytes of an endless stream, want %d", n.n, len(testArtifact)+1)
	}
	if err := m.SelfTest.Inputs[0].CheckBytes([]byte{1, 2, 3, 4}); err != nil {
		t.Fatalf("self-test input: %v", err)
	}
}

type countingReader struct{ n int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

func TestManifestValidation(t *testing.T) {
	cases := []struct {
		field string
		edit  func(m *Manifest)
	}{
		{"schema", func(m *Manifest) { m.Schema = 2 }},
		{"model", func(m *Manifest) { m.Model = "Person Detect" }},
		{"model", func(m *Manifest) { m.Model = "" }},
		{"version", func(m *Manifest) { m.Version = "1.2" }},
		{"version", func(m *Manifest) { m.Version = "v1.2.0" }},
		{"version", func(m *Manifest) { m.Version = "1.2.0+build5" }},
		{"variant", func(m *Manifest) { m.Variant = "a/b" }},
		{"format", func(m *Manifest) { m.Format = "pt" }},
		{"precision", func(m *Manifest) { m.Precision = "" }},
		{"backend", func(m *Manifest) { m.Backend = "TFLite" }},
		{"artifact.sha256", func(m *Manifest) { m.Artifact.SHA256 = strings.ToUpper(m.Artifact.SHA256) }},
		{"artifact.size", func(m *Manifest) { m.Artifact.Size = 0 }},
		{"artifact.size", func(m *Manifest) { m.Artifact.Size = MaxArtifactBytes + 1 }},
		{"profiles[1]", func(m *Manifest) { m.Profiles[1] = "Bad Profile" }},
		{"profiles[1]", func(m *Manifest) { m.Profiles[1] = m.Profiles[0] }},
		{"profiles", func(m *Manifest) { m.Profiles = make([]string, MaxManifestList+1) }},
		{"min_agent_version", func(m *Manifest) { m.MinAgentVersion = ">= 1.0\n" }},
		{"metrics.top1", func(m *Manifest) { m.Metrics["top1"] = math.NaN() }},
		{"metrics", func(m *Manifest) { m.Metrics["has space"] = 1 }},
		{"lineage.metrics.top1", func(m *Manifest) { m.Lineage.Metrics["top1"] = math.Inf(1) }},
		{"lineage.source_commit", func(m *Manifest) { m.Lineage.SourceCommit = "main" }},
		{"lineage.dataset_hash", func(m *Manifest) { m.Lineage.DatasetHash = "has space" }},
		{"lineage.notes", func(m *Manifest) { m.Lineage.Notes = strings.Repeat("x", MaxNotesBytes+1) }},
		{"lineage.notes", func(m *Manifest) { m.Lineage.Notes = "\xff" }},
		{"self_test.inputs", func(m *Manifest) { m.SelfTest.Inputs = nil }},
		{"self_test.inputs[0].sha256", func(m *Manifest) { m.SelfTest.Inputs[0].SHA256 = "abc" }},
		{"self_test.expected_outputs[0].size", func(m *Manifest) { m.SelfTest.ExpectedOutputs[0].Size = 0 }},
		{"self_test.tolerance", func(m *Manifest) { m.SelfTest.Tolerance = -1 }},
	}
	for _, c := range cases {
		m := validManifest()
		c.edit(m)
		_, err := m.Canonical()
		var fe *ManifestFieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want a field error", c.field, err)
			continue
		}
		if fe.Field != c.field {
			t.Errorf("error names field %q, want %q (%v)", fe.Field, c.field, err)
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("message %q does not name the field %q", err, c.field)
		}
	}
}

func TestDecodeManifestMalformed(t *testing.T) {
	good, err := validManifest().Canonical()
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"not json", "manifest", ErrMalformed},
		{"array", "[]", ErrMalformed},
		{"invalid utf-8", strings.Replace(s, "ü", "\xff", 1), ErrMalformed},
		{"no schema", strings.Replace(s, `"schema":1,`, "", 1), ErrInvalid},
		{"future schema", strings.Replace(s, `"schema":1`, `"schema":2`, 1), ErrInvalid},
		{"string schema", strings.Replace(s, `"schema":1`, `"schema":"1"`, 1), ErrInvalid},
		{"unknown field", strings.Replace(s, `"schema":1,`, `"schema":1,"extra":true,`, 1), ErrMalformed},
		{"duplicate key", strings.Replace(s, `"model":"person-detect"`, `"model":"person-detect","model":"person-detect"`, 1), ErrMalformed},
		{"case-folded key", strings.Replace(s, `"model":`, `"MODEL":`, 1), ErrMalformed},
		{"whitespace", strings.Replace(s, `"schema":1`, `"schema": 1`, 1), ErrMalformed},
		{"trailing newline", s + "\n", ErrMalformed},
		{"trailing object", s + "{}", ErrMalformed},
		{"escaped html", strings.Replace(s, "<plant-7>", `\u003cplant-7>`, 1), ErrMalformed},
		{"float spelled differently", strings.Replace(s, `"tolerance":1`, `"tolerance":1.0`, 1), ErrMalformed},
		{"bad field value", strings.Replace(s, `"format":"tflite"`, `"format":"exe"`, 1), ErrInvalid},
		{"wrong type", strings.Replace(s, `"size":`+jsonNum(len(testArtifact)), `"size":-1`, 1), ErrMalformed},
		{"too large", s + strings.Repeat(" ", MaxManifestBytes), ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.in == s && c.name != "empty" {
				t.Fatal("the edit did not apply; the case would pass vacuously")
			}
			m, err := DecodeManifest([]byte(c.in))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %+v, %v; want %v", m, err, c.want)
			}
		})
	}
}

func jsonNum(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// FuzzDecodeManifest feeds arbitrary bytes to the parser devices run on
// what the network hands them. It must never panic, and whatever it
// accepts must be canonical and valid.
func FuzzDecodeManifest(f *testing.F) {
	good, err := validManifest().Canonical()
	if err != nil {
		f.Fatal(err)
	}
	minimal := validManifest()
	minimal.SelfTest, minimal.Profiles, minimal.Metrics, minimal.MinAgentVersion, minimal.Lineage = nil, nil, nil, "", Lineage{}
	small, err := minimal.Canonical()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(small)
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`{"schema":2,"future":true}`))
	f.Add([]byte(`{"schema":1,"schema":1}`))
	f.Add(bytes.Replace(good, []byte(`"model"`), []byte(`"Model"`), 1))
	f.Add([]byte{})
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error outside the documented sentinels: %v", err)
			}
			return
		}
		again, err := m.Canonical()
		if err != nil {
			t.Fatalf("accepted manifest does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical bytes:\n%q\n%q", b, again)
		}
	})
}

// BenchmarkVerifyManifest is what a device pays per desired model before
// it downloads anything: signature check, decode, canonical re-encode.
func BenchmarkVerifyManifest(b *testing.B) {
	key := testKey(1)
	pub := key.Public().(ed25519.PublicKey)
	m, sig, err := SignManifest(key, validManifest())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		if _, err := VerifyManifest(pub, m, sig); err != nil {
			b.Fatal(err)
		}
	}
}
