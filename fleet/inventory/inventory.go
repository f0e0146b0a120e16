// Package inventory is the fleet's knowledge of its devices: it applies the
// messages devices publish (hello, status, telemetry) to the store following
// the protocol's rules, answers queries over the devices, and counts the
// messages it had to drop, by reason.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

// Reasons a device message is dropped; they are the keys of Rejected.
const (
	ReasonTopic       = "bad_topic"       // not a device topic, or an unknown kind
	ReasonDirection   = "wrong_direction" // a device published on a fleet→device topic
	ReasonClientID    = "client_id"       // a client published under another device's id
	ReasonTooLarge    = "too_large"
	ReasonMalformed   = "malformed"
	ReasonInvalid     = "invalid"
	ReasonDeviceLimit = "device_limit"
)

// counterPrefix names the persisted counters this package owns in the store.
const counterPrefix = "inventory.rejected."

// Options configure an Inventory.
type Options struct {
	// Logger receives the inventory's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject a fixed one.
	Now func() time.Time
}

// Inventory applies device messages and answers device queries.
type Inventory struct {
	st  *store.Store
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	changed  chan struct{}
	rejected map[string]uint64
	flushed  map[string]uint64 // the part of rejected already in the store
	dups     uint64
}

// New returns an Inventory over st. It loads the persisted reject counters.
func New(ctx context.Context, st *store.Store, opts Options) (*Inventory, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	inv := &Inventory{st: st, log: log, now: now, changed: make(chan struct{}), rejected: map[string]uint64{}, flushed: map[string]uint64{}}
	cs, err := st.Counters(ctx)
	if err != nil {
		return nil, fmt.Errorf("load inventory counters: %w", err)
	}
	for k, v := range cs {
		if reason, ok := cutPrefix(k, counterPrefix); ok {
			inv.rejected[reason] = v
			inv.flushed[reason] = v
		}
	}
	return inv, nil
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// Changed returns a channel that is closed at the next change to any
// device. Callers waiting for a condition re-check it and call Changed
// again, so they wait on events rather than poll.
func (inv *Inventory) Changed() <-chan struct{} {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.changed
}

func (inv *Inventory) notify() {
	inv.mu.Lock()
	close(inv.changed)
	inv.changed = make(chan struct{})
	inv.mu.Unlock()
}

// Rejected returns how many device messages were dropped, by reason, since
// the store was created.
func (inv *Inventory) Rejected() map[string]uint64 {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return maps.Clone(inv.rejected)
}

// Duplicates returns how many telemetry windows were resends of windows
// already ingested (since this process started).
func (inv *Inventory) Duplicates() uint64 {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	return inv.dups
}

// Flush persists the reject counters. Counting happens in memory so a flood
// of bad messages cannot turn into a flood of disk syncs; the server calls
// Flush at shutdown.
func (inv *Inventory) Flush(ctx context.Context) error {
	inv.mu.Lock()
	delta := map[string]uint64{}
	for k, v := range inv.rejected {
		if d := v - inv.flushed[k]; d > 0 {
			delta[k] = d
		}
	}
	inv.mu.Unlock()
	for k, d := range delta {
		if err := inv.st.AddCounter(ctx, counterPrefix+k, d); err != nil {
			return fmt.Errorf("flush inventory counters: %w", err)
		}
		inv.mu.Lock()
		inv.flushed[k] += d
		inv.mu.Unlock()
	}
	return nil
}

func (inv *Inventory) reject(reason, clientID, topic string, err error) error {
	inv.mu.Lock()
	inv.rejected[reason]++
	inv.mu.Unlock()
	inv.log.Warn("dropped device message", "reason", reason, "client_id", clientID, "topic", topic, "error", err)
	return fmt.Errorf("%w (%s): %w", ErrRejected, reason, err)
}

// Handle applies one message a device published on topic. clientID is the
// publisher's MQTT client id when the transport knows it (the embedded
// broker), or "" when it does not (a subscription to an external broker);
// a known client id must be the topic's device id.
//
// A message dropped for what it is returns an error wrapping ErrRejected;
// any other error is the server's own failure (the store), and the message
// should not be acknowledged so that the device sends it again.
func (inv *Inventory) Handle(ctx context.Context, clientID, topic string, payload []byte) error {
	id, kind, err := proto.ParseTopic(topic)
	if err != nil {
		return inv.reject(ReasonTopic, clientID, topic, err)
	}
	if clientID != "" && clientID != id {
		return inv.reject(ReasonClientID, clientID, topic, fmt.Errorf("client %q published under device %q", clientID, id))
	}
	if !kind.FromDevice() {
		return inv.reject(ReasonDirection, clientID, topic, fmt.Errorf("devices do not publish %s messages", kind))
	}
	m, err := proto.Decode(kind, id, payload)
	if err != nil {
		reason := ReasonInvalid
		switch {
		case errors.Is(err, proto.ErrTooLarge):
			reason = ReasonTooLarge
		case errors.Is(err, proto.ErrMalformed):
			reason = ReasonMalformed
		}
		return inv.reject(reason, clientID, topic, err)
	}
	switch m := m.(type) {
	case *proto.Hello:
		err = inv.ApplyHello(ctx, m)
	case *proto.Status:
		err = inv.ApplyStatus(ctx, m)
	case *proto.TelemetryWindow:
		err = inv.ApplyTelemetry(ctx, m, payload)
	default:
		// Jobs and acks belong to the rollout and command issues; until then
		// they only prove the device is alive.
		err = inv.touch(ctx, id)
	}
	if errors.Is(err, store.ErrTooManyDevices) {
		return inv.reject(ReasonDeviceLimit, clientID, topic, err)
	}
	if err != nil {
		return fmt.Errorf("apply %s from %s: %w", kind, id, err)
	}
	return nil
}

// ApplyHello upserts the device from its hello: first seen is kept,
// everything else is replaced, and the device is online in the hello's
// session. A hello whose session is below the known one means the device
// lost its state; its telemetry seq is then expected to start over.
func (inv *Inventory) ApplyHello(ctx context.Context, h *proto.Hello) error {
	now := inv.now().UTC()
	reset := false
	_, err := inv.st.UpdateDevice(ctx, h.GetDeviceId(), func(d *store.Device, found bool) (store.Change, error) {
		reset = false
		if !found || d.FirstSeen.IsZero() {
			d.FirstSeen = now
		}
		// The session counter and the telemetry seq live in the same
		// device state. A session below the one known means that state
		// was lost (reflashed, reinstalled): start counting windows again,
		// or every window until the old seq would be taken for a resend.
		if found && h.GetSession() < d.Session {
			reset = true
			d.LastSeq = 0
		}
		d.LastSeen = now
		d.Online = true
		d.Session = h.GetSession()
		d.AgentVersion = h.GetAgentVersion()
		d.ProtocolVersion = h.GetProtocolVersion()
		d.Profile = h.GetFirmwareProfile()
		d.Hardware = hardwareOf(h.GetHardware())
		d.Backends = backendsOf(h.GetBackends())
		d.Models = modelsOf(h.GetModels())
		d.Labels = maps.Clone(h.GetLabels())
		d.WindowsDropped = h.GetTelemetryWindowsDropped()
		return store.Change{Save: true}, nil
	})
	if err != nil {
		return err
	}
	if reset {
		inv.log.Warn("device state was reset (session went back); telemetry seq restarts", "device", h.GetDeviceId(), "session", h.GetSession())
	}
	inv.notify()
	return nil
}

// ApplyStatus applies a presence change. ONLINE marks the device online in
// its session (a lower session than known means its state was reset, as
// in ApplyHello). An OFFLINE (usually the broker sending the device's last will) counts only
// if its session is at least the device's current one: the will of an old
// connection can arrive after the device is back on a newer one.
func (inv *Inventory) ApplyStatus(ctx context.Context, s *proto.Status) error {
	now := inv.now().UTC()
	stale, reset := false, false
	_, err := inv.st.UpdateDevice(ctx, s.GetDeviceId(), func(d *store.Device, found bool) (store.Change, error) {
		stale, reset = false, false
		if !found {
			d.FirstSeen = now
		}
		switch s.GetState() {
		case proto.Status_STATE_ONLINE:
			// The device's own word on its current session, even a lower
			// one (its state was reset); only the broker-sent will can be
			// stale.
			if found && s.GetSession() < d.Session {
				reset = true
				d.LastSeq = 0
			}
			d.Online = true
			d.LastSeen = now
			d.Session = s.GetSession()
		case proto.Status_STATE_OFFLINE:
			if s.GetSession() < d.Session {
				stale = true
				return store.Change{}, nil
			}
			d.Online = false
			d.Session = s.GetSession()
		}
		return store.Change{Save: true}, nil
	})
	if err != nil {
		return err
	}
	if stale {
		inv.log.Debug("ignored stale offline status", "device", s.GetDeviceId(), "session", s.GetSession())
		return nil
	}
	if reset {
		inv.log.Warn("device state was reset (session went back); telemetry seq restarts", "device", s.GetDeviceId(), "session", s.GetSession())
	}
	inv.notify()
	return nil
}

// ApplyTelemetry records a telemetry window: the device is seen and online,
// and the window is stored in its history unless its seq was ingested
// before. payload is the window's encoding as received, kept verbatim.
func (inv *Inventory) ApplyTelemetry(ctx context.Context, w *proto.TelemetryWindow, payload []byte) error {
	now := inv.now().UTC()
	dup := false
	_, err := inv.st.UpdateDevice(ctx, w.GetDeviceId(), func(d *store.Device, found bool) (store.Change, error) {
		dup = false
		if !found {
			d.FirstSeen = now
		}
		d.LastSeen = now
		d.Online = true
		d.WindowsDropped = max(d.WindowsDropped, w.GetWindowsDropped())
		if w.GetSeq() <= d.LastSeq {
			dup = true
			return store.Change{Save: true}, nil
		}
		d.LastSeq = w.GetSeq()
		return store.Change{Save: true, Window: &store.Window{Seq: w.GetSeq(), Received: now, Payload: payload}}, nil
	})
	if err != nil {
		return err
	}
	if dup {
		inv.mu.Lock()
		inv.dups++
		inv.mu.Unlock()
	}
	inv.notify()
	return nil
}

func (inv *Inventory) touch(ctx context.Context, id string) error {
	now := inv.now().UTC()
	_, err := inv.st.UpdateDevice(ctx, id, func(d *store.Device, found bool) (store.Change, error) {
		if !found {
			d.FirstSeen = now
		}
		d.LastSeen = now
		d.Online = true
		return store.Change{Save: true}, nil
	})
	if err == nil {
		inv.notify()
	}
	return err
}

// MarkAllOffline marks every device offline; used when a broker starts
// empty, so no device can be connected yet.
func (inv *Inventory) MarkAllOffline(ctx context.Context) error {
	n, err := inv.st.SetAllOffline(ctx)
	if err != nil {
		return fmt.Errorf("mark devices offline: %w", err)
	}
	if n > 0 {
		inv.log.Info("marked devices offline at start", "devices", n)
		inv.notify()
	}
	return nil
}

// Device returns the device with the given id, or an error wrapping ErrNotFound.
func (inv *Inventory) Device(ctx context.Context, id string) (store.Device, error) {
	d, err := inv.st.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return d, err
}

// Telemetry returns up to limit of the device's latest telemetry windows,
// oldest first.
func (inv *Inventory) Telemetry(ctx context.Context, id string, limit int) ([]store.Window, error) {
	return inv.st.Telemetry(ctx, id, limit)
}

func hardwareOf(h *proto.Hardware) store.Hardware {
	if h == nil {
		return store.Hardware{}
	}
	return store.Hardware{
		Arch: h.GetArch(), OS: h.GetOs(), CPUModel: h.GetCpuModel(), CPUFlags: cloneStrings(h.GetCpuFlags()),
		Cores: h.GetCores(), MemoryBytes: h.GetMemoryBytes(), Accelerators: cloneStrings(h.GetAccelerators()),
		BoardModel: h.GetBoardModel(), KernelVersion: h.GetKernelVersion(), OSRelease: h.GetOsRelease(),
		FirmwareVersion: h.GetFirmwareVersion(),
	}
}

func backendsOf(bs []*proto.Backend) []store.Backend {
	out := make([]store.Backend, 0, len(bs))
	for _, b := range bs {
		out = append(out, store.Backend{Name: b.GetName(), Version: b.GetVersion(), Available: b.GetAvailable(), Reason: b.GetReason(), Formats: cloneStrings(b.GetFormats())})
	}
	return out
}

func modelsOf(ms []*proto.InstalledModel) []store.InstalledModel {
	out := make([]store.InstalledModel, 0, len(ms))
	for _, m := range ms {
		out = append(out, store.InstalledModel{
			Name: m.GetName(), Version: m.GetVersion(), Format: m.GetFormat(), Backend: m.GetBackend(),
			SHA256: m.GetSha256(), SizeBytes: m.GetSizeBytes(), Active: m.GetActive(), Slot: m.GetSlot(),
		})
	}
	return out
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}
