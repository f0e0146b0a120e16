package enroll_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/fleet/enroll"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func open(t testing.TB) (*enroll.Enroll, *clock) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "fleet.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("bbolt integrity: %v", err)
		}
		db.Close()
	})
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e, err := enroll.Open(enroll.Options{DB: db, Now: c.Now, MaxPending: 3})
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

func TestTokenEnrolment(t *testing.T) {
	ctx := context.Background()
	e, c := open(t)
	tok, secret, err := e.CreateToken(ctx, enroll.TokenSpec{Labels: map[string]string{"site": "lyon"}, Group: "canary", TTL: time.Hour, MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(secret), tok.ID+".") {
		t.Fatalf("token %q does not start with its id %s", secret, tok.ID)
	}
	creds, err := e.Enrol(ctx, string(secret), "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if creds.DeviceID != "gw-1" || len(creds.Secret) < 40 || creds.Labels["site"] != "lyon" || creds.Labels["group"] != "canary" {
		t.Fatalf("credentials %+v", creds)
	}
	if err := e.Authenticate(ctx, "gw-1", []byte(creds.Secret)); err != nil {
		t.Fatalf("own secret refused: %v", err)
	}
	if err := e.Authenticate(ctx, "gw-1", []byte("nope")); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("wrong secret: got %v, want ErrRefused", err)
	}
	// The same id cannot be taken over with another use of the token.
	if _, err := e.Enrol(ctx, string(secret), "gw-1"); !errors.Is(err, enroll.ErrExists) {
		t.Fatalf("re-enrolling gw-1: got %v, want ErrExists", err)
	}
	if _, err := e.Enrol(ctx, string(secret), "gw-2"); err != nil {
		t.Fatal(err)
	}
	// Replay beyond the use count.
	_, err = e.Enrol(ctx, string(secret), "gw-3")
	if !errors.Is(err, enroll.ErrTokenUsedUp) || !strings.Contains(err.Error(), "allowed 2") {
		t.Fatalf("third use of a 2-use token: got %v, want ErrTokenUsedUp naming the count", err)
	}
	// Wrong secret, malformed, expired.
	if _, err := e.Enrol(ctx, tok.ID+".wrong", "gw-4"); !errors.Is(err, enroll.ErrBadToken) {
		t.Fatalf("wrong secret: got %v", err)
	}
	if _, err := e.Enrol(ctx, "garbage", "gw-4"); !errors.Is(err, enroll.ErrBadToken) || !strings.Contains(err.Error(), "ID.SECRET") {
		t.Fatalf("malformed token: got %v", err)
	}
	_, s2, err := e.CreateToken(ctx, enroll.TokenSpec{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c.Add(time.Minute)
	if _, err := e.Enrol(ctx, string(s2), "gw-4"); !errors.Is(err, enroll.ErrTokenExpired) || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired token: got %v", err)
	}
	if _, err := e.Enrol(ctx, string(s2), "bad/id"); !errors.Is(err, enroll.ErrInvalid) {
		t.Fatalf("bad device id: got %v", err)
	}
	toks, err := e.Tokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens %+v, %v", toks, err)
	}
	for _, tk := range toks {
		if tk.ID == tok.ID && tk.Uses != 2 {
			t.Fatalf("token %s used %d times, want 2", tk.ID, tk.Uses)
		}
	}
	if err := e.RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Enrol(ctx, string(secret), "gw-5"); !errors.Is(err, enroll.ErrTokenUsedUp) {
		t.Fatalf("revoked token: %v", err)
	}
}

