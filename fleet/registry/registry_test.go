package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/proto"
)

// openTest opens a registry whose data dir is a fresh t.TempDir(). At
// cleanup it closes the registry, reopens its bbolt file and fails the test
// if bbolt's consistency check finds anything wrong.
func openTest(t testing.TB, opts Options) *Registry {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.FS.MinFreeBytes == 0 {
		opts.FS.MinFreeBytes = 1 // the test disk may be small; the space check has its own test
	}
	if opts.MaxArtifactBytes == 0 {
		opts.MaxArtifactBytes = 1 << 20
	}
	r, err := Open(opts)
	if err != nil {
		t.Fatalf("open registry: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
		if opts.DB == nil {
			path := opts.Path
			if path == "" {
				path = filepath.Join(opts.DataDir, "registry.db")
			}
			checkBolt(t, path)
		}
	})
	return r
}

// checkBolt runs bbolt's consistency check over the file at path.
func checkBolt(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Errorf("reopen %s for the integrity check: %v", path, err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("bbolt integrity check of %s: %v", path, err)
	}
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// put stores b and returns its reference.
func put(t testing.TB, r *Registry, b []byte) proto.ArtifactRef {
	t.Helper()
	ref, err := r.Artifacts().Put(context.Background(), bytes.NewReader(b), PutOptions{Size: int64(len(b))})
	if err != nil {
		t.Fatalf("put artifact: %v", err)
	}
	if ref.SHA256 != digest(b) || ref.Size != uint64(len(b)) {
		t.Fatalf("put returned %+v for %d bytes with sha256 %s", ref, len(b), digest(b))
	}
	return ref
}

func blob(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s-%d;", seed, i)
	}
	return b.Bytes()[:n]
}

func request(ver string, refs ...proto.ArtifactRef) PublishRequest {
	req := PublishRequest{
		Version: ver,
		Lineage: proto.Lineage{SourceCommit: "abcdef0123456", DatasetHash: "sha256:" + digest([]byte("ds")), Metrics: map[string]float64{"top1": 0.9}, Notes: "first cut"},
	}
	specs := []VariantSpec{
		{Format: "tflite", Precision: "int8", Backend: "tflite", Profiles: []string{"raspberry-pi-4"}, MinAgentVersion: ">= 0.2.0"},
		{Format: "onnx", Precision: "fp32", Backend: "onnxruntime"},
	}
	for i, ref := range refs {
		s := specs[i%len(specs)]
		if i >= len(specs) {
			s.ID = fmt.Sprintf("extra-%d", i)
		}
		s.Artifact = ref
		req.Variants = append(req.Variants, s)
	}
	return req
}

