package broker

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is a mochi listener that owns the goroutine of every
// connection it accepts: Close returns only after each has finished, so
// the last wills they send on shutdown reach the handler before the caller
// closes the store. (mochi's own Net listener counts its connections only
// once their goroutine has started, which races with Close.)
type tcpListener struct {
	ln   net.Listener
	wg   sync.WaitGroup
	once sync.Once

	// maxPerIP (0: none) bounds connections per remote IP; connectTimeout
	// bounds the wait for CONNECT (mochi sets no deadline before it reads
	// the keepalive from CONNECT, then sets its own).
	maxPerIP       int
	connectTimeout time.Duration
	mu             sync.Mutex
	perIP          map[string]int
	conns          map[net.Conn]struct{}
	overCap        atomic.Int64
}

var _ listeners.Listener = (*tcpListener)(nil)

func (l *tcpListener) ID() string              { return "mqtt" }
func (l *tcpListener) Address() string         { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string        { return "tcp" }
func (l *tcpListener) Init(*slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	l.wg.Add(1) // the accept loop itself
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		ip := remoteIP(conn)
		if !l.admit(ip, conn) {
			l.overCap.Add(1)
			conn.Close()
			continue
		}
		if l.connectTimeout > 0 {
			conn.SetDeadline(time.Now().Add(l.connectTimeout))
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.release(ip, conn)
			_ = establish(l.ID(), conn) // mochi logs and closes failed connections itself
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		l.ln.Close()
		closeClients(l.ID())
		// Connections that never became clients (no CONNECT yet) are
		// not closed by mochi; close them too, then wait for every
		// connection goroutine, so mochi's own wait that follows has
		// nothing left to race with.
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
}

// wait blocks until the accept loop and every connection have finished.
func (l *tcpListener) wait() { l.wg.Wait() }

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

func (l *tcpListener) admit(ip string, c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP {
		return false
	}
	l.perIP[ip]++
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *tcpListener) release(ip string, c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}
