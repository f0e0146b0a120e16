package fleetd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/fleet/auth"
	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/fleet/tlsca"
	"github.com/edgefleet/edgefleet/proto"
)

// Values of SecurityConfig.MQTTAuth and SecurityConfig.TLS.
const (
	MQTTAuthRequired = "required"
	MQTTAuthOff      = "off"

	TLSOff        = "off"
	TLSSelfSigned = "self-signed"
	TLSFiles      = "files"
)

// SecurityConfig is device identity and transport security.
type SecurityConfig struct {
	// MQTTAuth is MQTTAuthRequired (the default when empty: only enrolled
	// devices connect, each to its own topics) or MQTTAuthOff (anyone may
	// connect and use any topic; for demos and tests).
	MQTTAuth string
	// TLS is TLSOff (default), TLSSelfSigned (a CA generated on first
	// start in DataDir/tls signs the server certificate) or TLSFiles
	// (TLSCertFile and TLSKeyFile; TLSCAFile is handed to devices to pin).
	// It applies to HTTPS and the embedded broker alike.
	TLS                                string
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// TLSHosts are the names and IPs the self-signed certificate covers,
	// besides localhost, 127.0.0.1 and the host name.
	TLSHosts []string
	// BrokerPublicURL is the broker address given to devices at
	// enrolment; default the broker's own URL.
	BrokerPublicURL string
	// MQTTUsername and MQTTPassword are the server's credentials on an
	// external broker; the same pair is allowed everything by the EMQX
	// auth endpoints.
	MQTTUsername, MQTTPassword string
	// MQTTCAFile is the PEM CA that verifies an external broker reached
	// over TLS (--mqtt-url ssl://...); empty means the system roots.
	MQTTCAFile string
	// MosquittoDir, when set, receives a Mosquitto password file and ACL
	// file (enroll.MosquittoPasswordFile, enroll.MosquittoACLFile) at start
	// and after every enrolment change, for an external Mosquitto that
	// enforces the same rules (deploy/mosquitto/README.md).
	MosquittoDir string
	// HTTPMaxConnsPerIP and MQTTMaxConnsPerIP bound concurrent connections
	// from one address; 0 means no bound (the default: gateways behind
	// one NAT, and simulators, share an address). Set them where the
	// server is exposed.
	HTTPMaxConnsPerIP, MQTTMaxConnsPerIP int
}

// security is the server's enrolment authority and TLS material.
type security struct {
	mosqMu sync.Mutex // one writer of the Mosquitto files at a time
	enr    *enroll.Enroll
	ca     *tlsca.CA // the self-signed CA; nil otherwise
	tls    *tls.Config
	caPEM  []byte
	caHash string
}

func (c SecurityConfig) validate() error {
	switch c.MQTTAuth {
	case "", MQTTAuthRequired, MQTTAuthOff:
	default:
		return fmt.Errorf("%w: mqtt auth %q is not %s or %s (--mqtt-auth)", ErrConfig, c.MQTTAuth, MQTTAuthRequired, MQTTAuthOff)
	}
	if c.HTTPMaxConnsPerIP < 0 || c.MQTTMaxConnsPerIP < 0 {
		return fmt.Errorf("%w: connections per IP cannot be negative (--http-max-conns-per-ip, --mqtt-max-conns-per-ip)", ErrConfig)
	}
	switch c.TLS {
	case "", TLSOff, TLSSelfSigned:
	case TLSFiles:
		if c.TLSCertFile == "" || c.TLSKeyFile == "" {
			return fmt.Errorf("%w: --tls=files needs --tls-cert and --tls-key", ErrConfig)
		}
	default:
		return fmt.Errorf("%w: tls %q is not %s, %s or %s (--tls)", ErrConfig, c.TLS, TLSOff, TLSSelfSigned, TLSFiles)
	}
	return nil
}

// openSecurity opens the enrolment records (in the fleet store's file) and
// loads or creates the TLS material. Call after the store is open.
func (s *Server) openSecurity() error {
	c := s.cfg.Security
	if err := c.validate(); err != nil {
		return err
	}
	var err error
	s.sec.enr, err = enroll.Open(enroll.Options{DB: s.st.DB(), Logger: s.log.With("component", "enroll")})
	if err != nil {
		return err
	}
	if err := s.writeMosquittoFiles(); err != nil {
		return err
	}
	if c.MosquittoDir != "" {
		s.sec.enr.OnChange(func() {
			if err := s.writeMosquittoFiles(); err != nil {
				s.log.Error("mosquitto password and ACL files not updated; the broker keeps the old ones", "error", err)
			}
		})
	}
	switch c.TLS {
	case TLSSelfSigned:
		ca, created, err := tlsca.LoadOrCreate(filepath.Join(s.cfg.DataDir, "tls"))
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		if created {
			s.log.Info("generated the fleet's TLS CA; agents pin it at enrolment", "ca_sha256", ca.Fingerprint())
		}
		// Every start, so the operator can always find what
		// `edgefleet-agent enroll --ca-sha256` wants.
		s.log.Info("TLS with the fleet's own CA", "ca_cert", filepath.Join(s.cfg.DataDir, "tls", tlsca.CertFile), "ca_sha256", ca.Fingerprint())
		host, _ := os.Hostname()
		cert, err := ca.ServerCertificate(append([]string{"localhost", "127.0.0.1", "::1", host}, c.TLSHosts...))
		if err != nil {
			return fmt.Errorf("tls: server certificate: %w", err)
		}
		// Devices may also prove themselves with a client certificate
		// from this CA (enrolment signs their requests); optional, so
		// browsers and secret-holding devices are unaffected.
		s.sec.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool()}
		s.sec.caPEM, s.sec.caHash, s.sec.ca = ca.CertPEM(), ca.Fingerprint(), ca
	case TLSFiles:
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		s.sec.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			if s.sec.caPEM, err = os.ReadFile(c.TLSCAFile); err != nil {
				return fmt.Errorf("tls: %w", err)
			}
		}
	}
	return nil
}

