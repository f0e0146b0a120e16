package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// notifier speaks systemd's notify protocol on $NOTIFY_SOCKET: READY=1 once
// the agent runs, WATCHDOG=1 at half of $WATCHDOG_USEC for as long as the
// agent answers a health probe, STOPPING=1 on the way out. The unit runs the
// agent with Type=notify and WatchdogSec=, so an agent whose state store or
// loops wedge is restarted instead of sitting silent on a gateway nobody
// watches. Without $NOTIFY_SOCKET every method does nothing.
type notifier struct {
	addr *net.UnixAddr
	log  *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &notifier{log: log}
	}
	if strings.HasPrefix(path, "@") { // abstract socket
		path = "\x00" + path[1:]
	}
	return &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}, log: log}
}

// send writes one notification; failures are logged, never fatal: the
// agent serves with or without systemd listening.
func (n *notifier) send(state string) {
	if n.addr == nil {
		return
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		n.log.Warn("systemd notify", "state", state, "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		n.log.Warn("systemd notify", "state", state, "err", err)
	}
}

// watchdogInterval is half of $WATCHDOG_USEC (as systemd recommends), or 0
// when no watchdog is configured for this process.
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// watch pings the watchdog every interval while healthy answers nil within
// the interval, until ctx is done. A probe that fails or hangs skips the
// ping; systemd restarts the agent when pings stop for WatchdogSec.
func (n *notifier) watch(ctx context.Context, interval time.Duration, healthy func(context.Context) error) {
	if n.addr == nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := healthy(pctx)
		cancel()
		if err == nil {
			n.send("WATCHDOG=1")
		} else if ctx.Err() == nil {
			n.log.Warn("health probe failed; not pinging the systemd watchdog", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
