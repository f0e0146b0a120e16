package console_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/console"
)

// The event stream outlives the server's read and write timeouts, which
// are there for ordinary requests: without clearing them for the stream,
// net/http cancels it (and the browser reconnects) every ReadTimeout.
func TestEventStreamOutlivesServerTimeouts(t *testing.T) {
	inv := newInventory(t)
	a := newAuth(t)
	c, err := console.New(console.Options{Inventory: inv, Auth: a, EventInterval: time.Millisecond, TickInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	ck := adminCookie(t, a)
	const timeout = 100 * time.Millisecond
	srv := &http.Server{Handler: a.Wrap(mux, nil), ReadTimeout: timeout, WriteTimeout: timeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/events", nil)
	req.AddCookie(ck)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, "event: ") {
				return l
			}
		}
		return "stream ended: " + errString(lines.Err())
	}
	if e := next(); e != "event: devices" {
		t.Fatalf("first event: %s", e)
	}
	// Let both timeouts pass several times over, then change the inventory.
	time.Sleep(5 * timeout)
	hello(t, inv, "gw-late", nil)
	if e := next(); e != "event: devices" {
		t.Fatalf("after the server timeouts passed: %s", e)
	}
}

func errString(err error) string {
	if err == nil {
		return "EOF"
	}
	return err.Error()
}
