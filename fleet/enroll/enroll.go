// Package enroll decides which devices belong to the fleet and proves it
// when they connect. An operator creates enrolment tokens (scoped to
// labels or a group, with an expiry and a use count); a gateway trades one
// for its own credentials, a per-device secret that the broker checks at
// every connect. Devices that show up without a token wait as pending
// until an operator accepts or rejects them (Mender's model), and an
// operator may pre-authorise a device id and hand its credentials over
// out of band. Rejecting or revoking a device cuts it off at once through
// the callbacks registered with OnCutOff.
//
// Secrets are 256-bit random values, so the store keeps only their SHA-256
// (a slow hash buys nothing against a value nobody can guess) plus the
// PBKDF2 form Mosquitto's password file wants, for external brokers.
package enroll

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/proto"
)

// Defaults and bounds of Options and TokenSpec.
const (
	DefaultMaxTokens  = 10_000
	DefaultMaxDevices = 1_000_000
	// DefaultMaxPending bounds devices waiting for acceptance: anyone who
	// can reach the endpoint can ask, so the queue must not grow without
	// bound.
	DefaultMaxPending = 10_000
	// DefaultTokenTTL is a token's lifetime when TokenSpec.TTL is zero.
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds a token's lifetime: a token is a bearer secret.
	MaxTokenTTL = 365 * 24 * time.Hour
	// MaxLabels and MaxLabelBytes bound a token's labels.
	MaxLabels     = 32
	MaxLabelBytes = 256
)

// The states of a device.
const (
	StatePending  = "pending"  // asked to join without a token; awaits an operator
	StateAccepted = "accepted" // may connect with its credentials
	StateRejected = "rejected" // an operator said no; may be accepted later
	StateRevoked  = "revoked"  // cut off for good; Remove it to let the id enrol again
)

// mosquittoIterations is the PBKDF2 work factor mosquitto_passwd uses.
const mosquittoIterations = 101

var (
	bucketRoot    = []byte("enroll")
	bucketTokens  = []byte("tokens")
	bucketDevices = []byte("devices")
	// Counts kept beside the buckets, so limits are checked in constant
	// time: the pending count guards an endpoint anyone can call.
	keyDevices = []byte("count_devices")
	keyPending = []byte("count_pending")
)

