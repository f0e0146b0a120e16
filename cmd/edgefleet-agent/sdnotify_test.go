package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNotifier listens where systemd would and checks READY, the watchdog
// pings while healthy, their absence while not, and STOPPING.
func TestNotifier(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "40000")
	t.Setenv("WATCHDOG_PID", "")
	if got := watchdogInterval(); got != 20*time.Millisecond {
		t.Fatalf("watchdogInterval = %v, want half of WATCHDOG_USEC", got)
	}
	n := newNotifier(slog.New(slog.DiscardHandler))
	read := func() string {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 256)
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:k])
	}
	n.send("READY=1")
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}

	healthy := make(chan bool, 1)
	healthy <- true
	probe := func(context.Context) error {
		select {
		case h := <-healthy:
			healthy <- h
			if !h {
				return errors.New("state store does not answer")
			}
		default:
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.watch(ctx, watchdogInterval(), probe); close(done) }()
	for range 3 {
		if got := read(); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	<-healthy
	healthy <- false
	// Drain a ping that may have been sent before the probe turned bad.
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Millisecond))
	buf := make([]byte, 64)
	_, _ = conn.Read(buf)
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if k, err := conn.Read(buf); err == nil {
		t.Fatalf("pinged %q while the probe failed", buf[:k])
	}
	cancel()
	<-done
	n.send("STOPPING=1")
	if got := read(); !strings.HasPrefix(got, "STOPPING=1") {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := newNotifier(slog.New(slog.DiscardHandler))
	n.send("READY=1") // no socket: nothing to do, nothing to fail
	if watchdogInterval() != 0 {
		t.Fatal("a watchdog interval without WATCHDOG_USEC")
	}
	n.watch(context.Background(), time.Millisecond, nil) // returns at once
}
