package rollout

import (
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestMigrate(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "r.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Twice: the second run finds everything in place.
	for range 2 {
		if err := migrate(db); err != nil {
			t.Fatal(err)
		}
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktMeta, bktRollouts, bktTargets, bktDevices, bktGroups, bktAudit} {
			if bucket(tx, b) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		if v := bucket(tx, bktMeta).Get(keySchema); binary.BigEndian.Uint64(v) != schema {
			t.Errorf("schema %v", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A database written by a newer server is refused, not misread.
	if err := db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bktMeta).Put(keySchema, binary.BigEndian.AppendUint64(nil, schema+1))
	}); err != nil {
		t.Fatal(err)
	}
	if err := migrate(db); err == nil || !strings.Contains(err.Error(), "newer server") {
		t.Fatalf("newer schema: %v", err)
	}
}
