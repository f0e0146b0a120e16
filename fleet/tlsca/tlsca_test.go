package tlsca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

func TestSignClient(t *testing.T) {
	ca, _, err := tlsca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "someone-else"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	certPEM, err := ca.SignClient(csr, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "gw-1" {
		t.Fatalf("CN %q: the device id must replace the request's subject", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify against the CA: %v", err)
	}
	tampered := append([]byte{}, der...)
	tampered[len(tampered)-5] ^= 0xff
	for name, bad := range map[string][]byte{
		"not PEM":       []byte("hello"),
		"a certificate": certPEM,
		"bad signature": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}),
		"truncated":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der[:20]}),
	} {
		if _, err := ca.SignClient(bad, "gw-1"); !errors.Is(err, tlsca.ErrBadCSR) {
			t.Errorf("%s: got %v, want ErrBadCSR", name, err)
		}
	}
}
