package tlsca_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/tlsca"
)

func TestCreateLoadAndServe(t *testing.T) {
	dir := t.TempDir()
	ca, created, err := tlsca.LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, tlsca.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	again, created, err := tlsca.LoadOrCreate(dir)
	if err != nil || created || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("reload: created=%v err=%v; the CA must survive restarts", created, err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			io.WriteString(c, "ok")
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("a client pinning the CA cannot connect: %v", err)
	}
	c.Close()
	// Another CA is not trusted.
	other, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool2 := x509.NewCertPool()
	pool2.AppendCertsFromPEM(other.CertPEM())
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool2}); err == nil {
		c.Close()
		t.Fatal("a client pinning another CA connected")
	}
	ln.Close()
	<-done
}

func TestHalfACAIsReported(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := tlsca.LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, tlsca.CertFile))
	if _, _, err := tlsca.LoadOrCreate(dir); !errors.Is(err, tlsca.ErrBadCA) {
		t.Fatalf("got %v, want ErrBadCA", err)
	}
}
