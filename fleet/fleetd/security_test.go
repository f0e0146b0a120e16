package fleetd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/fleetd"
	"github.com/edgefleet/edgefleet/proto"
)

func TestSecuritySettings(t *testing.T) {
	env := func(string) string { return "" }
	s, err := fleetd.LoadSettings(nil, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(nil).Security; c.MQTTAuth != fleetd.MQTTAuthRequired || c.TLS != fleetd.TLSOff {
		t.Fatalf("defaults %+v: want device auth required", c)
	}
	s, err = fleetd.LoadSettings([]string{"--tls", "self-signed", "--tls-hosts", "fleet.lan, 10.0.0.5", "--mqtt-auth", "off"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(nil).Security; c.TLS != fleetd.TLSSelfSigned || len(c.TLSHosts) != 2 || c.TLSHosts[1] != "10.0.0.5" || c.MQTTAuth != fleetd.MQTTAuthOff {
		t.Fatalf("parsed %+v", c)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--mqtt-auth", "maybe"}, "--mqtt-auth"},
		{[]string{"--tls", "on"}, "--tls"},
		{[]string{"--tls", "files", "--tls-cert", "c.pem"}, "--tls-key"},
	} {
		_, err := fleetd.LoadSettings(tt.args, env, io.Discard)
		if !errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want ErrConfig naming %s", tt.args, err, tt.want)
		}
	}
}

// TestHTTPClientsCannotExhaustTheServer: beyond the per-IP cap a
// connection is closed at once; a client that never finishes its headers
// (slowloris) is cut at the header timeout; oversized headers and
// enrolment bodies are refused.
func TestHTTPClientsCannotExhaustTheServer(t *testing.T) {
	// A server of its own, waited on without HTTP: a client's idle
	// keep-alive connection would count towards the cap.
	srv, err := fleetd.New(context.Background(), fleetd.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0",
		BcryptCost: 4, Security: fleetd.SecurityConfig{HTTPMaxConnsPerIP: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(15 * time.Second); srv.Ready() != nil; <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", srv.Ready())
		}
	}
	addr := srv.HTTPAddr()
	base := srv.HTTPURL()
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The slow client sends half a request and stalls.
	if _, err := io.WriteString(conns[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// The third is closed on accept, long before the 5 s header timeout
	// that would otherwise close an idle connection; the slow one at that
	// timeout.
	for i, tt := range []struct {
		c     net.Conn
		bound time.Duration
	}{{conns[2], 2 * time.Second}, {conns[0], 15 * time.Second}} {
		start := time.Now()
		tt.c.SetReadDeadline(time.Now().Add(tt.bound))
		_, err := io.ReadAll(tt.c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d still open after %s", i, tt.bound)
		}
		t.Logf("connection %d closed after %s", i, time.Since(start).Round(time.Millisecond))
	}
	conns[1].Close()

	req, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: %s", resp.Status)
	}
	resp, err = http.Post(base+proto.EnrollPath, "application/json", strings.NewReader(`{"device_id":"gw-1","token":"`+strings.Repeat("a", 1<<20)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "too large") {
		t.Fatalf("1 MiB enrolment body: %s %s", resp.Status, body)
	}
}
