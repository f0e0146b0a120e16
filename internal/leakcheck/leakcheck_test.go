package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func TestLeakedFindsARunningGoroutine(t *testing.T) {
	stop := make(chan struct{})
	started := make(chan struct{})
	go func() { close(started); <-stop }()
	<-started
	got := Leaked("github.com/edgefleet/edgefleet/internal/leakcheck", 50*time.Millisecond)
	if !strings.Contains(got, "TestLeakedFindsARunningGoroutine.func1") {
		t.Fatalf("a goroutine of this package was not reported:\n%s", got)
	}
	close(stop)
	if got := Leaked("github.com/edgefleet/edgefleet/internal/leakcheck", 2*time.Second); got != "" {
		t.Fatalf("a stopped goroutine was reported:\n%s", got)
	}
}