func TestPublishAndRead(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, Options{})
	a := put(t, r, blob("tflite", 3000))
	b := put(t, r, blob("onnx", 5000))

	v, created, err := r.Publish(ctx, "person-detect", request("v1.2.0", proto.ArtifactRef{SHA256: a.SHA256}, b))
	if err != nil || !created {
		t.Fatalf("publish: %v, created=%v", err, created)
	}
	if v.Version != "1.2.0" {
		t.Fatalf("version stored as %q, want the canonical 1.2.0", v.Version)
	}
	if got := v.Variants[0]; got.ID != "tflite-int8" || got.Artifact != a {
		t.Fatalf("variant 0 = %+v; want id tflite-int8 and the stored size filled in", got)
	}

	// Each variant's manifest verifies with the registry's public key and
	// names the stored bytes.
	for _, va := range v.Variants {
		m, err := proto.VerifyManifest(ed25519.PublicKey(r.PublicKey()), va.Manifest, va.Signature)
		if err != nil {
			t.Fatalf("variant %s: %v", va.ID, err)
		}
		if m.Model != "person-detect" || m.Version != "1.2.0" || m.Variant != va.ID || m.Artifact != va.Artifact || m.Lineage.Notes != "first cut" {
			t.Fatalf("manifest %+v does not describe variant %+v", m, va)
		}
		blob, err := r.Artifacts().Open(ctx, va.Artifact.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.CheckArtifact(blob); err != nil {
			t.Fatalf("stored artifact fails its manifest: %v", err)
		}
		blob.Close()
		if va.KeyID != r.KeyID() {
			t.Fatalf("key id %q, want %q", va.KeyID, r.KeyID())
		}
	}

	// Same content again: idempotent, the stored record comes back.
	again, created, err := r.Publish(ctx, "person-detect", request("1.2.0", a, b))
	if err != nil || created {
		t.Fatalf("re-publish identical: %v, created=%v", err, created)
	}
	if !again.Published.Equal(v.Published) || !bytes.Equal(again.Variants[1].Signature, v.Variants[1].Signature) {
		t.Fatal("idempotent publish did not return the stored version")
	}
	// Different bytes, same version: refused.
	c := put(t, r, blob("other", 3000))
	_, _, err = r.Publish(ctx, "person-detect", request("1.2.0", c, b))
	if !errors.Is(err, ErrVersionExists) || !strings.Contains(err.Error(), "new version") {
		t.Fatalf("re-publish different bytes: got %v, want ErrVersionExists with advice", err)
	}
	// Different metadata, same bytes: refused too.
	req := request("1.2.0", a, b)
	req.Lineage.Notes = "edited"
	if _, _, err := r.Publish(ctx, "person-detect", req); !errors.Is(err, ErrVersionExists) {
		t.Fatalf("re-publish different lineage: got %v", err)
	}

	for _, ver := range []string{"1.10.0", "1.9.0", "2.0.0-rc.1", "1.2.1"} {
		if _, _, err := r.Publish(ctx, "person-detect", request(ver, a)); err != nil {
			t.Fatalf("publish %s: %v", ver, err)
		}
	}
	m, err := r.Model(ctx, "person-detect")
	if err != nil {
		t.Fatal(err)
	}
	if m.Latest != "2.0.0-rc.1" || m.Versions != 5 {
		t.Fatalf("model summary %+v; want latest 2.0.0-rc.1 of 5 versions", m)
	}
	vs, err := r.Versions(ctx, "person-detect")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, v := range vs {
		order = append(order, v.Version)
	}
	if got, want := strings.Join(order, " "), "1.2.0 1.2.1 1.9.0 1.10.0 2.0.0-rc.1"; got != want {
		t.Fatalf("versions in order %q, want %q", got, want)
	}
	if _, err := r.Version(ctx, "person-detect", "3.0.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing version: %v", err)
	}
	if _, err := r.Model(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing model: %v", err)
	}
	if _, err := r.Versions(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("versions of a missing model: %v", err)
	}
	// A model whose name extends another's must not pick up its versions.
	if _, _, err := r.Publish(ctx, "person-detect-2", request("0.1.0", a)); err != nil {
		t.Fatal(err)
	}
	if vs, _ := r.Versions(ctx, "person-detect"); len(vs) != 5 {
		t.Fatalf("person-detect has %d versions after publishing person-detect-2", len(vs))
	}
	list, err := r.Models(ctx, "", 10)
	if err != nil || len(list) != 2 || list[0].Name != "person-detect" || list[1].Name != "person-detect-2" {
		t.Fatalf("models: %+v, %v", list, err)
	}
	if page, _ := r.Models(ctx, "person-detect", 10); len(page) != 1 || page[0].Name != "person-detect-2" {
		t.Fatalf("second page: %+v", page)
	}
}

