// Package store is the fleet server's persistent state: a bbolt file behind
// domain methods. Buckets and keys never leave this package; every value is
// copied out of its transaction before the method returns, because bbolt's
// byte slices are only valid inside it.
package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Defaults for Options.
const (
	DefaultHistory     = 1000
	DefaultMaxDevices  = 1_000_000
	DefaultLockTimeout = time.Second
	DefaultBatchDelay  = 2 * time.Millisecond
)

// Options tune a Store. Zero values mean the defaults above.
type Options struct {
	// History is how many telemetry windows are kept per device; older ones
	// are deleted as new ones arrive.
	History int
	// MaxDevices bounds how many devices can be stored, since anyone who
	// can connect to the broker can make up device ids.
	MaxDevices int
	// LockTimeout is how long Open waits for another process to release
	// the file before failing with ErrLocked.
	LockTimeout time.Duration
	// BatchDelay is how long a write waits for others to share its
	// commit (bbolt's MaxBatchDelay). bbolt's 10 ms default made a lone
	// device's QoS 1 round trip ~15 ms; see BenchmarkHandleTelemetry.
	// Default DefaultBatchDelay.
	BatchDelay time.Duration
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

// Store is the fleet's bbolt database. Its methods are safe for concurrent use.
type Store struct {
	db      *bolt.DB
	path    string
	opts    Options
	log     *slog.Logger
	devices atomic.Int64 // count of device records, kept to enforce MaxDevices cheaply
	closed  atomic.Bool
}

var (
	bucketMeta       = []byte("meta")
	bucketDevices    = []byte("devices")
	bucketTelemetry  = []byte("telemetry") // one nested bucket per device id, keyed by big-endian seq
	bucketHistoryLen = []byte("telemetry_len")
	bucketCounters   = []byte("counters")
	keySchema        = []byte("schema")
)

// Open opens (creating if needed) the database at path and migrates it to
// the current schema. A second Open of the same file, from this or another
// process, fails with ErrLocked after Options.LockTimeout.
func Open(path string, opts Options) (*Store, error) {
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = DefaultMaxDevices
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.BatchDelay <= 0 {
		opts.BatchDelay = DefaultBatchDelay
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w (is another edgefleet-server using this data dir?)", path, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.MaxBatchDelay = opts.BatchDelay
	s := &Store{db: db, path: path, opts: opts, log: log}
	if err := s.migrate(migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		s.devices.Store(int64(tx.Bucket(bucketDevices).Stats().KeyN))
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: count devices: %w", path, err)
	}
	return s, nil
}

// DB returns the bbolt handle, for components that keep their own
// top-level buckets in the same file (the registry, the rollout engine) so
// the server holds one file and one lock. They must not touch this
// package's buckets, and must not close the handle: Close does.
func (s *Store) DB() *bolt.DB { return s.db }

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// Close closes the database; it waits for running transactions to finish.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	return nil
}

// Check verifies the consistency of the whole file (bbolt's tx.Check) and
// returns the first problem found, joined with any others.
func (s *Store) Check() error {
	var errs []error
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.View(fn)
}

func (s *Store) batch(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return s.db.Batch(fn)
}

// Device returns the device with the given id, or ErrNotFound.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
	var d Device
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDevices).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("device %q: %w", id, ErrNotFound)
		}
		return decodeDevice(v, &d)
	})
	return d, err
}

// PutDevice stores d, replacing any record with the same id.
func (s *Store) PutDevice(ctx context.Context, d Device) error {
	v, err := json.Marshal(&d)
	if err != nil {
		return fmt.Errorf("encode device %q: %w", d.ID, err)
	}
	var created bool
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		created = false
		b := tx.Bucket(bucketDevices)
		if b.Get([]byte(d.ID)) == nil {
			if err := s.checkRoom(); err != nil {
				return err
			}
			created = true
		}
		return b.Put([]byte(d.ID), v)
	})
	if err == nil && created {
		s.devices.Add(1)
	}
	return err
}

func (s *Store) checkRoom() error {
	if n := s.devices.Load(); n >= int64(s.opts.MaxDevices) {
		return fmt.Errorf("%w: %d devices stored, limit %d", ErrTooManyDevices, n, s.opts.MaxDevices)
	}
	return nil
}

// Change is what UpdateDevice's function decided.
type Change struct {
	// Save stores the (modified) device. Without it nothing is written.
	Save bool
	// Window, when not nil, is appended to the device's telemetry history
	// (which is trimmed to Options.History windows).
	Window *Window
}

// UpdateDevice loads the device with the given id (a zero Device with only
// the ID set and found false when there is none), lets fn change it and
// stores the result as fn's Change says, all in one transaction. It runs in
// bbolt's Batch, so concurrent updates share a disk sync; fn may therefore
// be called more than once and must not have side effects outside d.
// It returns the device as stored (or as loaded, when nothing was saved).
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(d *Device, found bool) (Change, error)) (Device, error) {
	var out Device
	var created bool
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		created = false
		b := tx.Bucket(bucketDevices)
		var d Device
		v := b.Get([]byte(id))
		found := v != nil
		if found {
			if err := decodeDevice(v, &d); err != nil {
				return err
			}
		}
		d.ID = id
		ch, err := fn(&d, found)
		if err != nil {
			return err
		}
		d.ID = id
		out = d
		if !ch.Save {
			return nil
		}
		if !found {
			if err := s.checkRoom(); err != nil {
				return err
			}
			created = true
		}
		nv, err := json.Marshal(&d)
		if err != nil {
			return fmt.Errorf("encode device %q: %w", id, err)
		}
		if err := b.Put([]byte(id), nv); err != nil {
			return err
		}
		if ch.Window != nil {
			return s.appendWindow(tx, id, *ch.Window)
		}
		return nil
	})
	if err != nil {
		return Device{}, err
	}
	if created {
		s.devices.Add(1)
	}
	return out, nil
}

