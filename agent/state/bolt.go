package state

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
)

// FileName is the state file inside the agent's state directory.
const FileName = "agent.db"

// schemaVersion is the layout of the file. Bump it with a migration in
// OpenBolt when a bucket or key changes meaning.
const schemaVersion = 1

// lockTimeout is how long OpenBolt waits for another process to release
// the file: long enough to ride out a restart, short enough that a second
// agent on the same directory fails fast with ErrLocked.
const lockTimeout = 2 * time.Second

var (
	bucketMeta   = []byte("meta")
	bucketQueue  = []byte("queue")
	bucketModels = []byte("models")

	keySchema  = []byte("schema")
	keyID      = []byte("device_id")
	keySession = []byte("session")
	keySeq     = []byte("telemetry_seq")
	keyDropped = []byte("windows_dropped")
	keyQCount  = []byte("queue_count")
	keyQBytes  = []byte("queue_bytes")
)

// Bolt is the persistent store: one bbolt file, every write in one
// transaction, fsynced.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (creating it and dir when missing) the state in dir.
func OpenBolt(dir string) (*Bolt, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create agent state dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (is another edgefleet-agent running with this --state-dir?)", ErrLocked, path)
		}
		return nil, fmt.Errorf("open agent state %s: %w", path, err)
	}
	b := &Bolt{db: db}
	if err := b.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("agent state %s: %w", path, err)
	}
	return b, nil
}

func (b *Bolt) init() error {
	return b.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketQueue, bucketModels} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		switch {
		case v == nil:
			return meta.Put(keySchema, u64(schemaVersion))
		case len(v) != 8:
			return fmt.Errorf("%w: schema version is %d bytes", ErrCorrupt, len(v))
		case binary.BigEndian.Uint64(v) > schemaVersion:
			return fmt.Errorf("%w: schema version %d is newer than this agent's %d; upgrade the agent", ErrCorrupt, binary.BigEndian.Uint64(v), schemaVersion)
		}
		return nil
	})
}

// Close closes the file.
func (b *Bolt) Close() error { return b.db.Close() }

func u64(v uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], v)
	return k[:]
}

func getU64(bk *bolt.Bucket, key []byte) (uint64, error) {
	v := bk.Get(key)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: %s is %d bytes, want 8", ErrCorrupt, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (b *Bolt) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.db.Update(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (b *Bolt) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.db.View(fn)
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// DeviceID returns the device id: want when it is not empty (and stores
// it), else the stored one, else a new one that it stores.
func (b *Bolt) DeviceID(ctx context.Context, want string) (string, error) {
	var id string
	err := b.update(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		switch cur := string(meta.Get(keyID)); {
		case want != "":
			id = want
		case cur != "":
			id = cur
			if err := proto.ValidateDeviceID(id); err != nil {
				return fmt.Errorf("%w: stored device id: %v", ErrCorrupt, err)
			}
			return nil
		default:
			id = NewDeviceID()
		}
		return meta.Put(keyID, []byte(id))
	})
	return id, err
}

func (b *Bolt) incr(ctx context.Context, key []byte) (uint64, error) {
	var n uint64
	err := b.update(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v, err := getU64(meta, key)
		if err != nil {
			return err
		}
		n = v + 1
		return meta.Put(key, u64(n))
	})
	return n, err
}

// NextSession increments and returns the session counter.
func (b *Bolt) NextSession(ctx context.Context) (uint64, error) { return b.incr(ctx, keySession) }

// NextTelemetrySeq increments and returns the telemetry sequence.
func (b *Bolt) NextTelemetrySeq(ctx context.Context) (uint64, error) { return b.incr(ctx, keySeq) }

// Models returns the installed models.
func (b *Bolt) Models(ctx context.Context) ([]Model, error) {
	var out []Model
	err := b.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModels).ForEach(func(k, v []byte) error {
			var im proto.InstalledModel
			if err := protobuf.Unmarshal(v, &im); err != nil {
				return fmt.Errorf("%w: installed model %q: %v", ErrCorrupt, k, err)
			}
			out = append(out, Model{
				Name: im.GetName(), Version: im.GetVersion(), Format: im.GetFormat(), Backend: im.GetBackend(),
				SHA256: im.GetSha256(), SizeBytes: im.GetSizeBytes(), Active: im.GetActive(), Slot: im.GetSlot(),
			})
			return nil
		})
	})
	return out, err
}