// writeMosquittoFiles regenerates the Mosquitto files, if configured.
func (s *Server) writeMosquittoFiles() error {
	c := s.cfg.Security
	if c.MosquittoDir == "" {
		return nil
	}
	user, hash := c.MQTTUsername, ""
	if user == "" {
		user = DefaultMQTTUsername
	}
	if c.MQTTPassword != "" {
		hash = enroll.MosquittoPasswordHash(c.MQTTPassword)
	}
	s.sec.mosqMu.Lock()
	defer s.sec.mosqMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.sec.enr.WriteMosquittoFiles(ctx, c.MosquittoDir, user, hash)
}

// DefaultMQTTUsername is the server's user in generated Mosquitto files
// when --mqtt-username is not set.
const DefaultMQTTUsername = "edgefleet-server"

// externalTLS verifies an external broker over TLS; nil means paho's
// default (the system roots).
func (s *Server) externalTLS() (*tls.Config, error) {
	f := s.cfg.Security.MQTTCAFile
	if f == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f)
	if err != nil {
		return nil, fmt.Errorf("mqtt CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: mqtt CA %s holds no PEM certificate (--mqtt-ca)", ErrConfig, f)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// brokerAuth is what the embedded broker checks devices with; nil when
// auth is off.
func (s *Server) brokerAuth() broker.Authenticator {
	if s.cfg.Security.MQTTAuth == MQTTAuthOff {
		return nil
	}
	return s.sec.enr
}

// wireEnrollment mounts the enrolment API and makes a cut-off device lose
// its broker connection at once. Call once the broker and the registry
// (the fleet key) exist.
func (s *Server) wireEnrollment(mux *http.ServeMux) {
	if e, ok := s.broker.(*broker.Embedded); ok {
		s.sec.enr.OnCutOff(func(id string) { e.Disconnect(id) })
	}
	opts := enroll.HTTPOptions{BrokerURL: s.cfg.Security.BrokerPublicURL, CACert: s.sec.caPEM,
		ServerUser: s.cfg.Security.MQTTUsername, ServerSecret: enroll.Secret(s.cfg.Security.MQTTPassword), Logger: s.log.With("component", "enroll")}
	if opts.BrokerURL == "" {
		opts.BrokerURL = s.broker.URL()
		if u, err := url.Parse(opts.BrokerURL); err == nil {
			if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
				s.log.Warn("devices would be told to connect to an unspecified address; set --mqtt-public-url to the broker address gateways reach", "broker", opts.BrokerURL)
			}
		}
	}
	if s.reg != nil {
		opts.FleetKey = s.reg.PublicKey()
	}
	if s.sec.ca != nil {
		opts.SignClient = s.sec.ca.SignClient
	}
	enroll.NewHandler(s.sec.enr, opts).Register(mux)
}

// secureListener bounds connections per IP and wraps the HTTP listener in
// TLS when TLS is on.
func (s *Server) secureListener(ln net.Listener) net.Listener {
	if n := s.cfg.Security.HTTPMaxConnsPerIP; n > 0 {
		ln = &ipCapListener{Listener: ln, max: n, perIP: map[string]int{}}
	}
	if s.sec.tls == nil {
		return ln
	}
	return tls.NewListener(ln, s.sec.tls)
}

// ipCapListener closes connections beyond max from one IP as soon as they
// are accepted, so one client cannot hold every file descriptor.
type ipCapListener struct {
	net.Listener
	max   int
	mu    sync.Mutex
	perIP map[string]int
}

func (l *ipCapListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil {
			ip = c.RemoteAddr().String()
		}
		l.mu.Lock()
		ok := l.perIP[ip] < l.max
		if ok {
			l.perIP[ip]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &ipCapConn{Conn: c, l: l, ip: ip}, nil
	}
}

type ipCapConn struct {
	net.Conn
	l    *ipCapListener
	ip   string
	once sync.Once
}

func (c *ipCapConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.perIP[c.ip]--; c.l.perIP[c.ip] <= 0 {
			delete(c.l.perIP, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Enrollment is the server's enrolment authority.
func (s *Server) Enrollment() *enroll.Enroll { return s.sec.enr }

// CAFingerprint is the SHA-256 of the self-signed CA that agents pin
// (edgefleet-agent enroll --ca-sha256); empty unless --tls=self-signed.
func (s *Server) CAFingerprint() string { return s.sec.caHash }

// CACert is the PEM CA certificate handed to devices; nil without one.
func (s *Server) CACert() []byte { return s.sec.caPEM }

// publicEnrollment is auth.DefaultPolicy with the device-facing
// enrolment endpoints public: a gateway has no operator login and proves
// itself with its token (or waits for an operator), and a broker calling
// the EMQX endpoints proves nothing but learns only allow or deny for
// credentials it was given.
func publicEnrollment(r *http.Request) auth.Rule {
	if r.Method == http.MethodPost {
		switch r.URL.Path {
		case proto.EnrollPath, "/api/v1/mqtt/auth", "/api/v1/mqtt/acl":
			return auth.Rule{Public: true}
		}
	}
	return auth.DefaultPolicy(r)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