// Options configure Open.
type Options struct {
	// DB is the bbolt database the enrolment records live in, in their own
	// bucket (the fleet store shares its file through store.DB). Required.
	DB *bolt.DB
	// MaxTokens, MaxDevices and MaxPending bound the records; zero means
	// the Default* values.
	MaxTokens, MaxDevices, MaxPending int
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Enroll is the fleet's enrolment authority. Its methods are safe for
// concurrent use.
type Enroll struct {
	db   *bolt.DB
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	cutOff  []func(deviceID string)
	changed []func()
}

// Open creates the buckets if needed.
func Open(opts Options) (*Enroll, error) {
	if opts.DB == nil {
		return nil, errors.New("enroll: Options.DB is required")
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = DefaultMaxTokens
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = DefaultMaxDevices
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	err := opts.DB.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		if _, err := root.CreateBucketIfNotExists(bucketTokens); err != nil {
			return err
		}
		_, err = root.CreateBucketIfNotExists(bucketDevices)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("enroll: create buckets: %w", err)
	}
	return &Enroll{db: opts.DB, opts: opts, log: opts.Logger}, nil
}

// OnCutOff registers fn to be called with the id of every device that is
// rejected, revoked or removed, after the change is stored; the broker
// uses it to disconnect the device at once. fn must not block.
func (e *Enroll) OnCutOff(fn func(deviceID string)) {
	e.mu.Lock()
	e.cutOff = append(e.cutOff, fn)
	e.mu.Unlock()
}

// OnChange registers fn to be called after any change to the devices
// whose credentials are valid (enrolled, accepted, rejected, revoked,
// removed); the generated Mosquitto password file follows it. fn runs in
// the caller's goroutine and must not block for long.
func (e *Enroll) OnChange(fn func()) {
	e.mu.Lock()
	e.changed = append(e.changed, fn)
	e.mu.Unlock()
}

func (e *Enroll) notifyChange() {
	e.mu.Lock()
	fns := append([]func(){}, e.changed...)
	e.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (e *Enroll) notifyCutOff(id string) {
	e.mu.Lock()
	fns := append([]func(string){}, e.cutOff...)
	e.mu.Unlock()
	for _, fn := range fns {
		fn(id)
	}
}

// Secret is a credential. It never appears in logs.
type Secret string

// LogValue redacts the secret.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// TokenSpec describes a new enrolment token.
type TokenSpec struct {
	// Labels are given to every device enrolled with the token.
	Labels map[string]string `json:"labels,omitempty"`
	// Group, when set, is given to devices as the label "group".
	Group string `json:"group,omitempty"`
	// TTL is how long the token is valid; DefaultTokenTTL when zero, at
	// most MaxTokenTTL.
	TTL time.Duration `json:"ttl,omitempty"`
	// MaxUses is how many devices may enrol with it; 1 when zero.
	MaxUses int `json:"max_uses,omitempty"`
}

// Token is an enrolment token as operators see it; its secret is shown
// once, by CreateToken.
type Token struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	Group     string            `json:"group,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	MaxUses   int               `json:"max_uses"`
	Uses      int               `json:"uses"`
	Revoked   bool              `json:"revoked,omitempty"`
}

type tokenRecord struct {
	Token
	Hash []byte `json:"hash"`
}

// Device is a device's enrolment record as operators see it.
type Device struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	Labels    map[string]string `json:"labels,omitempty"`
	TokenID   string            `json:"token_id,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

type deviceRecord struct {
	Device
	SecretHash  []byte `json:"secret_hash,omitempty"`
	RequestHash []byte `json:"request_hash,omitempty"`
	// Mosquitto is the secret in mosquitto_passwd's PBKDF2 form.
	Mosquitto string `json:"mosquitto,omitempty"`
}

// Credentials are what a device receives: its id and secret (the MQTT
// username and password) and the labels its token gave it.
type Credentials struct {
	DeviceID string            `json:"device_id"`
	Secret   Secret            `json:"secret"`
	Labels   map[string]string `json:"labels,omitempty"`
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mosquittoHash is the secret as mosquitto_passwd writes it:
// $7$iterations$salt$PBKDF2-SHA512, base64.
func mosquittoHash(secret string) string {
	salt := make([]byte, 12)
	rand.Read(salt)
	key, err := pbkdf2.Key(sha512.New, secret, salt, mosquittoIterations, 64)
	if err != nil {
		panic(err) // only for parameters outside FIPS bounds, which these are not
	}
	return fmt.Sprintf("$7$%d$%s$%s", mosquittoIterations, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key))
}

func checkLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, more than %d", ErrInvalid, len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelBytes || len(v) > MaxLabelBytes {
			return fmt.Errorf("%w: label %q=%q: keys must be 1..%d bytes and values at most %d", ErrInvalid, k, v, MaxLabelBytes, MaxLabelBytes)
		}
	}
	return nil
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func buckets(tx *bolt.Tx) (tokens, devices *bolt.Bucket) {
	root := tx.Bucket(bucketRoot)
	return root.Bucket(bucketTokens), root.Bucket(bucketDevices)
}

func count(tx *bolt.Tx, key []byte) int {
	v := tx.Bucket(bucketRoot).Get(key)
	if len(v) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(v))
}

