package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/proto"
)

// Authenticator checks a device's credentials at connect; enroll.Enroll
// provides it. It returns nil only for an enrolled, accepted device whose
// secret matches.
type Authenticator interface {
	Authenticate(ctx context.Context, deviceID string, secret []byte) error
}

// certAuthenticator is the optional ability to admit a device that proved
// itself with a client certificate (verified by the TLS listener against
// EmbeddedOptions.TLS.ClientCAs) instead of the secret: it only checks the
// device is still accepted. enroll.Enroll provides it.
type certAuthenticator interface {
	Accepted(ctx context.Context, deviceID string) error
}

// authHook admits only enrolled devices and confines each to its own
// topics (enroll.TopicAllowed). It replaces connectHook when auth is on:
// mochi admits a client, or allows a topic, if any hook says yes, so an
// allow-all hook next to this one would open everything again. The
// server's inline client never reaches it for publishes and is allowed
// everything else.
type authHook struct {
	mqtt.HookBase
	ctx     context.Context
	auth    Authenticator
	timeout time.Duration
	log     *slog.Logger
	refused atomic.Int64
	denied  atomic.Int64
}

func (h *authHook) ID() string { return "edgefleet-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSessionEstablished
}

// OnSessionEstablished checks the credentials again once the client is
// registered: a revocation that landed between the CONNECT check and the
// registration found no connection to cut, so it is cut here instead.
func (h *authHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	if err := h.check(cl, pk); err != nil {
		h.refused.Add(1)
		h.log.Warn("disconnected a client revoked while it connected", "client_id", cl.ID, "error", err)
		cl.Stop(packets.ErrNotAuthorized)
	}
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Inline {
		return true
	}
	user := string(pk.Connect.Username)
	refuse := func(why string, args ...any) bool {
		h.refused.Add(1)
		h.log.Warn("refused connection: "+why, append([]any{"client_id", cl.ID, "remote", cl.Net.Remote}, args...)...)
		return false
	}
	if err := proto.ValidateDeviceID(cl.ID); err != nil {
		return refuse("client id is not a device id", "error", err)
	}
	if pk.Connect.UsernameFlag && user != cl.ID {
		return refuse("username is not the client id", "username", user)
	}
	if err := h.check(cl, pk); err != nil {
		return refuse("credentials not accepted", "error", err)
	}
	// mochi publishes a will on disconnect without an ACL check.
	if pk.Connect.WillFlag && !enroll.TopicAllowed(cl.ID, pk.Connect.WillTopic, true) {
		return refuse("last will on a topic the device may not publish", "will_topic", pk.Connect.WillTopic)
	}
	return true
}

// check admits the client by its secret, or else by a verified client
// certificate issued for its id; either way the device must be accepted
// now.
func (h *authHook) check(cl *mqtt.Client, pk packets.Packet) error {
	ctx, cancel := context.WithTimeout(h.ctx, h.timeout)
	defer cancel()
	if len(pk.Connect.Password) > 0 {
		return h.auth.Authenticate(ctx, cl.ID, pk.Connect.Password)
	}
	ca, ok := h.auth.(certAuthenticator)
	tc, isTLS := cl.Net.Conn.(*tls.Conn)
	if !ok || !isTLS {
		return errors.New("no credentials (anonymous clients are not allowed; enrol the device)")
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return errors.New("no password and no verified client certificate (anonymous clients are not allowed; enrol the device)")
	}
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != cl.ID {
		return fmt.Errorf("client certificate is for %q, not %q", cn, cl.ID)
	}
	return ca.Accepted(ctx, cl.ID)
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if enroll.TopicAllowed(cl.ID, topic, write) {
		return true
	}
	h.denied.Add(1)
	h.log.Warn("denied topic", "client_id", cl.ID, "topic", topic, "write", write)
	return false
}

// Disconnect cuts the device's connection, if it has one, at once; with
// auth on, its credentials are refused when it tries again. It reports
// whether a connection was cut.
func (e *Embedded) Disconnect(deviceID string) bool {
	cl, ok := e.srv.Clients.Get(deviceID)
	if !ok || cl.Net.Inline || cl.Closed() {
		return false
	}
	_ = e.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	e.log.Info("disconnected device", "device", deviceID)
	return true
}

var _ mqtt.Hook = (*authHook)(nil)
