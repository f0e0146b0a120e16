package store

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Each numbered migration has a test here: it starts from a file at the
// previous version and checks what the migration must leave behind.

func TestMigrationV1FromEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := schemaOf(tx.Bucket(bucketMeta)); v != 1 {
			t.Errorf("schema = %d, want 1", v)
		}
		for _, b := range [][]byte{bucketDevices, bucketTelemetry, bucketHistoryLen, bucketCounters} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing after v1", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(context.Background(), Device{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrationsAreIdempotentAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	for range 2 {
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, binary.BigEndian.AppendUint64(nil, uint64(SchemaVersion()+1)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open error = %v, want ErrSchemaTooNew", err)
	}
}

func TestFailedMigrationLeavesPreviousVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	boom := errors.New("boom")
	ms := append(append([]migration(nil), migrations...), migration{"v2: fails", func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("half-done")); err != nil {
			return err
		}
		return boom
	}})
	if err := s.migrate(ms); !errors.Is(err, boom) {
		t.Fatalf("migrate error = %v, want boom", err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := schemaOf(tx.Bucket(bucketMeta)); v != 1 {
			t.Errorf("schema after failed v2 = %d, want 1", v)
		}
		if tx.Bucket([]byte("half-done")) != nil {
			t.Error("failed migration left its changes behind")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