// SetModels replaces the installed models.
func (b *Bolt) SetModels(ctx context.Context, models []Model) error {
	if len(models) > MaxModels {
		return fmt.Errorf("%w: %d installed models, limit %d", ErrTooMany, len(models), MaxModels)
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketModels); err != nil {
			return err
		}
		bk, err := tx.CreateBucket(bucketModels)
		if err != nil {
			return err
		}
		for i, m := range models {
			v, err := proto.Encode(&proto.InstalledModel{
				Name: m.Name, Version: m.Version, Format: m.Format, Backend: m.Backend,
				Sha256: m.SHA256, SizeBytes: m.SizeBytes, Active: m.Active, Slot: m.Slot,
			})
			if err != nil {
				return err
			}
			// The index keeps the caller's order; name and version may
			// repeat across slots.
			if err := bk.Put(u64(uint64(i)), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// AppendWindow implements telemetry.QueueStore.
func (b *Bolt) AppendWindow(ctx context.Context, seq uint64, payload []byte, maxCount int, maxBytes int64) (int, error) {
	dropped := 0
	err := b.update(ctx, func(tx *bolt.Tx) error {
		meta, q := tx.Bucket(bucketMeta), tx.Bucket(bucketQueue)
		count, err := getU64(meta, keyQCount)
		if err != nil {
			return err
		}
		size, err := getU64(meta, keyQBytes)
		if err != nil {
			return err
		}
		c := q.Cursor()
		if k, _ := c.Last(); k != nil && binary.BigEndian.Uint64(k) >= seq {
			return fmt.Errorf("%w: %d after %d", ErrSeqOrder, seq, binary.BigEndian.Uint64(k))
		}
		if err := q.Put(u64(seq), payload); err != nil {
			return err
		}
		// Keep "every queued seq was handed out" true even for a caller
		// that numbers windows itself.
		if cur, err := getU64(meta, keySeq); err != nil {
			return err
		} else if cur < seq {
			if err := meta.Put(keySeq, u64(seq)); err != nil {
				return err
			}
		}
		count++
		size += uint64(len(payload))
		for k, v := c.First(); k != nil && count > 1 && (count > uint64(maxCount) || size > uint64(maxBytes)); k, v = c.First() {
			size -= uint64(len(v))
			count--
			dropped++
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if dropped > 0 {
			d, err := getU64(meta, keyDropped)
			if err != nil {
				return err
			}
			if err := meta.Put(keyDropped, u64(d+uint64(dropped))); err != nil {
				return err
			}
		}
		if err := meta.Put(keyQCount, u64(count)); err != nil {
			return err
		}
		return meta.Put(keyQBytes, u64(size))
	})
	if err != nil {
		return 0, err
	}
	return dropped, nil
}

// FirstWindow implements telemetry.QueueStore.
func (b *Bolt) FirstWindow(ctx context.Context) (uint64, []byte, bool, error) {
	var (
		seq     uint64
		payload []byte
		ok      bool
	)
	err := b.view(ctx, func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketQueue).Cursor().First()
		if k == nil {
			return nil
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: queue key of %d bytes", ErrCorrupt, len(k))
		}
		// bbolt's values live in the memory map only while the
		// transaction is open.
		seq, payload, ok = binary.BigEndian.Uint64(k), append([]byte(nil), v...), true
		return nil
	})
	return seq, payload, ok, err
}

// RemoveWindow implements telemetry.QueueStore.
func (b *Bolt) RemoveWindow(ctx context.Context, seq uint64) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		meta, q := tx.Bucket(bucketMeta), tx.Bucket(bucketQueue)
		v := q.Get(u64(seq))
		if v == nil {
			return nil
		}
		count, err := getU64(meta, keyQCount)
		if err != nil {
			return err
		}
		size, err := getU64(meta, keyQBytes)
		if err != nil {
			return err
		}
		if count == 0 || size < uint64(len(v)) {
			return fmt.Errorf("%w: queue counters (%d windows, %d bytes) below its contents", ErrCorrupt, count, size)
		}
		n := len(v)
		if err := q.Delete(u64(seq)); err != nil {
			return err
		}
		if err := meta.Put(keyQCount, u64(count-1)); err != nil {
			return err
		}
		return meta.Put(keyQBytes, u64(size-uint64(n)))
	})
}

// QueueStats implements telemetry.QueueStore.
func (b *Bolt) QueueStats(ctx context.Context) (telemetry.QueueStats, error) {
	var s telemetry.QueueStats
	err := b.view(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		c, err := getU64(meta, keyQCount)
		if err != nil {
			return err
		}
		n, err := getU64(meta, keyQBytes)
		if err != nil {
			return err
		}
		d, err := getU64(meta, keyDropped)
		if err != nil {
			return err
		}
		s = telemetry.QueueStats{Windows: int(c), Bytes: int64(n), Dropped: d}
		return nil
	})
	return s, err
}

// Check verifies the file: bbolt's own page consistency check, and that
// the queue's counters agree with its contents and its keys are in order.
// Tests run it at cleanup; an agent may run it at start.
func (b *Bolt) Check() error {
	return b.view(context.Background(), func(tx *bolt.Tx) error {
		// Drain the channel: its producer goroutine stops only at the end.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, first)
		}
		meta := tx.Bucket(bucketMeta)
		count, err := getU64(meta, keyQCount)
		if err != nil {
			return err
		}
		size, err := getU64(meta, keyQBytes)
		if err != nil {
			return err
		}
		var n, sz uint64
		err = tx.Bucket(bucketQueue).ForEach(func(k, v []byte) error {
			if len(k) != 8 || binary.BigEndian.Uint64(k) == 0 {
				return fmt.Errorf("%w: bad queue key %x", ErrCorrupt, k)
			}
			n++
			sz += uint64(len(v))
			return nil
		})
		if err != nil {
			return err
		}
		if n != count || sz != size {
			return fmt.Errorf("%w: queue holds %d windows of %d bytes, counters say %d and %d", ErrCorrupt, n, sz, count, size)
		}
		seq, err := getU64(meta, keySeq)
		if err != nil {
			return err
		}
		if k, _ := tx.Bucket(bucketQueue).Cursor().Last(); k != nil && binary.BigEndian.Uint64(k) > seq {
			return fmt.Errorf("%w: queued window %d is past the telemetry seq %d", ErrCorrupt, binary.BigEndian.Uint64(k), seq)
		}
		return nil
	})
}

var _ telemetry.QueueStore = (*Bolt)(nil)