func adjust(tx *bolt.Tx, key []byte, delta int) error {
	n := max(count(tx, key)+delta, 0)
	return tx.Bucket(bucketRoot).Put(key, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// putDevice stores d and keeps the counts; prev is the record's state
// before, "" when it is new.
func putDevice(tx *bolt.Tx, prev string, d deviceRecord) error {
	if prev == "" {
		if err := adjust(tx, keyDevices, 1); err != nil {
			return err
		}
	}
	if was, is := prev == StatePending, d.State == StatePending; was != is {
		delta := 1
		if was {
			delta = -1
		}
		if err := adjust(tx, keyPending, delta); err != nil {
			return err
		}
	}
	_, db := buckets(tx)
	return putJSON(db, d.ID, d)
}

func deleteDevice(tx *bolt.Tx, d deviceRecord) error {
	if err := adjust(tx, keyDevices, -1); err != nil {
		return err
	}
	if d.State == StatePending {
		if err := adjust(tx, keyPending, -1); err != nil {
			return err
		}
	}
	_, db := buckets(tx)
	return db.Delete([]byte(d.ID))
}

func (e *Enroll) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.db.Update(fn)
}

func (e *Enroll) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.db.View(fn)
}

func getJSON(b *bolt.Bucket, key string, v any) (bool, error) {
	raw := b.Get([]byte(key))
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("enroll: stored record %q is corrupt: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), raw)
}

// CreateToken stores a new token and returns it with its full value,
// "ID.SECRET", which is shown only this once.
func (e *Enroll) CreateToken(ctx context.Context, spec TokenSpec) (Token, Secret, error) {
	if spec.TTL == 0 {
		spec.TTL = DefaultTokenTTL
	}
	if spec.TTL < 0 || spec.TTL > MaxTokenTTL {
		return Token{}, "", fmt.Errorf("%w: token lifetime %s is outside 0..%s", ErrInvalid, spec.TTL, MaxTokenTTL)
	}
	if spec.MaxUses == 0 {
		spec.MaxUses = 1
	}
	if spec.MaxUses < 0 || spec.MaxUses > e.opts.MaxDevices {
		return Token{}, "", fmt.Errorf("%w: use count %d is outside 1..%d", ErrInvalid, spec.MaxUses, e.opts.MaxDevices)
	}
	if err := checkLabels(spec.Labels); err != nil {
		return Token{}, "", err
	}
	labels := cloneLabels(spec.Labels)
	if spec.Group != "" {
		if len(spec.Group) > MaxLabelBytes {
			return Token{}, "", fmt.Errorf("%w: group name longer than %d bytes", ErrInvalid, MaxLabelBytes)
		}
		if labels == nil {
			labels = map[string]string{}
		}
		labels["group"] = spec.Group
	}
	idb := make([]byte, 6)
	rand.Read(idb)
	now := e.opts.Now().UTC()
	secret := randomString(32)
	rec := tokenRecord{Token: Token{ID: hex.EncodeToString(idb), Labels: labels, Group: spec.Group, CreatedAt: now,
		ExpiresAt: now.Add(spec.TTL), MaxUses: spec.MaxUses}, Hash: hash(secret)}
	err := e.update(ctx, func(tx *bolt.Tx) error {
		tb, _ := buckets(tx)
		if tb.Stats().KeyN >= e.opts.MaxTokens {
			return fmt.Errorf("%w: %d tokens exist; revoke and remove old ones", ErrLimit, e.opts.MaxTokens)
		}
		return putJSON(tb, rec.ID, rec)
	})
	if err != nil {
		return Token{}, "", err
	}
	e.log.Info("enrolment token created", "token", rec.ID, "expires", rec.ExpiresAt, "max_uses", rec.MaxUses)
	return rec.Token, Secret(rec.ID + "." + secret), nil
}

// Tokens lists every token, oldest first.
func (e *Enroll) Tokens(ctx context.Context) ([]Token, error) {
	var out []Token
	err := e.view(ctx, func(tx *bolt.Tx) error {
		tb, _ := buckets(tx)
		return tb.ForEach(func(k, v []byte) error {
			var r tokenRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("enroll: stored token %q is corrupt: %w", k, err)
			}
			out = append(out, r.Token)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// RevokeToken makes a token unusable. Devices already enrolled with it
// stay enrolled.
func (e *Enroll) RevokeToken(ctx context.Context, id string) error {
	return e.update(ctx, func(tx *bolt.Tx) error {
		tb, _ := buckets(tx)
		var r tokenRecord
		ok, err := getJSON(tb, id, &r)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: token %q", ErrNotFound, id)
		}
		r.Revoked = true
		return putJSON(tb, id, r)
	})
}

// Enrol trades a token for the credentials of deviceID. The token's use
// count goes up in the same transaction that creates the device, so a
// replayed token cannot enrol more devices than it allows. An id that is
// already enrolled is refused: a token holder must not be able to take
// over another device's identity.
func (e *Enroll) Enrol(ctx context.Context, token, deviceID string) (Credentials, error) {
	if err := proto.ValidateDeviceID(deviceID); err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	id, secret, ok := strings.Cut(token, ".")
	if !ok || id == "" || secret == "" || len(token) > 256 {
		return Credentials{}, fmt.Errorf("%w: not of the form ID.SECRET as `edgefleet enroll-token create` prints it", ErrBadToken)
	}
	devSecret := randomString(32)
	var creds Credentials
	err := e.update(ctx, func(tx *bolt.Tx) error {
		tb, db := buckets(tx)
		var t tokenRecord
		found, err := getJSON(tb, id, &t)
		if err != nil {
			return err
		}
		if !found || subtle.ConstantTimeCompare(t.Hash, hash(secret)) != 1 {
			return fmt.Errorf("%w: unknown token or wrong secret", ErrBadToken)
		}
		now := e.opts.Now().UTC()
		if t.Revoked {
			return fmt.Errorf("%w: token %s was revoked", ErrTokenUsedUp, t.ID)
		}
		if !now.Before(t.ExpiresAt) {
			return fmt.Errorf("%w: token %s expired at %s; ask the operator for a new one", ErrTokenExpired, t.ID, t.ExpiresAt.Format(time.RFC3339))
		}
		if t.Uses >= t.MaxUses {
			return fmt.Errorf("%w: token %s allowed %d enrolment(s), all used", ErrTokenUsedUp, t.ID, t.MaxUses)
		}
		var d deviceRecord
		exists, err := getJSON(db, deviceID, &d)
		if err != nil {
			return err
		}
		prev := d.State
		switch {
		case exists && d.State == StatePending:
			// A device that asked to join now brings a token: the token
			// is the operator's acceptance.
		case exists:
			return fmt.Errorf("%w: %s is %s; remove it first to enrol it again", ErrExists, deviceID, d.State)
		case count(tx, keyDevices) >= e.opts.MaxDevices:
			return fmt.Errorf("%w: %d devices", ErrLimit, e.opts.MaxDevices)
		default:
			d.CreatedAt = now
		}
		t.Uses++
		if err := putJSON(tb, id, t); err != nil {
			return err
		}
		d.ID, d.State, d.Labels, d.TokenID, d.UpdatedAt = deviceID, StateAccepted, cloneLabels(t.Labels), t.ID, now
		d.SecretHash, d.Mosquitto, d.RequestHash = hash(devSecret), mosquittoHash(devSecret), nil
		creds = Credentials{DeviceID: deviceID, Secret: Secret(devSecret), Labels: cloneLabels(t.Labels)}
		return putDevice(tx, prev, d)
	})
	if err != nil {
		return Credentials{}, err
	}
	e.log.Info("device enrolled", "device", deviceID, "token", id)
	e.notifyChange()
	return creds, nil
}

// Request is how a device without a token asks to join: the first call
// records it as pending under a request key only the device knows; later
// calls with the same key return ErrPending until an operator accepts it,
// then fresh credentials. A rejected or revoked device, or a wrong key,
// gets ErrRefused.
func (e *Enroll) Request(ctx context.Context, deviceID, requestKey string) (Credentials, error) {
	if err := proto.ValidateDeviceID(deviceID); err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(requestKey) < 16 || len(requestKey) > 256 {
		return Credentials{}, fmt.Errorf("%w: request key must be 16..256 bytes", ErrInvalid)
	}
	var (
		creds   Credentials
		pending bool
	)
	err := e.update(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		var d deviceRecord
		exists, err := getJSON(db, deviceID, &d)
		if err != nil {
			return err
		}
		now := e.opts.Now().UTC()
		if !exists {
			if n := count(tx, keyPending); n >= e.opts.MaxPending {
				return fmt.Errorf("%w: %d devices already await acceptance", ErrLimit, n)
			}
			if count(tx, keyDevices) >= e.opts.MaxDevices {
				return fmt.Errorf("%w: %d devices", ErrLimit, e.opts.MaxDevices)
			}
			d = deviceRecord{Device: Device{ID: deviceID, State: StatePending, CreatedAt: now, UpdatedAt: now}, RequestHash: hash(requestKey)}
			pending = true
			return putDevice(tx, "", d)
		}
		if d.RequestHash == nil || subtle.ConstantTimeCompare(d.RequestHash, hash(requestKey)) != 1 {
			return fmt.Errorf("%w: %s is enrolled by other means or asked with another key", ErrRefused, deviceID)
		}
		switch d.State {
		case StatePending:
			pending = true
			return nil
		case StateAccepted:
		default:
			return fmt.Errorf("%w: %s is %s", ErrRefused, deviceID, d.State)
		}
		secret := randomString(32)
		d.SecretHash, d.Mosquitto, d.UpdatedAt = hash(secret), mosquittoHash(secret), now
		creds = Credentials{DeviceID: deviceID, Secret: Secret(secret), Labels: cloneLabels(d.Labels)}
		return putDevice(tx, d.State, d)
	})
	if err != nil {
		return Credentials{}, err
	}
	if pending {
		return Credentials{}, fmt.Errorf("%w: %s; an operator runs `edgefleet devices accept %s`", ErrPending, deviceID, deviceID)
	}
	e.notifyChange()
	return creds, nil
}

// Preauthorize enrols deviceID with the given labels without a token and
// returns its credentials, for provisioning out of band (factory images,
// the simulator, tests).
func (e *Enroll) Preauthorize(ctx context.Context, deviceID string, labels map[string]string) (Credentials, error) {
	if err := proto.ValidateDeviceID(deviceID); err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := checkLabels(labels); err != nil {
		return Credentials{}, err
	}
	secret := randomString(32)
	err := e.update(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		var d deviceRecord
		exists, err := getJSON(db, deviceID, &d)
		if err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("%w: %s is %s", ErrExists, deviceID, d.State)
		}
		if count(tx, keyDevices) >= e.opts.MaxDevices {
			return fmt.Errorf("%w: %d devices", ErrLimit, e.opts.MaxDevices)
		}
		now := e.opts.Now().UTC()
		d = deviceRecord{Device: Device{ID: deviceID, State: StateAccepted, Labels: cloneLabels(labels), CreatedAt: now, UpdatedAt: now},
			SecretHash: hash(secret), Mosquitto: mosquittoHash(secret)}
		return putDevice(tx, "", d)
	})
	if err != nil {
		return Credentials{}, err
	}
	e.notifyChange()
	return Credentials{DeviceID: deviceID, Secret: Secret(secret), Labels: cloneLabels(labels)}, nil
}

// setState moves a device to state if allowed from its current one.
func (e *Enroll) setState(ctx context.Context, id, state string, from ...string) error {
	var cut bool
	err := e.update(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		var d deviceRecord
		ok, err := getJSON(db, id, &d)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		allowed := false
		for _, f := range from {
			allowed = allowed || d.State == f
		}
		if !allowed {
			return fmt.Errorf("%w: %s is %s; only a device that is %s can become %s", ErrInvalid, id, d.State, strings.Join(from, " or "), state)
		}
		cut = d.State == StateAccepted && state != StateAccepted
		prev := d.State
		d.State, d.UpdatedAt = state, e.opts.Now().UTC()
		if state != StateAccepted {
			d.SecretHash, d.Mosquitto = nil, ""
		}
		return putDevice(tx, prev, d)
	})
	if err != nil {
		return err
	}
	e.log.Info("device enrolment changed", "device", id, "state", state)
	if cut {
		e.notifyCutOff(id)
	}
	e.notifyChange()
	return nil
}

