// Package auth is the fleet server's access control: users with
// bcrypt-hashed passwords, the roles viewer, operator and admin, browser
// sessions with CSRF tokens, API tokens for the CLI, rate-limited logins and
// an audit log of who changed what, when and from where.
//
// Everything lives in the package's own buckets of the server's bbolt file.
// Session and token secrets are stored only as SHA-256 hashes, so a copy of
// the database does not let anyone in. Roles are read from the user record
// on every request, so demoting or deleting a user takes effect at once.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// Role is what a user may do. Higher roles include the lower ones.
type Role int

// Roles.
const (
	RoleNone Role = iota
	// RoleViewer sees every page and reads the API.
	RoleViewer
	// RoleOperator also creates and drives rollouts, groups and models.
	RoleOperator
	// RoleAdmin also manages users.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads "viewer", "operator" or "admin".
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return RoleViewer, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("%w: role %q is not viewer, operator or admin", ErrInvalid, clip(s))
}

// MarshalText implements encoding.TextMarshaler.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Role) UnmarshalText(b []byte) error {
	v, err := ParseRole(string(b))
	*r = v
	return err
}

// Limits on what users control.
const (
	MaxNameLen         = 64
	MinPasswordLen     = 8
	MaxPasswordLen     = 72 // bcrypt ignores bytes past 72; refuse rather than truncate silently
	MaxUsers           = 1000
	MaxTokensPerUser   = 50
	MaxSessionsPerUser = 20
)

// Defaults of Options.
const (
	DefaultSessionTTL  = 12 * time.Hour
	DefaultLoginBurst  = 10
	DefaultLoginRefill = 30 * time.Second
	DefaultMaxAudit    = 100_000
)

// Options configure Open.
type Options struct {
	// DB is the server's bbolt file; auth keeps its own buckets in it and
	// never closes it. Required.
	DB *bolt.DB
	// SessionTTL is how long a login lasts. Default 12 h.
	SessionTTL time.Duration
	// LoginBurst is how many login attempts one address, and one user
	// name, may make at once; one more is allowed every LoginRefill.
	LoginBurst  int
	LoginRefill time.Duration
	// BcryptCost defaults to bcrypt.DefaultCost; tests lower it.
	BcryptCost int
	// MaxAudit is how many audit entries are kept; older ones go first.
	MaxAudit int
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Auth is the access control of one server. Its methods are safe for
// concurrent use.
type Auth struct {
	db      *bolt.DB
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	ipLimit *limiter
	usLimit *limiter
	auditMu sync.Mutex
}

var (
	bucketUsers    = []byte("auth_users")
	bucketSessions = []byte("auth_sessions")
	bucketTokens   = []byte("auth_tokens")
	bucketAudit    = []byte("auth_audit")
)

// Open creates the package's buckets if needed.
func Open(opts Options) (*Auth, error) {
	if opts.DB == nil {
		return nil, fmt.Errorf("auth: %w: no database", ErrInvalid)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.LoginBurst <= 0 {
		opts.LoginBurst = DefaultLoginBurst
	}
	if opts.LoginRefill <= 0 {
		opts.LoginRefill = DefaultLoginRefill
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.MaxAudit <= 0 {
		opts.MaxAudit = DefaultMaxAudit
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := opts.DB.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketSessions, bucketTokens, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("auth: create buckets: %w", err)
	}
	return &Auth{
		db: opts.DB, opts: opts, log: log, now: now,
		ipLimit: newLimiter(opts.LoginBurst, opts.LoginRefill, 10_000),
		usLimit: newLimiter(opts.LoginBurst, opts.LoginRefill, 10_000),
	}, nil
}

// User is an account as shown to admins.
type User struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	// OneTime marks the generated first-start password, to be changed.
	OneTime bool `json:"one_time,omitempty"`
}

type userRecord struct {
	User
	Hash []byte `json:"hash"`
}

// CheckName validates a user or token name.
func CheckName(what, name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s must be 1 to %d characters", ErrInvalid, what, MaxNameLen)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-@", c)) {
			return fmt.Errorf("%w: %s %q may contain only letters, digits and . _ - @", ErrInvalid, what, clip(name))
		}
	}
	return nil
}

