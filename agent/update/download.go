package update

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// download fetches url into path, resuming from what path already holds
// with an HTTP Range request, until it holds size bytes. It retries failed
// or cut attempts with exponential backoff and jitter; an attempt that
// made progress does not count against the budget, so a flaky link that
// keeps moving finishes, and one that never moves gives up after
// cfg.Retries attempts. It never writes past size. progress, when not nil,
// is called with the bytes held after each attempt.
func (u *Updater) download(ctx context.Context, url, path string, size uint64, progress func(held uint64)) error {
	failures := 0
	var last error
	for attempt := 0; attempt < u.cfg.Retries*maxAttemptsFactor; attempt++ {
		before := partSize(path)
		if before == size {
			return nil
		}
		err := u.fetchOnce(ctx, url, path, size, progress)
		held := partSize(path)
		if err == nil && held == size {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("%w: %s: %v", ErrDownload, url, perm.err)
		}
		last = err
		if held > before {
			failures = 0
		} else {
			failures++
		}
		if failures >= u.cfg.Retries {
			break
		}
		d := u.backoff(failures + 1)
		u.log.Info("artifact download interrupted; retrying", "url", url, "held", held, "size", size, "err", err, "in", d.Round(time.Millisecond))
		c, stop := u.cfg.After(d)
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-c:
		}
	}
	return fmt.Errorf("%w: %s after %d attempts without progress: %v", ErrDownload, url, u.cfg.Retries, last)
}

// maxAttemptsFactor bounds the attempts that make progress: a server
// that sends one byte per connection must not keep a device busy forever.
const maxAttemptsFactor = 20

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func partSize(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return uint64(fi.Size())
}

// backoff returns the wait before attempt n (1-based): RetryMin·2^(n-1)
// capped at RetryMax, half fixed and half random, so devices that lost the
// server together do not come back in lockstep.
func (u *Updater) backoff(n int) time.Duration {
	d := u.cfg.RetryMin
	for i := 1; i < n && d < u.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, u.cfg.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// fetchOnce makes one request and appends what it receives to path.
func (u *Updater) fetchOnce(ctx context.Context, url, path string, size uint64, progress func(held uint64)) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return &permanentError{fmt.Errorf("open download file: %w", err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &permanentError{err}
	}
	held := uint64(fi.Size())
	if held > size {
		// Not ours to keep: a file longer than the artifact is not a prefix
		// of it.
		if err := f.Truncate(0); err != nil {
			return &permanentError{err}
		}
		held = 0
	}
	ctx, stall := u.stallGuard(ctx)
	defer stall.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &permanentError{fmt.Errorf("bad artifact URL: %w", err)}
	}
	if held > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatUint(held, 10)+"-")
	}
	resp, err := u.cfg.HTTPClient.Do(req)
	if err != nil {
		return classify(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && held > 0:
		start, err := rangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != held {
			return fmt.Errorf("server answered Range %d- with Content-Range %q", held, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		// The server ignored the Range (or there was none): start over.
		if err := f.Truncate(0); err != nil {
			return &permanentError{err}
		}
		held = 0
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		// What we hold is not a prefix the server recognises; drop it.
		if err := f.Truncate(0); err != nil {
			return &permanentError{err}
		}
		return fmt.Errorf("server refused to resume at byte %d", held)
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusGone:
		return &permanentError{fmt.Errorf("server answered %s", resp.Status)}
	default:
		return fmt.Errorf("server answered %s", resp.Status)
	}
	if _, err := f.Seek(int64(held), io.SeekStart); err != nil {
		return &permanentError{err}
	}
	want := int64(size - held)
	fn := stall.reset
	if progress != nil {
		fn = func(n uint64) { stall.reset(n); progress(n) }
	}
	n, err := io.Copy(&progressWriter{w: f, held: held, fn: fn}, io.LimitReader(resp.Body, want))
	if err != nil && stall.fired() {
		err = fmt.Errorf("nothing received for %v", u.cfg.StallTimeout)
	}
	if serr := f.Sync(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", held+uint64(n), err)
	}
	if n < want {
		return fmt.Errorf("connection ended after %d of %d bytes", held+uint64(n), size)
	}
	return nil
}

// classify makes a certificate the device does not trust a permanent
// error: retrying cannot fix it, and the job should say so at once.
func classify(err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	if errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) {
		return &permanentError{err}
	}
	return err
}

// stallTimer cancels a request that has received nothing for a while. It
// uses real time, like every network timeout: a simulated clock must not
// cut real connections.
type stallTimer struct {
	t      *time.Timer
	d      time.Duration
	cancel context.CancelFunc
	once   sync.Once
	hit    chan struct{}
}

func (u *Updater) stallGuard(ctx context.Context) (context.Context, *stallTimer) {
	ctx, cancel := context.WithCancel(ctx)
	s := &stallTimer{d: u.cfg.StallTimeout, cancel: cancel, hit: make(chan struct{})}
	s.t = time.AfterFunc(s.d, func() {
		s.once.Do(func() { close(s.hit) })
		cancel()
	})
	return ctx, s
}

func (s *stallTimer) reset(uint64) { s.t.Reset(s.d) }

func (s *stallTimer) fired() bool {
	select {
	case <-s.hit:
		return true
	default:
		return false
	}
}

// Stop stops the timer and releases the request's context.
func (s *stallTimer) Stop() {
	s.t.Stop()
	s.cancel()
}

// progressWriter reports the bytes held after every write.
type progressWriter struct {
	w    io.Writer
	held uint64
	fn   func(uint64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.held += uint64(n)
	p.fn(p.held)
	return n, err
}

// removeStaleParts deletes partial downloads of other artifacts: only the
// artifact being fetched may resume, so abandoned downloads do not pile
// up on a small disk.
func (u *Updater) removeStaleParts(keep string) {
	dir := filepath.Join(u.cfg.Dir, "downloads")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.Name() != keep+".part" {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				u.log.Warn("removing a stale partial download", "file", e.Name(), "err", err)
			}
		}
	}
}

// rangeStart parses the first byte of "bytes START-END/TOTAL".
func rangeStart(cr string) (uint64, error) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, fmt.Errorf("not a byte range: %q", cr)
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("not a byte range: %q", cr)
	}
	return strconv.ParseUint(first, 10, 64)
}

// fetchSmall downloads a small blob (a self-test tensor) into memory, at
// most limit bytes.
func (u *Updater) fetchSmall(ctx context.Context, url string, limit uint64) ([]byte, error) {
	var last error
	for attempt := 1; attempt <= u.cfg.Retries; attempt++ {
		b, err := u.fetchSmallOnce(ctx, url, limit)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			return nil, fmt.Errorf("%w: %s: %v", ErrDownload, url, perm.err)
		}
		last = err
		c, stop := u.cfg.After(u.backoff(attempt))
		select {
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-c:
		}
	}
	return nil, fmt.Errorf("%w: %s after %d attempts: %v", ErrDownload, url, u.cfg.Retries, last)
}

func (u *Updater) fetchSmallOnce(ctx context.Context, url string, limit uint64) ([]byte, error) {
	// Self-test tensors are small: the stall timeout bounds the whole
	// request.
	ctx, cancel := context.WithTimeout(ctx, u.cfg.StallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, &permanentError{fmt.Errorf("bad URL: %w", err)}
	}
	resp, err := u.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, classify(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return nil, &permanentError{fmt.Errorf("server answered %s", resp.Status)}
		}
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
}
