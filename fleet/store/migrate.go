package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// migration moves the database from schema version N-1 to N, where N is its
// position in migrations plus one. Migrations run in one write transaction
// each, so a crash leaves the file at the last completed version.
type migration struct {
	name string
	up   func(tx *bolt.Tx) error
}

// migrations is append-only: never edit or reorder an entry that has shipped.
var migrations = []migration{
	{"v1: devices, telemetry history, counters", func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketDevices, bucketTelemetry, bucketHistoryLen, bucketCounters} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}},
}

// SchemaVersion is the schema this build writes.
func SchemaVersion() int { return len(migrations) }

func (s *Store) migrate(ms []migration) error {
	for {
		var done bool
		err := s.db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			v := schemaOf(meta)
			switch {
			case v > len(ms):
				return fmt.Errorf("%w: file has schema %d, this build knows up to %d; use a newer edgefleet-server", ErrSchemaTooNew, v, len(ms))
			case v == len(ms):
				done = true
				return nil
			}
			m := ms[v]
			if err := m.up(tx); err != nil {
				return fmt.Errorf("migration %d (%s): %w", v+1, m.name, err)
			}
			s.log.Info("migrated store schema", "version", v+1, "migration", m.name)
			return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, uint64(v+1)))
		})
		if err != nil || done {
			return err
		}
	}
}

func schemaOf(meta *bolt.Bucket) int {
	v := meta.Get(keySchema)
	if len(v) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(v))
}
