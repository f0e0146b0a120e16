package broker

import (
	"log/slog"
	"net"
	"sync"

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
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			_ = establish(l.ID(), conn) // mochi logs and closes failed connections itself
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		l.ln.Close()
		closeClients(l.ID())
	})
}

// wait blocks until the accept loop and every connection have finished.
func (l *tcpListener) wait() { l.wg.Wait() }
