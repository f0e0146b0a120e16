// Package registry is the fleet's model registry: named models with
// immutable semver versions, each version a set of variants (format,
// precision, backend, firmware profiles, minimum agent version) whose
// manifests the server signs with its ed25519 key, and whose artifacts live
// in a content-addressed ArtifactStore. Rollouts ask it, per device, for
// the best variant that device can run (Resolve); devices download
// artifacts through its HTTP handler with Range resume.
//
// It keeps its records in its own buckets of a bbolt file, which may be
// shared with fleet/store.
package registry

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	version "github.com/hashicorp/go-version"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/proto"
)

// Defaults for Options.
const (
	DefaultLockTimeout   = time.Second
	DefaultPresignExpiry = 5 * time.Minute
	DefaultMaxModels     = 10000
)

// Options configure a Registry.
type Options struct {
	// DataDir holds the signing key (SigningKeyFile) and, unless DB, Path
	// or Artifacts say otherwise, registry.db and artifacts/. Required.
	DataDir string
	// DB is a bbolt database shared with other components; the registry
	// uses only its own top-level bucket and does not close DB. If nil,
	// the registry opens Path (default DataDir/registry.db) itself.
	DB   *bolt.DB
	Path string
	// LockTimeout bounds the wait for another process holding Path.
	LockTimeout time.Duration
	// Artifacts is where blobs are kept; nil means an FSStore in
	// DataDir/artifacts with FS.
	Artifacts ArtifactStore
	FS        FSOptions
	// MaxArtifactBytes bounds one uploaded artifact; 0 means
	// DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MaxModels bounds how many models may exist; 0 means DefaultMaxModels.
	MaxModels int
	// PresignExpiry is the lifetime of a presigned download URL when the
	// store is a Presigner; 0 means DefaultPresignExpiry.
	PresignExpiry time.Duration
	Logger        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Registry is the model registry. Its methods are safe for concurrent use.
type Registry struct {
	db        *bolt.DB
	ownDB     bool
	key       *SigningKey
	artifacts ArtifactStore
	opts      Options
	log       *slog.Logger

	mu     sync.RWMutex
	closed bool

	// sweepMu keeps SweepArtifacts (writer) from deleting a blob between a
	// Publish (reader) finding it and recording the version naming it.
	sweepMu sync.RWMutex
}

// Open opens the registry, creating its signing key, buckets and artifact
// directory on first start.
func Open(opts Options) (*Registry, error) {
	if opts.DataDir == "" {
		return nil, errors.New("registry: Options.DataDir is required (it holds the signing key)")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxArtifactBytes <= 0 {
		opts.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if opts.MaxModels <= 0 {
		opts.MaxModels = DefaultMaxModels
	}
	if opts.PresignExpiry <= 0 {
		opts.PresignExpiry = DefaultPresignExpiry
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	key, created, err := LoadOrCreateSigningKey(filepath.Join(opts.DataDir, SigningKeyFile))
	if err != nil {
		return nil, fmt.Errorf("registry signing key: %w", err)
	}
	if created {
		opts.Logger.Info("generated the model signing key; agents pin it at enrolment", "key", key)
	}
	r := &Registry{db: opts.DB, key: key, artifacts: opts.Artifacts, opts: opts, log: opts.Logger}
	if r.artifacts == nil {
		if opts.FS.MaxArtifactBytes == 0 {
			opts.FS.MaxArtifactBytes = opts.MaxArtifactBytes
		}
		fs, err := NewFSStore(filepath.Join(opts.DataDir, "artifacts"), opts.FS)
		if err != nil {
			return nil, err
		}
		r.artifacts = fs
	}
	if r.db == nil {
		path := opts.Path
		if path == "" {
			path = filepath.Join(opts.DataDir, "registry.db")
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
		if err != nil {
			if errors.Is(err, bolterrors.ErrTimeout) {
				return nil, fmt.Errorf("%w: %s (is another server running on this data dir?)", ErrLocked, path)
			}
			return nil, fmt.Errorf("open registry database %s: %w", path, err)
		}
		r.db, r.ownDB = db, true
	}
	if err := migrate(r.db); err != nil {
		if r.ownDB {
			r.db.Close()
		}
		return nil, err
	}
	return r, nil
}

// Close closes the database if the registry opened it. Calls that are in
// flight finish first; later ones return ErrClosed.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.ownDB {
		return r.db.Close()
	}
	return nil
}

// enter guards every public method against use after Close.
func (r *Registry) enter() (func(), error) {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return nil, ErrClosed
	}
	return r.mu.RUnlock, nil
}

// PublicKey is the manifest verification key to hand to agents at
// enrolment/hello.
func (r *Registry) PublicKey() ed25519.PublicKey { return r.key.Public() }

// KeyID is proto.KeyID of PublicKey.
func (r *Registry) KeyID() string { return r.key.ID() }

// Artifacts returns the artifact store.
func (r *Registry) Artifacts() ArtifactStore { return r.artifacts }

// Publish creates version req.Version of model name, signing one manifest
// per variant. Every artifact the request names must already be in the
// artifact store. Publishing the same content again returns the stored
// version and created=false; different content for a published version
// fails with ErrVersionExists.
func (r *Registry) Publish(ctx context.Context, name string, req PublishRequest) (v *Version, created bool, err error) {
	leave, err := r.enter()
	if err != nil {
		return nil, false, err
	}
	defer leave()

	// Bound the store lookups below before anything else: the request is
	// the publisher's, and each blob it names costs a Stat.
	if n := len(req.Variants); n > MaxVariants {
		return nil, false, fieldErr("variants", "has %d entries, limit %d", n, MaxVariants)
	}
	for i, s := range req.Variants {
		if st := s.SelfTest; st != nil && (len(st.Inputs) > proto.MaxSelfTestTensors || len(st.ExpectedOutputs) > proto.MaxSelfTestTensors) {
			return nil, false, fieldErr(fmt.Sprintf("variants[%d].self_test", i), "has %d inputs and %d expected outputs, limit %d each",
				len(st.Inputs), len(st.ExpectedOutputs), proto.MaxSelfTestTensors)
		}
	}
	r.sweepMu.RLock()
	defer r.sweepMu.RUnlock()
	req = cloneRequest(req)
	// Fill in sizes from the store and make sure every blob is there
	// before anything is signed.
	for i := range req.Variants {
		s := &req.Variants[i]
		for _, nr := range s.artifactPtrs(fmt.Sprintf("variants[%d]", i)) {
			if !proto.ValidSHA256(nr.ref.SHA256) {
				continue // normalize names the field
			}
			st, err := r.artifacts.Stat(ctx, nr.ref.SHA256)
			if errors.Is(err, ErrArtifactNotFound) {
				return nil, false, fieldErr(nr.field+".sha256", "%s is not in the artifact store; upload it first", nr.ref.SHA256)
			}
			if err != nil {
				return nil, false, fmt.Errorf("check artifact %s: %w", nr.ref.SHA256, err)
			}
			if nr.ref.Size == 0 {
				nr.ref.Size = st.Size
			} else if nr.ref.Size != st.Size {
				return nil, false, fieldErr(nr.field+".size", "is %d, the stored artifact %s has %d bytes", nr.ref.Size, nr.ref.SHA256, st.Size)
			}
		}
	}
	ver, specs, err := normalize(name, req)
	if err != nil {
		return nil, false, err
	}
	nv := &Version{Model: name, Version: ver, Published: r.opts.Now().UTC(), Lineage: req.Lineage, Variants: make([]Variant, len(specs))}
	for i, s := range specs {
		manifest, sig, err := proto.SignManifest(r.key.priv, manifestFor(name, ver, req.Lineage, s))
		if err != nil {
			return nil, false, fmt.Errorf("sign manifest of variant %s: %w", s.ID, err)
		}
		nv.Variants[i] = Variant{
			ID: s.ID, Format: s.Format, Precision: s.Precision, Backend: s.Backend,
			Profiles: s.Profiles, MinAgentVersion: s.MinAgentVersion, Artifact: s.Artifact,
			SelfTest: s.SelfTest, Metrics: s.Metrics,
			Manifest: manifest, Signature: sig, KeyID: r.key.ID(),
		}
	}

	err = r.db.Update(func(tx *bolt.Tx) error {
		models, versions := buckets(tx)
		var old Version
		found, err := getJSON(versions, versionKey(name, ver), &old)
		if err != nil {
			return err
		}
		if found {
			if sameContent(&old, req.Lineage, specs) {
				v = &old
				return nil
			}
			return fmt.Errorf("%w: %s %s was published on %s; published versions never change, so publish these bytes as a new version",
				ErrVersionExists, name, ver, old.Published.Format(time.RFC3339))
		}
		var m Model
		found, err = getJSON(models, []byte(name), &m)
		if err != nil {
			return err
		}
		if !found {
			if n := models.Stats().KeyN; n >= r.opts.MaxModels {
				return fieldErr("name", "the registry already holds %d models, the limit", n)
			}
			m = Model{Name: name, Created: nv.Published}
		}
		if m.Versions >= MaxVersionsPerModel {
			return fieldErr("version", "model %s already has %d versions, the limit", name, m.Versions)
		}
		m.Versions++
		if m.Latest == "" || semverLess(m.Latest, ver) {
			m.Latest = ver
		}
		if err := putJSON(versions, versionKey(name, ver), nv); err != nil {
			return err
		}
		if err := putJSON(models, []byte(name), &m); err != nil {
			return err
		}
		v, created = nv, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if created {
		r.log.Info("model version published", "model", name, "version", ver, "variants", len(nv.Variants))
	}
	return v, created, nil
}

func semverLess(a, b string) bool {
	va, ea := version.NewSemver(a)
	vb, eb := version.NewSemver(b)
	if ea != nil || eb != nil {
		return a < b
	}
	return va.LessThan(vb)
}

// cloneRequest copies what Publish fills in, so the caller's request is
// left as it was.
func cloneRequest(req PublishRequest) PublishRequest {
	vs := make([]VariantSpec, len(req.Variants))
	copy(vs, req.Variants)
	for i := range vs {
		if st := vs[i].SelfTest; st != nil {
			c := *st
			c.Inputs = append([]proto.ArtifactRef(nil), st.Inputs...)
			c.ExpectedOutputs = append([]proto.ArtifactRef(nil), st.ExpectedOutputs...)
			vs[i].SelfTest = &c
		}
	}
	req.Variants = vs
	return req
}

type namedRefPtr struct {
	field string
	ref   *proto.ArtifactRef
}

func (s *VariantSpec) artifactPtrs(field string) []namedRefPtr {
	refs := []namedRefPtr{{field + ".artifact", &s.Artifact}}
	if s.SelfTest != nil {
		for i := range s.SelfTest.Inputs {
			refs = append(refs, namedRefPtr{fmt.Sprintf("%s.self_test.inputs[%d]", field, i), &s.SelfTest.Inputs[i]})
		}
		for i := range s.SelfTest.ExpectedOutputs {
			refs = append(refs, namedRefPtr{fmt.Sprintf("%s.self_test.expected_outputs[%d]", field, i), &s.SelfTest.ExpectedOutputs[i]})
		}
	}
	return refs
}

// Model returns the model summary, or ErrNotFound.
func (r *Registry) Model(ctx context.Context, name string) (*Model, error) {
	leave, err := r.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var m Model
	err = r.db.View(func(tx *bolt.Tx) error {
		models, _ := buckets(tx)
		found, err := getJSON(models, []byte(name), &m)
		if err == nil && !found {
			err = fmt.Errorf("%w: model %q", ErrNotFound, truncate(name))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Models lists models by name, at most limit of them, starting after the
// name after ("" for the first page).
func (r *Registry) Models(ctx context.Context, after string, limit int) ([]Model, error) {
	leave, err := r.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	out := []Model{}
	err = r.db.View(func(tx *bolt.Tx) error {
		models, _ := buckets(tx)
		c := models.Cursor()
		k, raw := c.First()
		if after != "" {
			k, raw = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, raw = c.Next()
			}
		}
		for ; k != nil && len(out) < limit; k, raw = c.Next() {
			var m Model
			if err := jsonUnmarshal(raw, &m, k); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// Versions returns every version of model name, lowest semver first, or
// ErrNotFound if the model does not exist.
func (r *Registry) Versions(ctx context.Context, name string) ([]Version, error) {
	leave, err := r.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var out []Version
	err = r.db.View(func(tx *bolt.Tx) error {
		models, versions := buckets(tx)
		if models.Get([]byte(name)) == nil {
			return fmt.Errorf("%w: model %q", ErrNotFound, truncate(name))
		}
		out, err = loadVersions(versions, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	sortVersions(out)
	return out, nil
}

// Version returns one version of a model, or ErrNotFound. ver may be
// spelled with a leading "v".
func (r *Registry) Version(ctx context.Context, name, ver string) (*Version, error) {
	leave, err := r.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	pv, err := ParseVersion(ver)
	if err != nil {
		return nil, err
	}
	var v Version
	err = r.db.View(func(tx *bolt.Tx) error {
		_, versions := buckets(tx)
		found, err := getJSON(versions, versionKey(name, pv.String()), &v)
		if err == nil && !found {
			err = fmt.Errorf("%w: model %q has no version %s", ErrNotFound, truncate(name), pv.String())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// Resolve returns the best variant of model name at version ver for a
// device, or an *IncompatibleError (wrapping ErrIncompatible) that says
// why each variant does not fit. A rollout resolving many devices should
// fetch the Version once and call its Resolve method instead.
func (r *Registry) Resolve(ctx context.Context, name, ver string, d Device) (*Version, *Variant, error) {
	v, err := r.Version(ctx, name, ver)
	if err != nil {
		return nil, nil, err
	}
	variant, err := v.Resolve(d)
	if err != nil {
		return v, nil, err
	}
	return v, variant, nil
}

// SweepArtifacts removes blobs that no published version names and that
// were last stored more than grace ago. Uploads awaiting their publish
// (POST /api/v1/artifacts, then the JSON publish) are younger than grace;
// blobs left by publishes that failed are not. Stores that are not a
// Sweeper are left alone (removed=0). Publishes wait while a sweep runs.
func (r *Registry) SweepArtifacts(ctx context.Context, grace time.Duration) (removed int, err error) {
	leave, err := r.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	sw, ok := r.artifacts.(Sweeper)
	if !ok {
		return 0, nil
	}
	r.sweepMu.Lock()
	defer r.sweepMu.Unlock()
	used := map[string]bool{}
	err = r.db.View(func(tx *bolt.Tx) error {
		_, versions := buckets(tx)
		return versions.ForEach(func(k, raw []byte) error {
			var v Version
			if err := jsonUnmarshal(raw, &v, k); err != nil {
				return err
			}
			for i := range v.Variants {
				spec := v.Variants[i].spec()
				for _, nr := range spec.artifactPtrs("") {
					used[nr.ref.SHA256] = true
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("collect referenced artifacts: %w", err)
	}
	cutoff := r.opts.Now().Add(-grace)
	err = sw.Walk(ctx, func(sha string, stored time.Time) error {
		if used[sha] || stored.After(cutoff) {
			return nil
		}
		if err := sw.Delete(ctx, sha); err != nil {
			return err
		}
		removed++
		return nil
	})
	if removed > 0 {
		r.log.Info("removed unreferenced artifacts", "count", removed, "grace", grace)
	}
	if err != nil {
		return removed, fmt.Errorf("sweep artifacts: %w", err)
	}
	return removed, nil
}