func (s *Store) appendWindow(tx *bolt.Tx, id string, w Window) error {
	tb, err := tx.Bucket(bucketTelemetry).CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return fmt.Errorf("telemetry bucket of %q: %w", id, err)
	}
	key := binary.BigEndian.AppendUint64(nil, w.Seq)
	if tb.Get(key) != nil {
		return nil
	}
	val := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(w.Payload)), uint64(w.Received.UnixMilli()))
	val = append(val, w.Payload...)
	if err := tb.Put(key, val); err != nil {
		return err
	}
	lb := tx.Bucket(bucketHistoryLen)
	n := uint64(1)
	if v := lb.Get([]byte(id)); len(v) == 8 {
		n += binary.BigEndian.Uint64(v)
	}
	// Delete the oldest windows beyond the bound. Seqs only grow, so the
	// first keys are the oldest.
	c := tb.Cursor()
	for k, _ := c.First(); k != nil && n > uint64(s.opts.History); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
		n--
	}
	return lb.Put([]byte(id), binary.BigEndian.AppendUint64(nil, n))
}

// Telemetry returns up to limit of the device's most recent telemetry
// windows, oldest first. limit <= 0 means all that are kept.
func (s *Store) Telemetry(ctx context.Context, id string, limit int) ([]Window, error) {
	var out []Window
	err := s.view(ctx, func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTelemetry).Bucket([]byte(id))
		if tb == nil {
			return nil
		}
		c := tb.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			if len(k) != 8 || len(v) < 8 {
				return fmt.Errorf("telemetry of %q: corrupt record %x", id, k)
			}
			out = append(out, Window{
				Seq:      binary.BigEndian.Uint64(k),
				Received: time.UnixMilli(int64(binary.BigEndian.Uint64(v[:8]))).UTC(),
				Payload:  bytes.Clone(v[8:]),
			})
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// Hint states conditions every device a listing returns must meet, which
// the store can test on the stored bytes before decoding a record. It only
// makes listings faster; the match function still decides.
type Hint struct {
	Profile string
	Labels  map[string]string
	// Online, when not nil, is the presence wanted.
	Online *bool
}

// needles returns byte strings every matching record must contain.
func (h Hint) needles() [][]byte {
	var out [][]byte
	kv := func(k string, v any) {
		kb, _ := json.Marshal(k)
		vb, _ := json.Marshal(v)
		out = append(out, append(append(kb, ':'), vb...))
	}
	if h.Profile != "" {
		kv("profile", h.Profile)
	}
	for k, v := range h.Labels {
		kv(k, v) // a label pair appears as "k":"v" in the labels object
	}
	if h.Online != nil {
		kv("online", *h.Online)
	}
	return out
}

// Devices returns up to limit devices with ids after `after` (in id order)
// for which match returns true (nil matches all), and the id to pass as
// `after` for the next page, empty when there is none. hint lets the store
// skip records that cannot match without decoding them.
func (s *Store) Devices(ctx context.Context, after string, limit int, hint Hint, match func(*Device) bool) ([]Device, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("devices: limit %d must be positive", limit)
	}
	var out []Device
	var next string
	needles := hint.needles()
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDevices).Cursor()
		var k, v []byte
		if after == "" {
			k, v = c.First()
		} else {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
	records:
		for ; k != nil; k, v = c.Next() {
			for _, n := range needles {
				if !bytes.Contains(v, n) {
					continue records
				}
			}
			var d Device
			if err := decodeDevice(v, &d); err != nil {
				return err
			}
			if match != nil && !match(&d) {
				continue
			}
			if len(out) == limit {
				next = out[len(out)-1].ID
				return nil
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// SetAllOffline marks every device offline. The embedded broker starts with
// no connections, so whatever the file says about presence is stale.
func (s *Store) SetAllOffline(ctx context.Context) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketDevices)
		type kv struct{ k, v []byte }
		var changed []kv
		err := b.ForEach(func(k, v []byte) error {
			var d Device
			if err := decodeDevice(v, &d); err != nil {
				return err
			}
			if !d.Online {
				return nil
			}
			d.Online = false
			nv, err := json.Marshal(&d)
			if err != nil {
				return err
			}
			changed = append(changed, kv{bytes.Clone(k), nv})
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range changed {
			if err := b.Put(c.k, c.v); err != nil {
				return err
			}
		}
		n = len(changed)
		return nil
	})
	return n, err
}

// AddCounter adds delta to the named persistent counter.
func (s *Store) AddCounter(ctx context.Context, name string, delta uint64) error {
	return s.batch(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounters)
		var n uint64
		if v := b.Get([]byte(name)); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return b.Put([]byte(name), binary.BigEndian.AppendUint64(nil, n+delta))
	})
}

// Counters returns every persistent counter.
func (s *Store) Counters(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCounters).ForEach(func(k, v []byte) error {
			if len(v) == 8 {
				out[string(k)] = binary.BigEndian.Uint64(v)
			}
			return nil
		})
	})
	return out, err
}

func decodeDevice(v []byte, d *Device) error {
	if err := json.Unmarshal(v, d); err != nil {
		return fmt.Errorf("decode device record: %w", err)
	}
	return nil
}