func TestRevokeCutsOff(t *testing.T) {
	ctx := context.Background()
	e, _ := open(t)
	var cut []string
	e.OnCutOff(func(id string) { cut = append(cut, id) })
	creds, err := e.Preauthorize(ctx, "gw-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Preauthorize(ctx, "gw-1", nil); !errors.Is(err, enroll.ErrExists) {
		t.Fatalf("second preauthorize: %v", err)
	}
	if err := e.Revoke(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	if len(cut) != 1 || cut[0] != "gw-1" {
		t.Fatalf("cut-off callbacks %v, want [gw-1]", cut)
	}
	if err := e.Authenticate(ctx, "gw-1", []byte(creds.Secret)); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("revoked device authenticated: %v", err)
	}
	if err := e.Accept(ctx, "gw-1"); !errors.Is(err, enroll.ErrInvalid) {
		t.Fatalf("accepting a revoked device: %v", err)
	}
	if err := e.Remove(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Preauthorize(ctx, "gw-1", nil); err != nil {
		t.Fatalf("removed id cannot be provisioned again: %v", err)
	}
}

func TestRequestAcceptReject(t *testing.T) {
	ctx := context.Background()
	e, _ := open(t)
	key := "0123456789abcdef-device-key"
	if _, err := e.Request(ctx, "gw-1", key); !errors.Is(err, enroll.ErrPending) || !strings.Contains(err.Error(), "devices accept gw-1") {
		t.Fatalf("first request: %v", err)
	}
	if _, err := e.Request(ctx, "gw-1", key); !errors.Is(err, enroll.ErrPending) {
		t.Fatalf("second request: %v", err)
	}
	if _, err := e.Request(ctx, "gw-1", "someone-else-key-000"); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("other key: %v", err)
	}
	if err := e.Accept(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	creds, err := e.Request(ctx, "gw-1", key)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Authenticate(ctx, "gw-1", []byte(creds.Secret)); err != nil {
		t.Fatal(err)
	}
	if err := e.Reject(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Request(ctx, "gw-1", key); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("rejected device: %v", err)
	}
	// The pending queue is bounded (MaxPending 3 in this test).
	for i, id := range []string{"p1", "p2", "p3", "p4"} {
		_, err := e.Request(ctx, id, key)
		if i < 3 && !errors.Is(err, enroll.ErrPending) {
			t.Fatalf("%s: %v", id, err)
		}
		if i == 3 && !errors.Is(err, enroll.ErrLimit) {
			t.Fatalf("fourth pending device: got %v, want ErrLimit", err)
		}
	}
	ds, err := e.Devices(ctx, enroll.StatePending)
	if err != nil || len(ds) != 3 {
		t.Fatalf("pending %v, %v", ds, err)
	}
	// Accepting one and removing another make room for two more.
	if err := e.Accept(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(ctx, "p2"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"p4", "p5"} {
		if _, err := e.Request(ctx, id, key); !errors.Is(err, enroll.ErrPending) {
			t.Fatalf("%s after room was made: %v", id, err)
		}
	}
	if _, err := e.Request(ctx, "p6", key); !errors.Is(err, enroll.ErrLimit) {
		t.Fatalf("p6: got %v, want ErrLimit", err)
	}
}

func TestDeviceLimit(t *testing.T) {
	ctx := context.Background()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "fleet.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e, err := enroll.Open(enroll.Options{DB: db, MaxDevices: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, tok, err := e.CreateToken(ctx, enroll.TokenSpec{MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Preauthorize(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Enrol(ctx, string(tok), "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Enrol(ctx, string(tok), "c"); !errors.Is(err, enroll.ErrLimit) {
		t.Fatalf("third device: %v", err)
	}
	if _, err := e.Request(ctx, "c", "0123456789abcdef-key"); !errors.Is(err, enroll.ErrLimit) {
		t.Fatalf("third device asking: %v", err)
	}
	if err := e.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Enrol(ctx, string(tok), "c"); err != nil {
		t.Fatalf("after a removal: %v", err)
	}
}

func TestMosquittoFiles(t *testing.T) {
	ctx := context.Background()
	e, _ := open(t)
	if _, err := e.Preauthorize(ctx, "gw-1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Preauthorize(ctx, "gw-2", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Revoke(ctx, "gw-2"); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := e.WriteMosquittoPasswords(ctx, &b, "edgefleet-server", enroll.MosquittoPasswordHash("pw")); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "edgefleet-server:$7$101$") || !strings.HasPrefix(lines[1], "gw-1:$7$101$") {
		t.Fatalf("password file:\n%s", b.String())
	}
	acl, err := enroll.MosquittoACL("edgefleet-server")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pattern write edgefleet/v1/devices/%u/telemetry", "pattern read edgefleet/v1/devices/%u/desired", "user edgefleet-server"} {
		if !strings.Contains(acl, want) {
			t.Errorf("ACL lacks %q:\n%s", want, acl)
		}
	}
	if strings.Contains(acl, "$SYS") {
		t.Errorf("ACL grants $SYS:\n%s", acl)
	}
}
