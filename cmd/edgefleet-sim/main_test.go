package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--devices", "0"}, "devices"},
		{[]string{"--model", "kws"}, "name=version"},
		{[]string{"--behavior", "kws=1ms,2ms,0"}, "name@version"},
		{[]string{"--behavior", "kws@1=1ms,xx,0"}, "xx"},
		{[]string{"--behavior", "kws@1=1ms,2ms,3"}, "error rate"},
		{[]string{"--log-level", "loud"}, "log-level"},
		{[]string{"stray"}, "unexpected"},
	} {
		err := run(context.Background(), tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error mentioning %q", tt.args, err, tt.want)
		}
	}
}

func TestRunsUntilCanceled(t *testing.T) {
	// Nothing listens on port 1: devices retry in the background; the
	// command still stops promptly and cleanly when told to.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--devices", "3", "--server", "tcp://127.0.0.1:1", "--ramp", "0", "--log-level", "error"})
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("edgefleet-sim did not stop")
	}
}
