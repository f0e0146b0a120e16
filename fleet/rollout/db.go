package rollout

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/proto"
)

// Buckets, all under one top-level bucket so the file can be shared.
var (
	bktRoot     = []byte("rollout")
	bktMeta     = []byte("meta")
	bktRollouts = []byte("rollouts")
	bktTargets  = []byte("targets") // rollout id 0x00 device id → Target
	bktDevices  = []byte("devices") // device id → deviceDesired
	bktGroups   = []byte("groups")
	bktAudit    = []byte("audit") // big-endian seq → AuditEntry
	keySchema   = []byte("schema")
)

// schema is the layout this build writes.
//
//   - 1 (2026-11-27): first layout.
const schema = 1

// deviceDesired is what the server wants a device to run: every model of
// its desired deployment and the generation last issued. Generations only
// grow, across rollouts.
type deviceDesired struct {
	Generation uint64         `json:"generation"`
	Rollout    string         `json:"rollout,omitempty"`
	Issued     int64          `json:"issued_unix_ms,omitempty"`
	Models     []desiredModel `json:"models,omitempty"`
}

type desiredModel struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Format    string `json:"format"`
	Backend   string `json:"backend"`
	URL       string `json:"url"`
	SHA256    string `json:"sha256"`
	SizeBytes uint64 `json:"size_bytes"`
	Manifest  []byte `json:"manifest"`
	Signature []byte `json:"signature"`
	JobID     string `json:"job_id"`
}

func desiredOf(m *proto.DesiredModel) desiredModel {
	return desiredModel{Name: m.GetName(), Version: m.GetVersion(), Format: m.GetFormat(), Backend: m.GetBackend(), URL: m.GetUrl(),
		SHA256: m.GetSha256(), SizeBytes: m.GetSizeBytes(), Manifest: m.GetManifest(), Signature: m.GetSignature(), JobID: m.GetJobId()}
}

func (m desiredModel) proto() *proto.DesiredModel {
	return &proto.DesiredModel{Name: m.Name, Version: m.Version, Format: m.Format, Backend: m.Backend, Url: m.URL,
		Sha256: m.SHA256, SizeBytes: m.SizeBytes, Manifest: m.Manifest, Signature: m.Signature, JobId: m.JobID}
}

func (d *deviceDesired) model(name string) (desiredModel, bool) {
	for _, m := range d.Models {
		if m.Name == name {
			return m, true
		}
	}
	return desiredModel{}, false
}

func (d *deviceDesired) set(m desiredModel) {
	for i := range d.Models {
		if d.Models[i].Name == m.Name {
			d.Models[i] = m
			return
		}
	}
	d.Models = append(d.Models, m)
}

func (d *deviceDesired) message(id string) *proto.DesiredDeployment {
	dd := &proto.DesiredDeployment{ProtocolVersion: proto.ProtocolVersion, DeviceId: id, Generation: d.Generation, IssuedUnixMs: d.Issued, RolloutId: d.Rollout}
	for _, m := range d.Models {
		dd.Models = append(dd.Models, m.proto())
	}
	return dd
}

func migrate(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bktRoot)
		if err != nil {
			return fmt.Errorf("create rollout bucket: %w", err)
		}
		for _, name := range [][]byte{bktMeta, bktRollouts, bktTargets, bktDevices, bktGroups, bktAudit} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create rollout bucket %s: %w", name, err)
			}
		}
		meta := root.Bucket(bktMeta)
		if v := meta.Get(keySchema); v != nil {
			if got := binary.BigEndian.Uint64(v); got > schema {
				return fmt.Errorf("rollout database has schema %d; this build knows %d (a newer server wrote it)", got, schema)
			}
			return nil
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, schema))
	})
}

func bucket(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bktRoot).Bucket(name) }

func targetKey(rollout, device string) []byte {
	k := make([]byte, 0, len(rollout)+1+len(device))
	k = append(k, rollout...)
	k = append(k, 0)
	return append(k, device...)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return b.Put(key, data)
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	// json.Unmarshal copies what it keeps, so nothing outlives the tx.
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

func putRollout(tx *bolt.Tx, r *Rollout) error {
	return putJSON(bucket(tx, bktRollouts), []byte(r.ID), r)
}

func putTarget(tx *bolt.Tx, rollout string, t *Target) error {
	return putJSON(bucket(tx, bktTargets), targetKey(rollout, t.Device), t)
}

func getDevice(tx *bolt.Tx, id string) (deviceDesired, error) {
	var d deviceDesired
	_, err := getJSON(bucket(tx, bktDevices), []byte(id), &d)
	return d, err
}

func putDevice(tx *bolt.Tx, id string, d *deviceDesired) error {
	return putJSON(bucket(tx, bktDevices), []byte(id), d)
}

func appendAudit(tx *bolt.Tx, e AuditEntry) error {
	b := bucket(tx, bktAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	return putJSON(b, binary.BigEndian.AppendUint64(nil, seq), e)
}

func loadTargets(tx *bolt.Tx, rollout string) ([]*Target, error) {
	var out []*Target
	prefix := targetKey(rollout, "")
	c := bucket(tx, bktTargets).Cursor()
	for k, v := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
		t := new(Target)
		if err := json.Unmarshal(v, t); err != nil {
			return nil, fmt.Errorf("decode target %q: %w", k, err)
		}
		out = append(out, t)
	}
	return out, nil
}
