package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"
)

func newFS(t *testing.T, opts FSOptions) (*FSStore, string) {
	t.Helper()
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = 1
	}
	dir := t.TempDir()
	s, err := NewFSStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestFSStorePutOpen(t *testing.T) {
	ctx := context.Background()
	s, dir := newFS(t, FSOptions{MaxArtifactBytes: 1 << 20})
	data := blob("model", 70_000)
	ref, err := s.Put(ctx, iotest.HalfReader(bytes.NewReader(data)), PutOptions{Size: -1, SHA256: digest(data)})
	if err != nil {
		t.Fatal(err)
	}
	if ref.SHA256 != digest(data) || ref.Size != uint64(len(data)) {
		t.Fatalf("ref %+v", ref)
	}
	path := filepath.Join(dir, "sha256", ref.SHA256[:2], ref.SHA256)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("blob not content-addressed at %s: %v", path, err)
	}
	if st.Mode().Perm()&0o222 != 0 {
		t.Fatalf("blob mode %v is writable; published bytes must not change", st.Mode())
	}
	b, err := s.Open(ctx, ref.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b)
	b.Close()
	if !bytes.Equal(got, data) || b.Size != int64(len(data)) {
		t.Fatal("read back different bytes")
	}
	// Same bytes again: same ref, no error, nothing left in tmp.
	if ref2, err := s.Put(ctx, bytes.NewReader(data), PutOptions{Size: int64(len(data))}); err != nil || ref2 != ref {
		t.Fatalf("second put: %+v, %v", ref2, err)
	}
	if st, err := s.Stat(ctx, ref.SHA256); err != nil || st != ref {
		t.Fatalf("stat: %+v, %v", st, err)
	}
	if _, err := s.Stat(ctx, digest([]byte("absent"))); !errors.Is(err, ErrArtifactNotFound) {
		t.Fatalf("stat absent: %v", err)
	}
	if _, err := s.Open(ctx, "../../etc/passwd"); !errors.Is(err, ErrArtifactNotFound) {
		t.Fatalf("open a path: %v", err)
	}
	assertEmptyTmp(t, dir)
}

func assertEmptyTmp(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("%d temporary files left behind", len(left))
	}
}

func TestFSStoreRefuses(t *testing.T) {
	ctx := context.Background()
	s, dir := newFS(t, FSOptions{MaxArtifactBytes: 1000})
	data := blob("x", 1000)
	cases := []struct {
		name string
		r    io.Reader
		opts PutOptions
		want error
	}{
		{"over the limit, size unknown", bytes.NewReader(blob("x", 1001)), PutOptions{Size: -1}, ErrArtifactTooLarge},
		{"over the limit, size declared", bytes.NewReader(blob("x", 1001)), PutOptions{Size: 1001}, ErrArtifactTooLarge},
		{"over a smaller per-call limit", bytes.NewReader(data), PutOptions{Size: -1, Limit: 999}, ErrArtifactTooLarge},
		{"wrong declared sha256", bytes.NewReader(data), PutOptions{Size: -1, SHA256: digest([]byte("other"))}, ErrDigestMismatch},
		{"short of declared size", bytes.NewReader(data[:999]), PutOptions{Size: 1000}, ErrDigestMismatch},
		{"malformed declared sha256", bytes.NewReader(data), PutOptions{Size: -1, SHA256: "ABC"}, ErrInvalid},
		{"empty", bytes.NewReader(nil), PutOptions{Size: -1}, ErrInvalid},
		{"read error", iotest.ErrReader(io.ErrUnexpectedEOF), PutOptions{Size: -1}, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.Put(ctx, c.r, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// Nothing was stored by any refused upload.
	entries, _ := os.ReadDir(filepath.Join(dir, "sha256"))
	if len(entries) != 0 {
		t.Fatalf("refused uploads left %d blob directories", len(entries))
	}
	assertEmptyTmp(t, dir)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, bytes.NewReader(data), PutOptions{Size: -1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled put: %v", err)
	}
}

// TestFSStoreDiskSpace asks the real filesystem: no disk has an exabyte
// free, so an upload that must leave that much is refused before a byte is
// read.
func TestFSStoreDiskSpace(t *testing.T) {
	free, ok := freeBytes(t.TempDir())
	if !ok {
		t.Skip("free space is not known on this platform")
	}
	s, _ := newFS(t, FSOptions{MinFreeBytes: 1 << 60})
	r := &countingReader{r: bytes.NewReader([]byte("abc"))}
	_, err := s.Put(context.Background(), r, PutOptions{Size: 3})
	if !errors.Is(err, ErrInsufficientSpace) {
		t.Fatalf("got %v, want ErrInsufficientSpace (disk has %d bytes free)", err, free)
	}
	if r.n != 0 {
		t.Fatalf("%d bytes read before the space check refused the upload", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestFSStoreConcurrentSameBlob(t *testing.T) {
	s, dir := newFS(t, FSOptions{})
	data := blob("same", 200_000)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(context.Background(), bytes.NewReader(data), PutOptions{Size: -1})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "sha256", digest(data)[:2], digest(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after concurrent puts: %v", err)
	}
	assertEmptyTmp(t, dir)
}

func TestFSStoreCleansTmpAtStart(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewFSStore(dir, FSOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", "upload-crashed"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFSStore(dir, FSOptions{}); err != nil {
		t.Fatal(err)
	}
	assertEmptyTmp(t, dir)
}