// Accept admits a pending (or rejected) device; it collects its
// credentials with its next Request.
func (e *Enroll) Accept(ctx context.Context, id string) error {
	return e.setState(ctx, id, StateAccepted, StatePending, StateRejected)
}

// Reject refuses a pending or accepted device; an accepted one is cut off.
func (e *Enroll) Reject(ctx context.Context, id string) error {
	return e.setState(ctx, id, StateRejected, StatePending, StateAccepted)
}

// Revoke cuts an accepted device off and refuses it from then on.
func (e *Enroll) Revoke(ctx context.Context, id string) error {
	return e.setState(ctx, id, StateRevoked, StateAccepted, StatePending, StateRejected)
}

// Remove forgets a device, cutting it off if it was accepted, so that its
// id may enrol again.
func (e *Enroll) Remove(ctx context.Context, id string) error {
	var cut bool
	err := e.update(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		var d deviceRecord
		ok, err := getJSON(db, id, &d)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		cut = d.State == StateAccepted
		return deleteDevice(tx, d)
	})
	if err == nil && cut {
		e.notifyCutOff(id)
	}
	if err == nil {
		e.notifyChange()
	}
	return err
}

// Device returns one device's record.
func (e *Enroll) Device(ctx context.Context, id string) (Device, error) {
	var d deviceRecord
	err := e.view(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		ok, err := getJSON(db, id, &d)
		if err == nil && !ok {
			err = fmt.Errorf("%w: device %q", ErrNotFound, id)
		}
		return err
	})
	return d.Device, err
}

