// Package tlsca is the fleet server's own certificate authority: a
// self-signed CA generated on first start and kept in the data dir, which
// signs the server's TLS certificate (HTTPS and MQTT) at every start.
// Agents pin the CA at enrolment, so no public CA or DNS name is needed
// for a fleet on a private network.
package tlsca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names in the directory given to LoadOrCreate.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca-key.pem"
)

// Lifetimes: the CA outlives any gateway's deployment, since agents pin
// it; the server certificate is reissued at every start.
const (
	CALifetime     = 20 * 365 * 24 * time.Hour
	ServerLifetime = 397 * 24 * time.Hour
)

// CA is a loaded certificate authority.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
}

// LoadOrCreate loads the CA from dir, or creates one there (key 0600)
// when neither file exists. It reports whether it created it.
func LoadOrCreate(dir string) (*CA, bool, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		ca, err := Parse(certPEM, keyPEM)
		return ca, false, err
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, false, fmt.Errorf("read %s: %w", certPath, cerr)
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, false, fmt.Errorf("read %s: %w", keyPath, kerr)
	default:
		return nil, false, fmt.Errorf("%w: only one of %s and %s exists; restore the other or remove both (devices will need to enrol again)", ErrBadCA, certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "edgefleet fleet CA", Organization: []string{"edgefleet"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	// The key first: a crash between the two leaves "only the key", which
	// LoadOrCreate reports rather than silently making a new CA.
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, false, err
	}
	ca, err := Parse(certPEM, keyPEM)
	return ca, true, err
}

// Parse loads a CA from PEM.
func Parse(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%w: certificate or key is not PEM", ErrBadCA)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCA, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrBadCA, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%w: not a CA certificate with a signing key", ErrBadCA)
	}
	return &CA{cert: cert, key: signer, certPEM: certPEM}, nil
}

// CertPEM is the CA certificate that agents pin.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Fingerprint is the hex SHA-256 of the CA certificate, which an operator
// gives `edgefleet-agent enroll --ca-sha256` to pin it over https.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ServerCertificate issues a certificate for hosts (DNS names or IPs),
// with the CA in its chain so clients pinning by fingerprint see it.
func (ca *CA) ServerCertificate(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "edgefleet server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// ClientLifetime is how long a device's client certificate is valid. The
// broker checks the device's enrolment at every connect, so revoking a
// device does not wait for its certificate to expire.
const ClientLifetime = 5 * 365 * 24 * time.Hour

// SignClient issues a client certificate for deviceID from a PEM
// certificate request made by the device with its own key (which never
// leaves it). The request's signature must verify; its subject is
// replaced by the device id.
func (ca *CA) SignClient(csrPEM []byte, deviceID string) ([]byte, error) {
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM CERTIFICATE REQUEST", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA key of %d bits; want at least 2048", ErrBadCSR, k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, k)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: deviceID, Organization: []string{"edgefleet device"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ClientLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Pool is a certificate pool holding only the CA, for verifying client
// certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}