func checkPassword(pw string) error {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return fmt.Errorf("%w: password must be %d to %d bytes long", ErrInvalid, MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// CreateUser adds a user.
func (a *Auth) CreateUser(ctx context.Context, name, password string, role Role) error {
	return a.createUser(ctx, name, password, role, false)
}

func (a *Auth) createUser(ctx context.Context, name, password string, role Role, oneTime bool) error {
	if err := CheckName("user name", name); err != nil {
		return err
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	if role < RoleViewer || role > RoleAdmin {
		return fmt.Errorf("%w: role must be viewer, operator or admin", ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), a.opts.BcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	rec := userRecord{User: User{Name: name, Role: role, Created: a.now().UTC(), OneTime: oneTime}, Hash: hash}
	return a.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		if b.Get([]byte(name)) != nil {
			return fmt.Errorf("user %q %w", name, ErrExists)
		}
		if b.Stats().KeyN >= MaxUsers {
			return fmt.Errorf("%w: at most %d users", ErrLimit, MaxUsers)
		}
		return putJSON(b, []byte(name), rec)
	})
}

// SetPassword replaces a user's password and ends the user's sessions.
func (a *Auth) SetPassword(ctx context.Context, name, password string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), a.opts.BcryptCost)
	if err != nil {
		return fmt.Errorf("hash password: %w", err)
	}
	return a.db.Update(func(tx *bolt.Tx) error {
		rec, err := getUser(tx, name)
		if err != nil {
			return err
		}
		rec.Hash, rec.OneTime = hash, false
		if err := putJSON(tx.Bucket(bucketUsers), []byte(name), rec); err != nil {
			return err
		}
		return deleteSessionsOf(tx, name)
	})
}

// SetRole changes a user's role; it applies to the user's open sessions
// and tokens at their next request.
func (a *Auth) SetRole(ctx context.Context, name string, role Role) error {
	if role < RoleViewer || role > RoleAdmin {
		return fmt.Errorf("%w: role must be viewer, operator or admin", ErrInvalid)
	}
	return a.db.Update(func(tx *bolt.Tx) error {
		rec, err := getUser(tx, name)
		if err != nil {
			return err
		}
		rec.Role = role
		return putJSON(tx.Bucket(bucketUsers), []byte(name), rec)
	})
}

// DeleteUser removes a user with the user's sessions and API tokens.
func (a *Auth) DeleteUser(ctx context.Context, name string) error {
	return a.db.Update(func(tx *bolt.Tx) error {
		if _, err := getUser(tx, name); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsers).Delete([]byte(name)); err != nil {
			return err
		}
		if err := deleteSessionsOf(tx, name); err != nil {
			return err
		}
		b := tx.Bucket(bucketTokens)
		var keys [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var t Token
			if json.Unmarshal(v, &t) != nil || t.User == name {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Users lists every user by name.
func (a *Auth) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := a.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(_, v []byte) error {
			var rec userRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec.User)
			return nil
		})
	})
	return out, err
}

// HasUsers reports whether any user exists.
func (a *Auth) HasUsers(ctx context.Context) (bool, error) {
	var n int
	err := a.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketUsers).Stats().KeyN
		return nil
	})
	return n > 0, err
}

// Secret is a password or token shown once; it logs as "REDACTED" unless
// the caller logs its Reveal() on purpose.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// EnsureAdmin creates the user "admin" with a random one-time password
// when there is no user at all, so a first start is usable without
// `edgefleet-server init`. created is false when users exist.
func (a *Auth) EnsureAdmin(ctx context.Context) (name string, password Secret, created bool, err error) {
	has, err := a.HasUsers(ctx)
	if err != nil || has {
		return "", "", false, err
	}
	pw := randomString(15)
	if err := a.createUser(ctx, "admin", pw, RoleAdmin, true); err != nil {
		if errors.Is(err, ErrExists) {
			return "", "", false, nil
		}
		return "", "", false, err
	}
	return "admin", Secret(pw), true, nil
}

