package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgefleet/edgefleet/proto"
)

// S3 limits. A server-side copy (how an upload reaches its content address)
// takes at most 5 GiB in one request.
const (
	maxS3CopyBytes     = 5 << 30
	DefaultS3PartBytes = 16 << 20
)

// S3Options configure an S3Store.
type S3Options struct {
	Endpoint  string // host:port
	Secure    bool   // https
	Region    string
	Bucket    string // must exist
	Prefix    string // key prefix inside the bucket, e.g. "edgefleet/"
	AccessKey string
	SecretKey string
	// MaxArtifactBytes is the default upload limit; 0 means
	// DefaultMaxArtifactBytes. At most 5 GiB.
	MaxArtifactBytes int64
	// PartBytes is the multipart part size for uploads of unknown size,
	// and so the memory one upload holds; 0 means DefaultS3PartBytes.
	PartBytes uint64
	// Transport is the HTTP transport to the S3 endpoint; nil means
	// minio-go's default.
	Transport http.RoundTripper
}

// LogValue keeps the secret key out of logs.
func (o S3Options) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", o.Endpoint), slog.String("bucket", o.Bucket),
		slog.String("prefix", o.Prefix), slog.String("access_key", o.AccessKey))
}

// S3Store keeps artifacts in an S3-compatible bucket at
// <prefix>sha256/<sha256>. Devices download through presigned GET URLs
// with a short expiry (the artifact handler redirects to a fresh one), so
// the bucket stays private.
//
// An upload goes to <prefix>uploads/<random> while it is hashed, then is
// copied server-side to its content address and the temporary object is
// removed. Uploads cut short by a crash stay under uploads/: give that
// prefix a bucket lifecycle rule that expires objects after a day.
type S3Store struct {
	c      *minio.Client
	opts   S3Options
	limit  int64
	bucket string
}

// NewS3Store connects to the bucket and checks that it exists.
func NewS3Store(ctx context.Context, opts S3Options) (*S3Store, error) {
	if opts.MaxArtifactBytes <= 0 {
		opts.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if opts.MaxArtifactBytes > maxS3CopyBytes {
		return nil, fmt.Errorf("S3 artifact store: MaxArtifactBytes %d is over the 5 GiB a server-side copy takes", opts.MaxArtifactBytes)
	}
	if opts.PartBytes == 0 {
		opts.PartBytes = DefaultS3PartBytes
	}
	if opts.Bucket == "" || opts.Endpoint == "" {
		return nil, errors.New("S3 artifact store: Endpoint and Bucket are required")
	}
	c, err := minio.New(opts.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, ""),
		Secure:    opts.Secure,
		Region:    opts.Region,
		Transport: opts.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 artifact store %s: %w", opts.Endpoint, err)
	}
	ok, err := c.BucketExists(ctx, opts.Bucket)
	if err != nil {
		return nil, fmt.Errorf("S3 artifact store: check bucket %s at %s: %w", opts.Bucket, opts.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("S3 artifact store: bucket %s does not exist at %s; create it first", opts.Bucket, opts.Endpoint)
	}
	return &S3Store{c: c, opts: opts, limit: opts.MaxArtifactBytes, bucket: opts.Bucket}, nil
}

func (s *S3Store) key(sha string) string { return s.opts.Prefix + "sha256/" + sha }

// Put implements ArtifactStore.
func (s *S3Store) Put(ctx context.Context, r io.Reader, opts PutOptions) (proto.ArtifactRef, error) {
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
	var rnd [12]byte
	rand.Read(rnd[:])
	tmpKey := s.opts.Prefix + "uploads/" + hex.EncodeToString(rnd[:])
	h := sha256.New()
	// Size -1 even when the client declared one: minio-go then sends
	// PartBytes-sized parts, so memory stays bounded and a body longer or
	// shorter than declared is caught below rather than by the S3 client.
	info, err := s.c.PutObject(ctx, s.bucket, tmpKey, io.TeeReader(io.LimitReader(r, limit+1), h), -1, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s.opts.PartBytes,
	})
	// Whatever happens next, the temporary object goes.
	defer func() {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		s.c.RemoveObject(rmCtx, s.bucket, tmpKey, minio.RemoveObjectOptions{})
	}()
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("upload artifact to S3: %w", err)
	}
	n := info.Size
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
	if _, err := s.Stat(ctx, ref.SHA256); err == nil {
		// Same bytes already stored. Copy the object onto itself to renew
		// its LastModified, so a sweep's grace period protects it until
		// the publish this upload is for.
		_, err := s.c.CopyObject(ctx,
			minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(ref.SHA256), ReplaceMetadata: true,
				UserMetadata: map[string]string{"Stored": time.Now().UTC().Format(time.RFC3339Nano)}},
			minio.CopySrcOptions{Bucket: s.bucket, Object: s.key(ref.SHA256)})
		if err != nil {
			return proto.ArtifactRef{}, fmt.Errorf("refresh stored artifact in S3: %w", err)
		}
		return ref, nil
	} else if !errors.Is(err, ErrArtifactNotFound) {
		return proto.ArtifactRef{}, err
	}
	_, err = s.c.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: s.bucket, Object: s.key(ref.SHA256)},
		minio.CopySrcOptions{Bucket: s.bucket, Object: tmpKey})
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("move artifact to its content address in S3: %w", err)
	}
	return ref, nil
}

