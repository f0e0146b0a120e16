package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// Defaults of the local artifact store.
const (
	DefaultMaxArtifactBytes = 512 << 20
	DefaultMinFreeBytes     = 256 << 20
)

// FSStore is the local filesystem artifact store: blobs at
// <dir>/sha256/<first two hex digits>/<sha256>, written under <dir>/tmp and
// renamed into place once complete and synced, so a reader never sees a
// partial blob and a crash leaves only temporary files (removed at the
// next NewFSStore).
type FSStore struct {
	dir     string
	limit   int64
	minFree uint64
}

// FSOptions configure an FSStore.
type FSOptions struct {
	// MaxArtifactBytes is the default upload limit; 0 means
	// DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MinFreeBytes is the free space that must remain on the disk after an
	// upload; 0 means DefaultMinFreeBytes.
	MinFreeBytes uint64
}

// NewFSStore creates (if needed) and opens the store in dir.
func NewFSStore(dir string, opts FSOptions) (*FSStore, error) {
	if opts.MaxArtifactBytes <= 0 {
		opts.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	for _, d := range []string{dir, filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create artifact directory: %w", err)
		}
	}
	// Leftovers of uploads cut short by a crash.
	if tmps, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range tmps {
			os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return &FSStore{dir: dir, limit: opts.MaxArtifactBytes, minFree: opts.MinFreeBytes}, nil
}

func (s *FSStore) path(sha string) string {
	return filepath.Join(s.dir, "sha256", sha[:2], sha)
}

// Put implements ArtifactStore.
func (s *FSStore) Put(ctx context.Context, r io.Reader, opts PutOptions) (proto.ArtifactRef, error) {
	limit := opts.Limit
	if limit <= 0 || limit > s.limit {
		limit = s.limit
	}
	if opts.SHA256 != "" && !proto.ValidSHA256(opts.SHA256) {
		return proto.ArtifactRef{}, fieldErr("sha256", "%q is not 64 lowercase hex digits", truncate(opts.SHA256))
	}
	if opts.Size > limit {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %d bytes, limit %d", ErrArtifactTooLarge, opts.Size, limit)
	}
	// Unknown size: assume the worst the limit allows.
	need := uint64(limit)
	if opts.Size >= 0 {
		need = uint64(opts.Size)
	}
	if free, ok := freeBytes(s.dir); ok && free < need+s.minFree {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %d bytes free, an upload of up to %d bytes must leave %d", ErrInsufficientSpace, free, need, s.minFree)
	}

	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("create temporary artifact file: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // after a successful rename this finds nothing
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, r}, limit+1))
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("store artifact: %w", err)
	}
	if n > limit {
		return proto.ArtifactRef{}, fmt.Errorf("%w: more than %d bytes", ErrArtifactTooLarge, limit)
	}
	if n == 0 {
		return proto.ArtifactRef{}, fieldErr("artifact", "is empty")
	}
	ref := proto.ArtifactRef{SHA256: hex.EncodeToString(h.Sum(nil)), Size: uint64(n)}
	if opts.SHA256 != "" && opts.SHA256 != ref.SHA256 {
		return proto.ArtifactRef{}, fmt.Errorf("%w: received bytes have sha256 %s, the upload declared %s", ErrDigestMismatch, ref.SHA256, opts.SHA256)
	}
	if opts.Size >= 0 && opts.Size != n {
		return proto.ArtifactRef{}, fmt.Errorf("%w: received %d bytes, the upload declared %d", ErrDigestMismatch, n, opts.Size)
	}
	if err := tmp.Sync(); err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("sync artifact: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("write artifact: %w", err)
	}
	dst := s.path(ref.SHA256)
	if _, err := os.Stat(dst); err == nil {
		// Same bytes already stored. Mark them fresh so a sweep's grace
		// period protects them until the publish this upload is for.
		now := time.Now()
		if err := os.Chtimes(dst, now, now); err != nil {
			return proto.ArtifactRef{}, fmt.Errorf("refresh stored artifact: %w", err)
		}
		return ref, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("create artifact directory: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o440); err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("make artifact read-only: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("install artifact: %w", err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return proto.ArtifactRef{}, err
	}
	return ref, nil
}

// Stat implements ArtifactStore.
func (s *FSStore) Stat(ctx context.Context, sha string) (proto.ArtifactRef, error) {
	if !proto.ValidSHA256(sha) {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	st, err := os.Stat(s.path(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, sha)
	}
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("stat artifact: %w", err)
	}
	return proto.ArtifactRef{SHA256: sha, Size: uint64(st.Size())}, nil
}

// Open implements ArtifactStore.
func (s *FSStore) Open(ctx context.Context, sha string) (Blob, error) {
	if !proto.ValidSHA256(sha) {
		return Blob{}, fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	f, err := os.Open(s.path(sha))
	if errors.Is(err, fs.ErrNotExist) {
		return Blob{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, sha)
	}
	if err != nil {
		return Blob{}, fmt.Errorf("open artifact: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return Blob{}, fmt.Errorf("stat artifact: %w", err)
	}
	return Blob{ReadSeekCloser: f, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Walk implements Sweeper.
func (s *FSStore) Walk(ctx context.Context, fn func(string, time.Time) error) error {
	return filepath.WalkDir(filepath.Join(s.dir, "sha256"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !proto.ValidSHA256(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		return fn(d.Name(), info.ModTime())
	})
}

// Delete implements Sweeper.
func (s *FSStore) Delete(ctx context.Context, sha string) error {
	if !proto.ValidSHA256(sha) {
		return fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	if err := os.Remove(s.path(sha)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete artifact: %w", err)
	}
	return nil
}

// ctxReader stops a long copy when the request is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var (
	_ ArtifactStore = (*FSStore)(nil)
	_ Sweeper       = (*FSStore)(nil)
)