func getUser(tx *bolt.Tx, name string) (userRecord, error) {
	var rec userRecord
	v := tx.Bucket(bucketUsers).Get([]byte(name))
	if v == nil {
		return rec, fmt.Errorf("user %q: %w", clip(name), ErrNotFound)
	}
	err := json.Unmarshal(v, &rec)
	return rec, err
}

// dummyHash makes a login for an unknown user cost as much as one for a
// known user, so timing does not reveal which names exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("edgefleet-no-such-user"), bcrypt.MinCost)

// Login checks a password and opens a session. ip is the client address,
// for the rate limit and the audit log.
func (a *Auth) Login(ctx context.Context, name, password, ip string) (token Secret, id Identity, err error) {
	now := a.now()
	// A refused attempt is recorded once per run of refusals, so a flood
	// cannot turn every request into an audit write.
	if wait, first := a.ipLimit.take("ip:"+ip, now); wait > 0 {
		if first {
			a.Record(ctx, Entry{Actor: clip(name), IP: ip, Action: "login", Detail: "refused: rate limit for the address (further refusals not recorded)", Status: 429})
		}
		return "", id, &RateLimitError{RetryAfter: wait}
	}
	if wait, first := a.usLimit.take("user:"+name, now); wait > 0 {
		if first {
			a.Record(ctx, Entry{Actor: clip(name), IP: ip, Action: "login", Detail: "refused: rate limit for the user (further refusals not recorded)", Status: 429})
		}
		return "", id, &RateLimitError{RetryAfter: wait}
	}
	var rec userRecord
	found := false
	if len(name) <= MaxNameLen && len(password) <= MaxPasswordLen {
		err = a.db.View(func(tx *bolt.Tx) error {
			r, err := getUser(tx, name)
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			rec, found = r, err == nil
			return err
		})
		if err != nil {
			return "", id, fmt.Errorf("read user: %w", err)
		}
	}
	hash := dummyHash
	if found {
		hash = rec.Hash
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !found {
		a.Record(ctx, Entry{Actor: clip(name), IP: ip, Action: "login", Detail: "wrong user name or password", Status: 401})
		return "", id, ErrBadCredentials
	}
	tok := randomString(32)
	csrf := randomString(24)
	sess := sessionRecord{User: name, CSRF: csrf, Created: now.UTC(), Expires: now.Add(a.opts.SessionTTL).UTC(), IP: ip}
	err = a.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		// Drop this user's expired sessions, and the oldest if over the
		// limit, so the bucket cannot grow without bound.
		var mine []sessionRecord
		var keys [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			var s sessionRecord
			if json.Unmarshal(v, &s) != nil || now.After(s.Expires) {
				keys = append(keys, append([]byte(nil), k...))
				return nil
			}
			if s.User == name {
				s.key = append([]byte(nil), k...)
				mine = append(mine, s)
			}
			return nil
		}); err != nil {
			return err
		}
		for len(mine) >= MaxSessionsPerUser {
			oldest := 0
			for i := range mine {
				if mine[i].Created.Before(mine[oldest].Created) {
					oldest = i
				}
			}
			keys = append(keys, mine[oldest].key)
			mine = append(mine[:oldest], mine[oldest+1:]...)
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return putJSON(b, hashKey(tok), sess)
	})
	if err != nil {
		return "", id, fmt.Errorf("store session: %w", err)
	}
	a.Record(ctx, Entry{Actor: name, IP: ip, Action: "login", Status: 200})
	return Secret(tok), Identity{User: name, Role: rec.Role, Via: ViaSession, CSRF: csrf, OneTime: rec.OneTime}, nil
}

// RateLimitError is an ErrRateLimited with the time to wait.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v; try again in %s", ErrRateLimited, e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrRateLimited) hold.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

type sessionRecord struct {
	User    string    `json:"user"`
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	IP      string    `json:"ip"`
	key     []byte
}

// Logout ends the session of token.
func (a *Auth) Logout(ctx context.Context, token string) error {
	return a.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSessions).Delete(hashKey(token)) })
}

