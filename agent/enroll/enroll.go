// Package enroll gets a gateway its fleet credentials and keeps them: it
// trades an enrolment token (or, without one, waits for an operator to
// accept the device) for a per-device MQTT secret, the fleet's
// model-signing key, the broker address and the server's CA certificate,
// and stores them 0600 in the state directory. From then on the agent
// connects with them and trusts only that CA.
//
// Over https the very first request has no CA to check the server
// against yet, so the operator pins it: with the CA certificate file, or
// with its SHA-256 fingerprint as the server prints it.
package enroll

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/proto"
)

// FileName is the credentials file in the state directory.
const FileName = "credentials.json"

// requestKeyFile keeps the key of a device waiting for acceptance, so a
// restarted enrolment keeps its place.
const requestKeyFile = "enroll-request-key"

// Credentials are what the agent connects with.
type Credentials struct {
	DeviceID  string            `json:"device_id"`
	Secret    string            `json:"secret"`
	Labels    map[string]string `json:"labels,omitempty"`
	BrokerURL string            `json:"broker_url"`
	FleetKey  string            `json:"fleet_key,omitempty"`
	CACert    string            `json:"ca_cert,omitempty"`
	// Server is the URL the device enrolled with.
	Server string `json:"server"`
	// ClientCert and ClientKey, when the device asked for one, are its
	// client certificate from the fleet CA and the key it made for it
	// (PEM); over TLS the broker accepts them instead of the secret.
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
}

// LogValue leaves the secret out of logs.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("device_id", c.DeviceID), slog.String("broker", c.BrokerURL), slog.String("server", c.Server))
}

// PublicKey decodes FleetKey; nil when there is none.
func (c *Credentials) PublicKey() (ed25519.PublicKey, error) {
	if c.FleetKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(c.FleetKey)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: fleet key is not a base64 ed25519 public key", ErrBadCredentials)
	}
	return k, nil
}

