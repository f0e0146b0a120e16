package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/edgefleet/edgefleet/proto"
)

// EnvWeed names the SeaweedFS `weed` binary the S3 tests start.
const EnvWeed = "EDGEFLEET_WEED"

const (
	weedAccess = "AKIAFLEETTEST"
	weedSecret = "fleet-test-secret-key"
	weedBucket = "fleet-artifacts"
)

// weedBinary finds `weed`: $EDGEFLEET_WEED, else .cache/weed/weed under the
// repository root. It skips the test, saying how to build one, when
// neither exists.
func weedBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvWeed); p != "" {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
		t.Skipf("$%s=%q is not a file; see docs/registry.md to build weed", EnvWeed, p)
	}
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("no go.mod above the test directory; cannot find .cache/weed/weed")
		}
		dir = parent
	}
	p := filepath.Join(dir, ".cache", "weed", "weed")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("S3 tests need a real S3-compatible server: no weed binary at $%s or %s; docs/registry.md says how to build it", EnvWeed, p)
	}
	return p
}

// freePortPair returns a loopback port p with p+10000 also free: weed
// derives its gRPC port that way.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(10000)
		l1, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		l1.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p
	}
	t.Fatal("no free loopback port pair")
	return 0
}

// startWeed runs `weed mini` on loopback with telemetry off, waits until
// its S3 endpoint answers for the pre-created bucket, and stops it at
// cleanup. It returns the S3 endpoint host:port.
func startWeed(t *testing.T) string {
	t.Helper()
	bin := weedBinary(t)
	dir := t.TempDir()
	s3port := freePortPair(t)
	master, filer, volume := freePortPair(t), freePortPair(t), freePortPair(t)
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "mini", "-dir="+dir, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.telemetry=false", "-master.telemetry.url=http://127.0.0.1:9/",
		"-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsIp=127.0.0.1",
		"-s3.port="+strconv.Itoa(s3port), "-master.port="+strconv.Itoa(master),
		"-filer.port="+strconv.Itoa(filer), "-volume.port="+strconv.Itoa(volume),
		"-admin.port.legacy=0")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+weedAccess, "AWS_SECRET_ACCESS_KEY="+weedSecret, "S3_BUCKET="+weedBucket)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start weed: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})

	endpoint := "127.0.0.1:" + strconv.Itoa(s3port)
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(weedAccess, weedSecret, "")})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok, err := c.BucketExists(ctx, weedBucket)
		cancel()
		if ok {
			return endpoint
		}
		select {
		case werr := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("weed exited before it was ready: %v\n%s", werr, tail(log, 3000))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("weed's S3 endpoint not ready after 120 s (last: %v)\n%s", err, tail(log, 3000))
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func s3opts(endpoint string) S3Options {
	return S3Options{Endpoint: endpoint, Bucket: weedBucket, Prefix: "edgefleet/", AccessKey: weedAccess, SecretKey: weedSecret,
		MaxArtifactBytes: 32 << 20, PartBytes: 5 << 20}
}

// uploadsLeft lists temporary upload objects, which every Put must remove.
func uploadsLeft(t *testing.T, s *S3Store) []string {
	t.Helper()
	var keys []string
	for o := range s.c.ListObjects(context.Background(), weedBucket, minio.ListObjectsOptions{Prefix: "edgefleet/uploads/", Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list uploads: %v", o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// TestS3Store runs the S3 store against a real S3-compatible server
// (SeaweedFS), the only kind that rejects tampered and expired presigned
// URLs the way S3 does.
func TestS3Store(t *testing.T) {
	endpoint := startWeed(t)
	ctx := context.Background()

	if _, err := NewS3Store(ctx, S3Options{Endpoint: endpoint, Bucket: "no-such-bucket", AccessKey: weedAccess, SecretKey: weedSecret}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing bucket: %v", err)
	}
	bad := s3opts(endpoint)
	bad.SecretKey = "wrong-secret"
	if _, err := NewS3Store(ctx, bad); err == nil {
		t.Fatal("wrong secret key accepted")
	}

	s, err := NewS3Store(ctx, s3opts(endpoint))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("put stat open seek", func(t *testing.T) {
		data := blob("small", 200<<10)
		ref, err := s.Put(ctx, bytes.NewReader(data), PutOptions{Size: int64(len(data)), SHA256: digest(data)})
		if err != nil {
			t.Fatal(err)
		}
		if ref.SHA256 != digest(data) || ref.Size != uint64(len(data)) {
			t.Fatalf("ref %+v", ref)
		}
		if st, err := s.Stat(ctx, ref.SHA256); err != nil || st != ref {
			t.Fatalf("stat %+v %v", st, err)
		}
		b, err := s.Open(ctx, ref.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if b.Size != int64(len(data)) {
			t.Fatalf("size %d", b.Size)
		}
		if _, err := b.Seek(100_000, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(b)
		if err != nil || !bytes.Equal(got, data[100_000:]) {
			t.Fatalf("read after seek: %d bytes, %v", len(got), err)
		}
		if _, err := s.Stat(ctx, digest([]byte("absent"))); !errors.Is(err, ErrArtifactNotFound) {
			t.Fatalf("stat absent: %v", err)
		}
		if _, err := s.Open(ctx, digest([]byte("absent"))); !errors.Is(err, ErrArtifactNotFound) {
			t.Fatalf("open absent: %v", err)
		}
	})

	t.Run("multipart upload of unknown size", func(t *testing.T) {
		data := blob("big", 12<<20+12345) // three 5 MiB parts
		ref, err := s.Put(ctx, io.MultiReader(bytes.NewReader(data)), PutOptions{Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		u, err := s.PresignGet(ctx, ref.SHA256, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || digest(got) != ref.SHA256 {
			t.Fatalf("presigned download: %d, %d bytes, sha256 match %v", resp.StatusCode, len(got), digest(got) == ref.SHA256)
		}
	})

	t.Run("refused uploads leave nothing", func(t *testing.T) {
		data := blob("refused", 300_000)
		_, err := s.Put(ctx, bytes.NewReader(data), PutOptions{Size: -1, SHA256: digest([]byte("something else"))})
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("wrong declared sha256: %v", err)
		}
		if _, err := s.Stat(ctx, digest(data)); !errors.Is(err, ErrArtifactNotFound) {
			t.Fatalf("mismatched upload was stored: %v", err)
		}
		_, err = s.Put(ctx, bytes.NewReader(data), PutOptions{Size: -1, Limit: 100_000})
		if !errors.Is(err, ErrArtifactTooLarge) {
			t.Fatalf("over the limit: %v", err)
		}
		if _, err := s.Put(ctx, bytes.NewReader(data[:10]), PutOptions{Size: 11}); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("short of declared size: %v", err)
		}
		if left := uploadsLeft(t, s); len(left) != 0 {
			t.Fatalf("temporary uploads left: %v", left)
		}
		// The listing does see objects there, so the check above is not vacuous.
		if _, err := s.c.PutObject(ctx, weedBucket, "edgefleet/uploads/probe", bytes.NewReader([]byte("p")), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if left := uploadsLeft(t, s); len(left) != 1 {
			t.Fatalf("probe object not listed: %v", left)
		}
		s.c.RemoveObject(ctx, weedBucket, "edgefleet/uploads/probe", minio.RemoveObjectOptions{})
	})

	t.Run("sweep", func(t *testing.T) {
		r := openTest(t, Options{Artifacts: s})
		kept := blob("kept", 1000)
		orphan := blob("orphan", 1000)
		keptRef, err := s.Put(ctx, bytes.NewReader(kept), PutOptions{Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		orphanRef, err := s.Put(ctx, bytes.NewReader(orphan), PutOptions{Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.c.StatObject(ctx, weedBucket, s.key(orphanRef.SHA256), minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Re-uploading renews LastModified (S3 keeps it in whole seconds).
		deadline := time.Now().Add(10 * time.Second)
		renew := time.NewTicker(200 * time.Millisecond) // LastModified has one-second resolution
		defer renew.Stop()
		for {
			if _, err := s.Put(ctx, bytes.NewReader(orphan), PutOptions{Size: -1}); err != nil {
				t.Fatalf("re-upload: %v", err)
			}
			again, err := s.c.StatObject(ctx, weedBucket, s.key(orphanRef.SHA256), minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if again.LastModified.After(info.LastModified) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("re-upload did not renew LastModified (%v)", again.LastModified)
			}
			<-renew.C
		}
		if _, _, err := r.Publish(ctx, "swept", request("1.0.0", keptRef)); err != nil {
			t.Fatal(err)
		}
		if n, err := r.SweepArtifacts(ctx, time.Hour); err != nil || n != 0 {
			t.Fatalf("sweep with an hour's grace: removed %d, %v", n, err)
		}
		// Grace -1 h puts the cutoff in the future: only references protect.
		// The other subtests' blobs go too; this subtest runs after them.
		n, err := r.SweepArtifacts(ctx, -time.Hour)
		if err != nil || n < 1 {
			t.Fatalf("sweep: removed %d, %v", n, err)
		}
		if _, err := s.Stat(ctx, orphanRef.SHA256); !errors.Is(err, ErrArtifactNotFound) {
			t.Fatalf("orphan still stored: %v", err)
		}
		if _, err := s.Stat(ctx, keptRef.SHA256); err != nil {
			t.Fatalf("referenced blob removed: %v", err)
		}
	})

	t.Run("registry over S3: redirect, Range resume, tamper, expiry", func(t *testing.T) {
		r := openTest(t, Options{Artifacts: s, PresignExpiry: time.Minute, MaxArtifactBytes: 8 << 20})
		srv := serve(t, r)
		model := blob("s3-model", 1<<20+7)
		meta := PublishRequest{Version: "1.0.0", Variants: []VariantSpec{{Format: "tflite", Precision: "int8", Backend: "tflite"}}}
		body, ctype := multipartBody(t, part{"metadata", mustJSON(t, meta)}, part{"variants[0].artifact", model})
		var v Version
		if status, _, raw := call(t, "POST", srv.URL+"/api/v1/models/s3-model/versions", ctype, body, &v); status != 201 {
			t.Fatalf("publish: %d %s", status, raw)
		}
		m, err := proto.VerifyManifest(r.PublicKey(), v.Variants[0].Manifest, v.Variants[0].Signature)
		if err != nil {
			t.Fatal(err)
		}
		url := srv.URL + ArtifactPath(m.Artifact.SHA256)

		// The server answers with a redirect to the bucket, not the bytes.
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, endpoint) || !strings.Contains(loc, "X-Amz-Signature=") {
			t.Fatalf("artifact answer: %d Location %q; want 307 to a presigned URL on %s", resp.StatusCode, loc, endpoint)
		}

		// Range resume through the redirect (the client carries Range over).
		half := len(model) / 2
		status, _, first := call(t, "GET", url, "", nil, nil, "Range", fmt.Sprintf("bytes=0-%d", half-1))
		if status != http.StatusPartialContent || len(first) != half {
			t.Fatalf("first half: %d, %d bytes", status, len(first))
		}
		status, _, rest := call(t, "GET", url, "", nil, nil, "Range", fmt.Sprintf("bytes=%d-", half))
		if status != http.StatusPartialContent || len(rest) != len(model)-half {
			t.Fatalf("rest: %d, %d bytes", status, len(rest))
		}
		if err := m.CheckArtifact(io.MultiReader(bytes.NewReader(first), bytes.NewReader(rest))); err != nil {
			t.Fatalf("resumed download: %v", err)
		}

		// A tampered signature is refused by the server.
		tampered := tamperSignature(t, loc)
		if code, body := httpGet(t, tampered); code != http.StatusForbidden || !strings.Contains(body, "Signature") {
			t.Fatalf("tampered presigned URL: %d %s, want 403 for the signature", code, body)
		}
		// An expired URL is refused: valid first, then 403 once it lapses.
		short, err := s.PresignGet(ctx, m.Artifact.SHA256, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := httpGet(t, short.String()); code != 200 {
			t.Fatalf("fresh 1 s URL: %d %s, want 200", code, body)
		}
		deadline := time.Now().Add(15 * time.Second)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			code, body := httpGet(t, short.String())
			if code == http.StatusForbidden {
				if !strings.Contains(strings.ToLower(body), "expired") {
					t.Fatalf("lapsed URL refused for another reason: %s", body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("presigned URL with a 1 s expiry still answers %d after 15 s", code)
			}
			<-tick.C
		}
	})
}

func tamperSignature(t *testing.T, u string) string {
	t.Helper()
	i := strings.Index(u, "X-Amz-Signature=")
	if i < 0 {
		t.Fatalf("no signature in %s", u)
	}
	j := i + len("X-Amz-Signature=")
	c := u[j]
	repl := byte('0')
	if c == '0' {
		repl = '1'
	}
	return u[:j] + string(repl) + u[j+1:]
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode, string(b)
}