func TestPublishValidation(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, Options{})
	a := put(t, r, blob("a", 100))
	in := put(t, r, blob("in", 8))
	cases := []struct {
		field string
		name  string
		edit  func(*PublishRequest)
	}{
		{"name", "Bad Name", nil},
		{"name", "", nil},
		{"version", "m", func(p *PublishRequest) { p.Version = "latest" }},
		{"version", "m", func(p *PublishRequest) { p.Version = "1.2" }},
		{"version", "m", func(p *PublishRequest) { p.Version = "1.2.3+build.7" }},
		{"variants", "m", func(p *PublishRequest) { p.Variants = nil }},
		{"variants", "m", func(p *PublishRequest) {
			for len(p.Variants) <= MaxVariants {
				v := p.Variants[0]
				v.ID = fmt.Sprintf("v%d", len(p.Variants))
				p.Variants = append(p.Variants, v)
			}
		}},
		{"variants[1].id", "m", func(p *PublishRequest) { p.Variants[0].ID, p.Variants[1].ID = "same", "same" }},
		{"variants[0].id", "m", func(p *PublishRequest) { p.Variants[0].ID = "Has Space" }},
		{"variants[0].format", "m", func(p *PublishRequest) { p.Variants[0].Format = "pt" }},
		{"variants[0].precision", "m", func(p *PublishRequest) { p.Variants[0].Precision = ""; p.Variants[0].ID = "x" }},
		{"variants[1].backend", "m", func(p *PublishRequest) { p.Variants[1].Backend = "" }},
		{"variants[0].profiles[0]", "m", func(p *PublishRequest) { p.Variants[0].Profiles = []string{"Raspberry Pi"} }},
		{"variants[0].min_agent_version", "m", func(p *PublishRequest) { p.Variants[0].MinAgentVersion = "at least one" }},
		{"variants[0].artifact.sha256", "m", func(p *PublishRequest) { p.Variants[0].Artifact.SHA256 = "xyz" }},
		{"variants[0].artifact.sha256", "m", func(p *PublishRequest) { p.Variants[0].Artifact.SHA256 = digest([]byte("never uploaded")) }},
		{"variants[0].artifact.size", "m", func(p *PublishRequest) { p.Variants[0].Artifact.Size = a.Size + 1 }},
		{"variants[0].metrics", "m", func(p *PublishRequest) { p.Variants[0].Metrics = map[string]float64{"bad key": 1} }},
		{"variants[0].self_test.inputs", "m", func(p *PublishRequest) { p.Variants[0].SelfTest = &proto.SelfTest{} }},
		{"variants[0].self_test.inputs[0].sha256", "m", func(p *PublishRequest) {
			p.Variants[0].SelfTest = &proto.SelfTest{Inputs: []proto.ArtifactRef{{SHA256: digest([]byte("missing"))}}}
		}},
		{"variants[0].self_test.tolerance", "m", func(p *PublishRequest) {
			p.Variants[0].SelfTest = &proto.SelfTest{Inputs: []proto.ArtifactRef{in}, Tolerance: -1}
		}},
		{"variants[0].self_test", "m", func(p *PublishRequest) {
			p.Variants[0].SelfTest = &proto.SelfTest{Inputs: make([]proto.ArtifactRef, proto.MaxSelfTestTensors+1)}
		}},
		{"lineage.source_commit", "m", func(p *PublishRequest) { p.Lineage.SourceCommit = "HEAD" }},
		{"lineage.notes", "m", func(p *PublishRequest) { p.Lineage.Notes = strings.Repeat("n", proto.MaxNotesBytes+1) }},
	}
	for _, c := range cases {
		req := request("1.0.0", a, a)
		if c.edit != nil {
			c.edit(&req)
		}
		_, _, err := r.Publish(ctx, c.name, req)
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want a field error", c.field, err)
			continue
		}
		if fe.Field != c.field {
			t.Errorf("error names %q, want %q: %v", fe.Field, c.field, err)
		}
	}
	if ms, _ := r.Models(ctx, "", 10); len(ms) != 0 {
		t.Fatalf("invalid requests created models: %+v", ms)
	}
	// The valid base request does publish, so the cases above failed for
	// their edit and not for the base.
	if _, _, err := r.Publish(ctx, "m", request("1.0.0", a, a)); err != nil {
		t.Fatalf("base request: %v", err)
	}
}

func TestReopenKeepsKeyAndData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := Open(Options{DataDir: dir, FS: FSOptions{MinFreeBytes: 1}})
	if err != nil {
		t.Fatal(err)
	}
	a := put(t, r, blob("a", 100))
	v, _, err := r.Publish(ctx, "m", request("1.0.0", a))
	if err != nil {
		t.Fatal(err)
	}
	key := r.PublicKey()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Model(ctx, "m"); !errors.Is(err, ErrClosed) {
		t.Fatalf("use after close: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, SigningKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("signing key file: %v, mode %v; want 0600", err, st.Mode())
	}

	r2 := openTest(t, Options{DataDir: dir})
	if !bytes.Equal(r2.PublicKey(), key) {
		t.Fatal("the signing key changed across a restart; agents would reject every new manifest")
	}
	v2, err := r2.Version(ctx, "m", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v2.Variants[0].Manifest, v.Variants[0].Manifest) || !v2.Published.Equal(v.Published) {
		t.Fatal("version read back differs from what was published")
	}
}

func TestSigningKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SigningKeyFile)
	k, created, err := LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v, %v", err, created)
	}
	if got := fmt.Sprint(k.LogValue()); strings.Contains(got, hex.EncodeToString(k.priv.Seed())) || !strings.Contains(got, k.ID()) {
		t.Fatalf("log value %q leaks the key or lacks its id", got)
	}
	k2, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created || !bytes.Equal(k2.Public(), k.Public()) {
		t.Fatalf("reload: %v, created=%v", err, created)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreateSigningKey(path)
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: got %v, want ErrKeyPermissions with the fix", mode, err)
		}
		_, err = Open(Options{DataDir: dir})
		if !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("Open with key mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSigningKey(path); err != nil {
		t.Fatalf("owner-read-only key refused: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "garbage.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateSigningKey(filepath.Join(dir, "garbage.key")); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Fatalf("garbage key file: %v", err)
	}
}

func TestSharedDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("devices"))
		if err != nil {
			return err
		}
		return b.Put([]byte("gw1"), []byte("{}"))
	}); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{DB: db})
	a := put(t, r, blob("a", 10))
	if _, _, err := r.Publish(ctx, "m", request("1.0.0", a)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// The registry left the shared database open and its buckets alone.
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("devices")).Get([]byte("gw1")); string(v) != "{}" {
			return fmt.Errorf("devices bucket changed: %q", v)
		}
		var top []string
		tx.ForEach(func(name []byte, _ *bolt.Bucket) error { top = append(top, string(name)); return nil })
		if strings.Join(top, ",") != "devices,registry" {
			return fmt.Errorf("top-level buckets %v; the registry should add only \"registry\"", top)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	checkBolt(t, path)
}

func TestLockedAndSchema(t *testing.T) {
	dir := t.TempDir()
	r := openTest(t, Options{DataDir: dir})
	_ = r
	_, err := Open(Options{DataDir: dir, LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open of the same data dir: got %v, want ErrLocked", err)
	}

	path := filepath.Join(t.TempDir(), "new.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := migrate(db); err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRoot).Bucket(bucketMeta).Put(keySchema, []byte(fmt.Sprint(schemaVersion+1)))
	})
	if _, err := Open(Options{DataDir: t.TempDir(), DB: db}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("newer schema: got %v, want ErrSchemaTooNew", err)
	}
}

// TestMigration1 starts from a database without registry buckets and
// checks what migration 1 creates, and that running it twice is harmless.
func TestMigration1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := migrate(db); err != nil {
			t.Fatal(err)
		}
	}
	err = db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketRoot)
		if root == nil {
			return errors.New("no registry bucket")
		}
		for _, b := range [][]byte{bucketMeta, bucketModels, bucketVersions} {
			if root.Bucket(b) == nil {
				return fmt.Errorf("no %s bucket", b)
			}
		}
		if v := root.Bucket(bucketMeta).Get(keySchema); string(v) != "1" {
			return fmt.Errorf("schema %q, want 1", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	checkBolt(t, path)
}

// TestConcurrentPublish publishes the same version from many goroutines:
// exactly one creates it, the others get it back unchanged.
func TestConcurrentPublish(t *testing.T) {
	ctx := context.Background()
	r := openTest(t, Options{})
	a := put(t, r, blob("a", 1000))
	var wg sync.WaitGroup
	var mu sync.Mutex
	createdN := 0
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, created, err := r.Publish(ctx, "m", request("1.0.0", a))
			if err != nil {
				errs <- err
				return
			}
			if created {
				mu.Lock()
				createdN++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if createdN != 1 {
		t.Fatalf("%d publishers created the version, want exactly 1", createdN)
	}
}

func TestSweepArtifacts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := openTest(t, Options{DataDir: dir})
	model := put(t, r, blob("model", 500))
	input := put(t, r, blob("input", 8))
	orphan := put(t, r, blob("orphan", 700))
	req := request("1.0.0", model)
	req.Variants[0].SelfTest = &proto.SelfTest{Inputs: []proto.ArtifactRef{input}}
	if _, _, err := r.Publish(ctx, "m", req); err != nil {
		t.Fatal(err)
	}
	// Everything is fresh: an hour's grace keeps it all.
	if n, err := r.SweepArtifacts(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("sweep with grace: removed %d, %v", n, err)
	}
	// Age every blob; only the orphan goes.
	old := time.Now().Add(-2 * time.Hour)
	for _, ref := range []proto.ArtifactRef{model, input, orphan} {
		p := filepath.Join(dir, "artifacts", "sha256", ref.SHA256[:2], ref.SHA256)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// Uploading the orphan's bytes again makes it fresh (a publish is
	// about to name it), so it survives this sweep.
	put(t, r, blob("orphan", 700))
	if n, err := r.SweepArtifacts(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("sweep after re-upload: removed %d, %v", n, err)
	}
	n, err := r.SweepArtifacts(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("sweep: removed %d, %v; want the orphan only", n, err)
	}
	if _, err := r.Artifacts().Stat(ctx, orphan.SHA256); !errors.Is(err, ErrArtifactNotFound) {
		t.Fatalf("orphan still stored: %v", err)
	}
	for _, ref := range []proto.ArtifactRef{model, input} {
		if _, err := r.Artifacts().Stat(ctx, ref.SHA256); err != nil {
			t.Fatalf("referenced blob %s removed: %v", ref.SHA256[:12], err)
		}
	}
}