// TLSConfig trusts only the pinned CA; nil when the server gave none.
func (c *Credentials) TLSConfig() (*tls.Config, error) {
	if c.CACert == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CACert)) {
		return nil, fmt.Errorf("%w: CA certificate is not PEM", ErrBadCredentials)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.ClientCert != "" {
		pair, err := tls.X509KeyPair([]byte(c.ClientCert), []byte(c.ClientKey))
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrBadCredentials, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// Load reads the credentials from stateDir; ErrNotEnrolled when there are
// none.
func Load(stateDir string) (*Credentials, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil || c.DeviceID == "" || c.Secret == "" || c.BrokerURL == "" {
		return nil, fmt.Errorf("%w: %s is damaged; enrol again", ErrBadCredentials, filepath.Join(stateDir, FileName))
	}
	return &c, nil
}

// Save writes c to stateDir with mode 0600, atomically: a crash leaves
// the old file or the new one, never half of one.
func Save(stateDir string, c *Credentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(stateDir, FileName), b)
}

func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Options configure Enroll.
type Options struct {
	// Server is the fleet server's URL, http(s)://host:port.
	Server string
	// Token is the enrolment token; empty means ask to join and wait for
	// an operator.
	Token string
	// DeviceID is the id to enrol under.
	DeviceID string
	// StateDir receives the credentials.
	StateDir string
	// CACertPEM or CAFingerprint (hex SHA-256 of the CA certificate's DER,
	// colons allowed) pin the server over https. One is required for
	// https.
	CACertPEM     []byte
	CAFingerprint string
	// ClientCert asks for a client certificate too: the device makes a
	// key that never leaves it and sends a certificate request.
	ClientCert bool
	// PollInterval is the wait between asks while pending; default 10 s.
	PollInterval time.Duration
	// Timeout bounds each request; default 30 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Enroll obtains the device's credentials and saves them in StateDir.
// Without a token it keeps asking until an operator accepts (or rejects)
// the device or ctx ends.
func Enroll(ctx context.Context, opts Options) (*Credentials, error) {
	if opts.StateDir == "" {
		return nil, fmt.Errorf("%w: no state directory to keep the credentials in", ErrBadCredentials)
	}
	c, err := Obtain(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := Save(opts.StateDir, c); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(opts.StateDir, requestKeyFile))
	return c, nil
}

// Obtain is Enroll without saving, for callers that keep credentials
// elsewhere (the simulator keeps them in memory). Without a token it
// still keeps its request key in StateDir.
func Obtain(ctx context.Context, opts Options) (*Credentials, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if err := proto.ValidateDeviceID(opts.DeviceID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCredentials, err)
	}
	u, err := url.Parse(opts.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an http(s) URL like https://fleet.example.com:8443", opts.Server)
	}
	client, pin, err := httpClient(u.Scheme, opts)
	if err != nil {
		return nil, err
	}
	req := proto.EnrollRequest{DeviceID: opts.DeviceID, Token: opts.Token}
	if opts.Token == "" {
		req.RequestKey, err = requestKey(opts.StateDir)
		if err != nil {
			return nil, err
		}
	}
	var keyPEM []byte
	if opts.ClientCert {
		if req.CSR, keyPEM, err = certRequest(opts.DeviceID); err != nil {
			return nil, err
		}
	}
	endpoint := strings.TrimSuffix(opts.Server, "/") + proto.EnrollPath
	for {
		resp, pending, err := post(ctx, client, endpoint, req, opts.Timeout)
		if err != nil {
			return nil, err
		}
		if !pending {
			c := &Credentials{DeviceID: resp.DeviceID, Secret: resp.Secret, Labels: resp.Labels, BrokerURL: resp.BrokerURL,
				FleetKey: resp.FleetKey, CACert: resp.CACert, Server: opts.Server}
			if opts.ClientCert {
				if resp.ClientCert == "" {
					return nil, fmt.Errorf("%w: asked for a client certificate, got none", ErrBadCredentials)
				}
				c.ClientCert, c.ClientKey = resp.ClientCert, string(keyPEM)
			}
			if err := check(c, opts.DeviceID, pin); err != nil {
				return nil, err
			}
			log.Info("enrolled", "credentials", c)
			return c, nil
		}
		log.Info("waiting for an operator to accept this device", "device", opts.DeviceID, "retry_in", opts.PollInterval)
		t := time.NewTimer(opts.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s is still waiting for acceptance", ErrPending, opts.DeviceID)
		case <-t.C:
		}
	}
}

// check validates what the server sent, and that its CA is the pinned one.
func check(c *Credentials, id string, pin []byte) error {
	if c.DeviceID != id || c.Secret == "" || c.BrokerURL == "" {
		return fmt.Errorf("%w: the server's answer lacks the device id, secret or broker", ErrBadCredentials)
	}
	if _, err := c.PublicKey(); err != nil {
		return err
	}
	if _, err := c.TLSConfig(); err != nil {
		return err
	}
	if c.CACert != "" {
		blk, _ := pem.Decode([]byte(c.CACert))
		if blk == nil {
			return fmt.Errorf("%w: CA certificate is not PEM", ErrBadCredentials)
		}
		if pin != nil {
			sum := sha256.Sum256(blk.Bytes)
			if !bytes.Equal(sum[:], pin) {
				return fmt.Errorf("%w: the server sent a CA other than the pinned one", ErrBadCredentials)
			}
		}
	}
	return nil
}

func post(ctx context.Context, client *http.Client, endpoint string, body proto.EnrollRequest, timeout time.Duration) (*proto.EnrollResponse, bool, error) {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(b))
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("enrol at %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, proto.MaxEnrollBodyBytes))
	if err != nil {
		return nil, false, fmt.Errorf("enrol at %s: %w", endpoint, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var out proto.EnrollResponse
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, false, fmt.Errorf("%w: unexpected answer: %v", ErrBadCredentials, err)
		}
		return &out, false, nil
	case http.StatusAccepted:
		return nil, true, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	msg := resp.Status
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return nil, false, fmt.Errorf("%w: %s", ErrRefused, msg)
}

// httpClient returns a client that trusts only the pinned CA over https,
// and the fingerprint to check the CA of the answer against.
func httpClient(scheme string, opts Options) (*http.Client, []byte, error) {
	tr := &http.Transport{TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: opts.Timeout}
	client := &http.Client{Transport: tr, Timeout: opts.Timeout}
	if scheme != "https" {
		return client, nil, nil
	}
	switch {
	case opts.CACertPEM != nil:
		pool := x509.NewCertPool()
		blk, _ := pem.Decode(opts.CACertPEM)
		if blk == nil || !pool.AppendCertsFromPEM(opts.CACertPEM) {
			return nil, nil, fmt.Errorf("%w: the CA certificate given is not PEM", ErrBadCredentials)
		}
		sum := sha256.Sum256(blk.Bytes)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		return client, sum[:], nil
	case opts.CAFingerprint != "":
		pin, err := hex.DecodeString(strings.ReplaceAll(strings.ToLower(opts.CAFingerprint), ":", ""))
		if err != nil || len(pin) != sha256.Size {
			return nil, nil, fmt.Errorf("%w: CA fingerprint %q is not a hex SHA-256", ErrBadCredentials, opts.CAFingerprint)
		}
		// No CA to verify against yet: accept the chain only if it
		// contains the pinned CA and the leaf verifies against it.
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { return verifyPinned(raw, pin) }}
		return client, pin, nil
	}
	return nil, nil, fmt.Errorf("%w: enrolling over https needs the server's CA: --ca-cert FILE or --ca-sha256 FINGERPRINT (the server prints it at start)", ErrBadCredentials)
}

func verifyPinned(raw [][]byte, pin []byte) error {
	certs := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		if !bytes.Equal(sum[:], pin) || !c.IsCA {
			continue
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		inter := x509.NewCertPool()
		for _, i := range certs[1:] {
			inter.AddCert(i)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter}); err != nil {
			return fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
		}
		return nil
	}
	return errors.New("the server did not present the pinned CA certificate")
}

// requestKey is the device's key while it waits, kept in stateDir so a
// restart keeps its place; without a state dir it lives only as long as
// this call.
func requestKey(stateDir string) (string, error) {
	if stateDir == "" {
		b := make([]byte, 32)
		rand.Read(b)
		return base64.RawURLEncoding.EncodeToString(b), nil
	}
	path := filepath.Join(stateDir, requestKeyFile)
	if b, err := os.ReadFile(path); err == nil && len(b) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 32)
	rand.Read(b)
	k := base64.RawURLEncoding.EncodeToString(b)
	if err := writeFile(path, []byte(k)); err != nil {
		return "", err
	}
	return k, nil
}

// certRequest makes the device's client key and a certificate request
// for deviceID.
func certRequest(deviceID string) (csrPEM string, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: deviceID}}, key)
	if err != nil {
		return "", nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