func deleteSessionsOf(tx *bolt.Tx, name string) error {
	b := tx.Bucket(bucketSessions)
	var keys [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		var s sessionRecord
		if json.Unmarshal(v, &s) != nil || s.User == name {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Ways a request was authenticated.
const (
	ViaSession = "session"
	ViaToken   = "token"
)

// Identity is who made a request.
type Identity struct {
	User string
	Role Role
	// Via is ViaSession or ViaToken.
	Via string
	// CSRF is the session's form token (sessions only).
	CSRF string
	// Token names the API token used (tokens only).
	Token string
	// OneTime is set while the user still has the generated password.
	OneTime bool
}

// Can reports whether the identity has at least role r.
func (id Identity) Can(r Role) bool { return id.Role >= r }

// Session returns the identity of a session token.
func (a *Auth) Session(ctx context.Context, token string) (Identity, error) {
	var id Identity
	if token == "" || len(token) > 128 {
		return id, ErrUnauthenticated
	}
	now := a.now()
	err := a.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(hashKey(token))
		if v == nil {
			return ErrUnauthenticated
		}
		var s sessionRecord
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decode session: %w", err)
		}
		if now.After(s.Expires) {
			return ErrUnauthenticated
		}
		u, err := getUser(tx, s.User)
		if errors.Is(err, ErrNotFound) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		id = Identity{User: s.User, Role: u.Role, Via: ViaSession, CSRF: s.CSRF, OneTime: u.OneTime}
		return nil
	})
	return id, err
}

// Token is an API token as listed; the secret is shown only at creation.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	User    string    `json:"user"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
}

// TokenPrefix starts every API token, so a leaked one is easy to grep for.
const TokenPrefix = "eft_"

// CreateToken makes an API token for user with at most the user's role.
func (a *Auth) CreateToken(ctx context.Context, user, name string, role Role) (Secret, Token, error) {
	secret := Secret(TokenPrefix + randomString(32))
	t, err := a.AddToken(ctx, user, name, secret, role)
	if err != nil {
		return "", Token{}, err
	}
	return secret, t, nil
}

// MinTokenLen is the shortest secret AddToken accepts.
const MinTokenLen = len(TokenPrefix) + 32

// AddToken stores an API token whose secret the caller chose, for
// provisioning (a demo's known token, one token shared by the servers of
// a test process). The secret must start with TokenPrefix and be at least
// MinTokenLen long.
func (a *Auth) AddToken(ctx context.Context, user, name string, secret Secret, role Role) (Token, error) {
	if err := CheckName("token name", name); err != nil {
		return Token{}, err
	}
	if role < RoleViewer || role > RoleAdmin {
		return Token{}, fmt.Errorf("%w: role must be viewer, operator or admin", ErrInvalid)
	}
	if s := secret.Reveal(); !strings.HasPrefix(s, TokenPrefix) || len(s) < MinTokenLen || len(s) > 128 {
		return Token{}, fmt.Errorf("%w: a token must start with %q and be %d to 128 characters", ErrInvalid, TokenPrefix, MinTokenLen)
	}
	key := hashKey(secret.Reveal())
	t := Token{ID: hex.EncodeToString(key[:6]), Name: name, User: user, Role: role, Created: a.now().UTC()}
	err := a.db.Update(func(tx *bolt.Tx) error {
		u, err := getUser(tx, user)
		if err != nil {
			return err
		}
		if role > u.Role {
			return fmt.Errorf("%w: a token cannot have a higher role (%s) than its user (%s)", ErrForbidden, role, u.Role)
		}
		b := tx.Bucket(bucketTokens)
		n := 0
		if err := b.ForEach(func(_, v []byte) error {
			var o Token
			if json.Unmarshal(v, &o) == nil && o.User == user {
				n++
			}
			return nil
		}); err != nil {
			return err
		}
		if n >= MaxTokensPerUser {
			return fmt.Errorf("%w: at most %d tokens per user; revoke one first", ErrLimit, MaxTokensPerUser)
		}
		if b.Get(key) != nil {
			return fmt.Errorf("token %w", ErrExists)
		}
		return putJSON(b, key, t)
	})
	if err != nil {
		return Token{}, err
	}
	return t, nil
}

