package registry

import (
	"context"
	"io"
	"net/url"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// ArtifactStore keeps model artifacts (and self-test tensors) by content:
// the key of a blob is its sha256, so storing the same bytes twice is a
// no-op and a blob can never change under a published manifest.
type ArtifactStore interface {
	// Put reads r to its end and stores the bytes. It fails with
	// ErrArtifactTooLarge past opts.Limit bytes and with ErrDigestMismatch
	// if opts names a sha256 or size the bytes do not have; nothing is
	// stored then.
	Put(ctx context.Context, r io.Reader, opts PutOptions) (proto.ArtifactRef, error)
	// Stat returns the blob's size, or ErrArtifactNotFound.
	Stat(ctx context.Context, sha256 string) (proto.ArtifactRef, error)
	// Open returns the blob for reading and seeking (HTTP Range), or
	// ErrArtifactNotFound.
	Open(ctx context.Context, sha256 string) (Blob, error)
}

// Presigner is implemented by stores that devices can download from
// directly: the artifact handler redirects to a short-lived URL instead of
// proxying the bytes.
type Presigner interface {
	PresignGet(ctx context.Context, sha256 string, expiry time.Duration) (*url.URL, error)
}

// Sweeper is implemented by stores whose unreferenced blobs the registry
// can remove (Registry.SweepArtifacts).
type Sweeper interface {
	// Walk calls fn for every stored blob with the last time it was
	// stored (a Put of bytes already there counts as storing them again).
	Walk(ctx context.Context, fn func(sha256 string, stored time.Time) error) error
	// Delete removes a blob; a missing blob is not an error.
	Delete(ctx context.Context, sha256 string) error
}

// PutOptions bound and check an upload.
type PutOptions struct {
	// Limit is the largest accepted size in bytes; 0 means the store's
	// default.
	Limit int64
	// Size is the expected size if known (a Content-Length), else -1. It
	// lets the store refuse early, before reading, when the disk is full
	// or the artifact too large.
	Size int64
	// SHA256 is the digest the uploader declared, if any.
	SHA256 string
}

// Blob is an open artifact.
type Blob struct {
	io.ReadSeekCloser
	Size    int64
	ModTime time.Time
}