// Devices lists the records in the given state ("" for all), by id.
func (e *Enroll) Devices(ctx context.Context, state string) ([]Device, error) {
	var out []Device
	err := e.eachDevice(ctx, func(d *deviceRecord) {
		if state == "" || d.State == state {
			out = append(out, d.Device)
		}
	})
	return out, err
}

func (e *Enroll) eachDevice(ctx context.Context, fn func(d *deviceRecord)) error {
	return e.view(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		return db.ForEach(func(k, v []byte) error {
			var d deviceRecord
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("enroll: stored device %q is corrupt: %w", k, err)
			}
			fn(&d)
			return nil
		})
	})
}

// Accepted returns nil when deviceID is enrolled and accepted, and an
// error wrapping ErrRefused otherwise. The broker calls it for devices
// that prove themselves with a client certificate instead of the secret.
func (e *Enroll) Accepted(ctx context.Context, deviceID string) error {
	_, err := e.accepted(ctx, deviceID)
	return err
}

// accepted returns the record of an enrolled, accepted device, or an error
// wrapping ErrRefused that says why the device is refused.
func (e *Enroll) accepted(ctx context.Context, deviceID string) (deviceRecord, error) {
	var d deviceRecord
	err := e.view(ctx, func(tx *bolt.Tx) error {
		_, db := buckets(tx)
		ok, err := getJSON(db, deviceID, &d)
		if err == nil && !ok {
			err = fmt.Errorf("%w: %q is not enrolled", ErrRefused, deviceID)
		}
		return err
	})
	if err != nil {
		return deviceRecord{}, err
	}
	if d.State != StateAccepted {
		return deviceRecord{}, fmt.Errorf("%w: %s is %s", ErrRefused, deviceID, d.State)
	}
	return d, nil
}

// Authenticate returns nil when deviceID is accepted and secret is its
// secret, and an error wrapping ErrRefused otherwise. The broker calls it
// at every connect.
func (e *Enroll) Authenticate(ctx context.Context, deviceID string, secret []byte) error {
	d, err := e.accepted(ctx, deviceID)
	if err != nil {
		return err
	}
	h := sha256.Sum256(secret)
	if d.SecretHash == nil {
		return fmt.Errorf("%w: %s has no secret", ErrRefused, deviceID)
	}
	if subtle.ConstantTimeCompare(d.SecretHash, h[:]) != 1 {
		return fmt.Errorf("%w: wrong secret for %s", ErrRefused, deviceID)
	}
	return nil
}
