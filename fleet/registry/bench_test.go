package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkFSStorePut measures an upload into the local store: hashing,
// writing, fsync and rename. Re-putting the same bytes skips only the
// rename, so each iteration writes a fresh blob.
func BenchmarkFSStorePut(b *testing.B) {
	for _, size := range []int{64 << 10, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s, err := NewFSStore(b.TempDir(), FSOptions{MinFreeBytes: 1})
			if err != nil {
				b.Fatal(err)
			}
			data := blob("bench", size)
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				i++
				copy(data, fmt.Sprintf("%08d", i)) // a new blob each time
				if _, err := s.Put(context.Background(), bytes.NewReader(data), PutOptions{Size: int64(size)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDownload measures a device's download through the handler on
// loopback, whole and as two Range requests (a resume).
func BenchmarkDownload(b *testing.B) {
	r := openTest(b, Options{MaxArtifactBytes: 8 << 20})
	srv := httptestServer(b, r)
	data := blob("dl", 4<<20)
	ref := put(b, r, data)
	url := srv + ArtifactPath(ref.SHA256)
	get := func(rng string) int64 {
		req, _ := http.NewRequest("GET", url, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return n
	}
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if n := get(""); n != int64(len(data)) {
				b.Fatalf("%d bytes", n)
			}
		}
	})
	b.Run("resumed", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		half := len(data) / 2
		for b.Loop() {
			n := get(fmt.Sprintf("bytes=0-%d", half-1)) + get(fmt.Sprintf("bytes=%d-", half))
			if n != int64(len(data)) {
				b.Fatalf("%d bytes", n)
			}
		}
	})
}

// BenchmarkPublish measures signing and storing a two-variant version.
func BenchmarkPublish(b *testing.B) {
	r := openTest(b, Options{})
	a := put(b, r, blob("a", 1000))
	c := put(b, r, blob("c", 1000))
	i := 0
	for b.Loop() {
		i++
		if _, _, err := r.Publish(context.Background(), "bench", request(fmt.Sprintf("1.0.%d", i), a, c)); err != nil {
			b.Fatal(err)
		}
	}
}

func httptestServer(b *testing.B, r *Registry) string {
	srv := httptest.NewServer(r.Handler())
	b.Cleanup(srv.Close)
	return srv.URL
}