// Tokens lists the tokens of user, or every token when user is "".
func (a *Auth) Tokens(ctx context.Context, user string) ([]Token, error) {
	var out []Token
	err := a.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var t Token
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			if user == "" || t.User == user {
				out = append(out, t)
			}
			return nil
		})
	})
	return out, err
}

// RevokeToken deletes the token with the given ID; with user set, only if
// it is that user's.
func (a *Auth) RevokeToken(ctx context.Context, user, id string) error {
	return a.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var t Token
			if json.Unmarshal(v, &t) != nil || t.ID != id {
				continue
			}
			if user != "" && t.User != user {
				break
			}
			return b.Delete(k)
		}
		return fmt.Errorf("token %q: %w", clip(id), ErrNotFound)
	})
}

// TokenIdentity returns the identity of an API token: the token's role,
// capped by its user's current role.
func (a *Auth) TokenIdentity(ctx context.Context, secret string) (Identity, error) {
	var id Identity
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) > 128 {
		return id, ErrUnauthenticated
	}
	err := a.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get(hashKey(secret))
		if v == nil {
			return ErrUnauthenticated
		}
		var t Token
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode token: %w", err)
		}
		u, err := getUser(tx, t.User)
		if errors.Is(err, ErrNotFound) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		id = Identity{User: t.User, Role: min(t.Role, u.Role), Via: ViaToken, Token: t.Name}
		return nil
	})
	return id, err
}

// Audit log.

// Entry is one line of the audit log.
type Entry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Role   string    `json:"role,omitempty"`
	IP     string    `json:"ip"`
	Action string    `json:"action"`
	Detail string    `json:"detail,omitempty"`
	Status int       `json:"status,omitempty"`
}

// Record appends an entry; a failure is logged, since the action it
// records has already happened.
func (a *Auth) Record(ctx context.Context, e Entry) {
	e.Time = a.now().UTC()
	e.Detail = clipN(e.Detail, 512)
	e.Actor = clip(e.Actor)
	a.auditMu.Lock()
	defer a.auditMu.Unlock()
	err := a.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		if err := putJSON(b, seqKey(seq), e); err != nil {
			return err
		}
		if seq > uint64(a.opts.MaxAudit) {
			c := b.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq-uint64(a.opts.MaxAudit); k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		a.log.Error("audit log write failed", "action", e.Action, "actor", e.Actor, "error", err)
	}
}

// Audit returns up to limit entries older than seq before (0 means the
// newest), newest first.
func (a *Auth) Audit(ctx context.Context, before uint64, limit int) ([]Entry, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	var out []Entry
	err := a.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		var k, v []byte
		if before == 0 {
			k, v = c.Last()
		} else {
			c.Seek(seqKey(before))
			k, v = c.Prev()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, buf)
}

func hashKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

// equal compares secrets in constant time.
func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func clip(s string) string { return clipN(s, MaxNameLen) }

func clipN(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// limiter is a token bucket per key: burst attempts at once, one more per
// refill. It holds at most max keys; when full it forgets keys whose
// bucket has refilled, and refuses new keys if none has, so a flood of
// addresses cannot grow it or reset anyone's budget.
type limiter struct {
	mu     sync.Mutex
	burst  float64
	refill time.Duration
	max    int
	keys   map[string]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	refused bool // the last attempt was refused
}

func newLimiter(burst int, refill time.Duration, max int) *limiter {
	return &limiter{burst: float64(burst), refill: refill, max: max, keys: map[string]*bucket{}}
}

// take spends one attempt for key and returns 0, or how long to wait and
// whether this is the first refusal since the last allowed attempt.
func (l *limiter) take(key string, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= l.max {
			for k, o := range l.keys {
				if l.level(o, now) >= l.burst {
					delete(l.keys, k)
				}
			}
			if len(l.keys) >= l.max {
				return l.refill, false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.keys[key] = b
	}
	b.tokens, b.last = l.level(b, now), now
	if b.tokens < 1 {
		first := !b.refused
		b.refused = true
		return time.Duration((1 - b.tokens) * float64(l.refill)), first
	}
	b.tokens--
	b.refused = false
	return 0, false
}

func (l *limiter) level(b *bucket, now time.Time) float64 {
	return min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.refill))
}
