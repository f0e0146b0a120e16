package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// The registry keeps everything under one top-level bucket so it can share
// a bbolt file with fleet/store without touching its buckets:
//
//	registry/meta     schema -> decimal schema number
//	registry/models   name -> Model (JSON)
//	registry/versions name 0x00 version -> Version (JSON)
var (
	bucketRoot     = []byte("registry")
	bucketMeta     = []byte("meta")
	bucketModels   = []byte("models")
	bucketVersions = []byte("versions")
	keySchema      = []byte("schema")
)

// migrations[i] brings the registry buckets from schema i to i+1. Append
// only; each has a test.
var migrations = []func(root *bolt.Bucket) error{
	// 1: the three buckets.
	func(root *bolt.Bucket) error {
		for _, b := range [][]byte{bucketMeta, bucketModels, bucketVersions} {
			if _, err := root.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
}

// schemaVersion is the schema this build writes.
var schemaVersion = len(migrations)

func migrate(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return fmt.Errorf("create registry bucket: %w", err)
		}
		have := 0
		if meta := root.Bucket(bucketMeta); meta != nil {
			if v := meta.Get(keySchema); v != nil {
				have, err = strconv.Atoi(string(v))
				if err != nil {
					return fmt.Errorf("registry schema number %q is corrupt: %w", v, err)
				}
			}
		}
		if have > schemaVersion {
			return fmt.Errorf("%w: the database has registry schema %d, this build knows %d; run the newer build", ErrSchemaTooNew, have, schemaVersion)
		}
		for i := have; i < schemaVersion; i++ {
			if err := migrations[i](root); err != nil {
				return fmt.Errorf("registry migration %d: %w", i+1, err)
			}
		}
		return root.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
	})
}

func buckets(tx *bolt.Tx) (models, versions *bolt.Bucket) {
	root := tx.Bucket(bucketRoot)
	return root.Bucket(bucketModels), root.Bucket(bucketVersions)
}

func versionKey(name, ver string) []byte {
	k := make([]byte, 0, len(name)+1+len(ver))
	k = append(k, name...)
	k = append(k, 0)
	return append(k, ver...)
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	// Unmarshal copies, so nothing refers to bbolt's memory after the
	// transaction ends.
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("registry record %q is corrupt: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode registry record %q: %w", key, err)
	}
	return b.Put(key, raw)
}

// loadVersions returns every stored version of name, unsorted.
func loadVersions(versions *bolt.Bucket, name string) ([]Version, error) {
	prefix := versionKey(name, "")
	var out []Version
	c := versions.Cursor()
	for k, raw := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, raw = c.Next() {
		var v Version
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("registry record %q is corrupt: %w", k, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func jsonUnmarshal(raw []byte, v any, key []byte) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("registry record %q is corrupt: %w", key, err)
	}
	return nil
}