func isNoSuchKey(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// Stat implements ArtifactStore.
func (s *S3Store) Stat(ctx context.Context, sha string) (proto.ArtifactRef, error) {
	if !proto.ValidSHA256(sha) {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	info, err := s.c.StatObject(ctx, s.bucket, s.key(sha), minio.StatObjectOptions{})
	if isNoSuchKey(err) {
		return proto.ArtifactRef{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, sha)
	}
	if err != nil {
		return proto.ArtifactRef{}, fmt.Errorf("stat artifact in S3: %w", err)
	}
	return proto.ArtifactRef{SHA256: sha, Size: uint64(info.Size)}, nil
}

// Open implements ArtifactStore. The blob reads lazily with ranged GETs,
// so seeking does not download what it skips.
func (s *S3Store) Open(ctx context.Context, sha string) (Blob, error) {
	if !proto.ValidSHA256(sha) {
		return Blob{}, fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	obj, err := s.c.GetObject(ctx, s.bucket, s.key(sha), minio.GetObjectOptions{})
	if err != nil {
		return Blob{}, fmt.Errorf("open artifact in S3: %w", err)
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNoSuchKey(err) {
			return Blob{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, sha)
		}
		return Blob{}, fmt.Errorf("open artifact in S3: %w", err)
	}
	return Blob{ReadSeekCloser: obj, Size: info.Size, ModTime: info.LastModified}, nil
}

// PresignGet implements Presigner.
func (s *S3Store) PresignGet(ctx context.Context, sha string, expiry time.Duration) (*url.URL, error) {
	if !proto.ValidSHA256(sha) {
		return nil, fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, s.key(sha), expiry, nil)
	if err != nil {
		return nil, fmt.Errorf("presign artifact download: %w", err)
	}
	return u, nil
}

// Walk implements Sweeper over the objects under <prefix>sha256/.
func (s *S3Store) Walk(ctx context.Context, fn func(string, time.Time) error) error {
	prefix := s.opts.Prefix + "sha256/"
	for o := range s.c.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list artifacts in S3: %w", o.Err)
		}
		sha := strings.TrimPrefix(o.Key, prefix)
		if !proto.ValidSHA256(sha) {
			continue
		}
		if err := fn(sha, o.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements Sweeper.
func (s *S3Store) Delete(ctx context.Context, sha string) error {
	if !proto.ValidSHA256(sha) {
		return fmt.Errorf("%w: %q is not a sha256", ErrArtifactNotFound, truncate(sha))
	}
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(sha), minio.RemoveObjectOptions{}); err != nil && !isNoSuchKey(err) {
		return fmt.Errorf("delete artifact in S3: %w", err)
	}
	return nil
}

// String names the store for logs.
func (s *S3Store) String() string {
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.opts.Prefix, "/")
}

var (
	_ ArtifactStore = (*S3Store)(nil)
	_ Presigner     = (*S3Store)(nil)
	_ Sweeper       = (*S3Store)(nil)
)
