package state

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
	protobuf "google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/proto"
)

// Deployment is the update engine's record of one model: what each A/B slot
// on disk holds, which one serves, and the job in progress or last
// finished. The engine writes it before each step takes effect, so after a
// crash it says what is safe to serve and where to resume.
type Deployment struct {
	Name string `json:"name"`
	// Active is the slot that serves: "a", "b", or "" for the model the
	// agent was configured with (or none, when it was not configured).
	Active string `json:"active"`
	// Slots are the verified artifacts on disk by slot; a slot being
	// rewritten is absent.
	Slots map[string]Slot `json:"slots,omitempty"`
	Job   Job             `json:"job"`
}

// Slot is a verified artifact in an A/B slot.
type Slot struct {
	Version string `json:"version"`
	Format  string `json:"format"`
	Backend string `json:"backend"`
	SHA256  string `json:"sha256"`
	Size    uint64 `json:"size"`
}

// Job is one attempt to apply a desired model version.
type Job struct {
	ID         string `json:"id"`
	Generation uint64 `json:"generation"`
	RolloutID  string `json:"rollout_id,omitempty"`
	Version    string `json:"version"`
	SHA256     string `json:"sha256,omitempty"`
	// Step and State are proto.JobProgress_Step and _State values.
	Step   int32  `json:"step"`
	State  int32  `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Target is the slot being filled; Previous the slot (or "" for the
	// configured model) that served before the switch, kept until the
	// health window is over.
	Target   string `json:"target,omitempty"`
	Previous string `json:"previous"`
	// HadPrevious is false when the model was new to the device: rolling
	// back then means serving nothing under that name.
	HadPrevious bool `json:"had_previous"`
}

// MaxDeploymentBytes bounds one encoded deployment record.
const MaxDeploymentBytes = 16 << 10

var (
	bucketDeploy = []byte("deploy")
	keyDesired   = []byte("desired")
	prefixModel  = "model/"
)

func encodeDeployment(d Deployment) ([]byte, error) {
	if d.Name == "" {
		return nil, fmt.Errorf("%w: deployment without a model name", ErrCorrupt)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxDeploymentBytes {
		return nil, fmt.Errorf("%w: deployment of %s is %d bytes, limit %d", ErrTooMany, d.Name, len(b), MaxDeploymentBytes)
	}
	return b, nil
}

func decodeDeployment(k, v []byte) (Deployment, error) {
	var d Deployment
	if err := json.Unmarshal(v, &d); err != nil {
		return d, fmt.Errorf("%w: deployment %q: %v", ErrCorrupt, k, err)
	}
	return d, nil
}

// Deployments returns the update engine's records, sorted by model name.
func (b *Bolt) Deployments(ctx context.Context) ([]Deployment, error) {
	var out []Deployment
	err := b.view(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDeploy)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		for k, v := c.Seek([]byte(prefixModel)); k != nil && len(k) > len(prefixModel) && string(k[:len(prefixModel)]) == prefixModel; k, v = c.Next() {
			d, err := decodeDeployment(k, v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// PutDeployment stores d, replacing the record of the same model. At most
// MaxModels models have records.
func (b *Bolt) PutDeployment(ctx context.Context, d Deployment) error {
	v, err := encodeDeployment(d)
	if err != nil {
		return err
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketDeploy)
		if err != nil {
			return err
		}
		key := []byte(prefixModel + d.Name)
		if bk.Get(key) == nil && bk.Stats().KeyN >= MaxModels+1 {
			return fmt.Errorf("%w: deployments for more than %d models", ErrTooMany, MaxModels)
		}
		return bk.Put(key, v)
	})
}

// Desired returns the last desired deployment the update engine accepted,
// or nil.
func (b *Bolt) Desired(ctx context.Context) (*proto.DesiredDeployment, error) {
	var d *proto.DesiredDeployment
	err := b.view(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketDeploy)
		if bk == nil {
			return nil
		}
		v := bk.Get(keyDesired)
		if v == nil {
			return nil
		}
		d = &proto.DesiredDeployment{}
		if err := protobuf.Unmarshal(v, d); err != nil {
			return fmt.Errorf("%w: desired deployment: %v", ErrCorrupt, err)
		}
		return nil
	})
	return d, err
}

// PutDesired stores the desired deployment the update engine accepted.
func (b *Bolt) PutDesired(ctx context.Context, d *proto.DesiredDeployment) error {
	v, err := proto.Encode(d)
	if err != nil {
		return err
	}
	return b.update(ctx, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketDeploy)
		if err != nil {
			return err
		}
		return bk.Put(keyDesired, v)
	})
}

// Deployments returns the update engine's records, sorted by model name.
func (m *Memory) Deployments(ctx context.Context) ([]Deployment, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make([]Deployment, 0, len(m.deploys))
	for _, v := range m.deploys {
		d, err := decodeDeployment([]byte("memory"), v)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// PutDeployment stores d, replacing the record of the same model.
func (m *Memory) PutDeployment(ctx context.Context, d Deployment) error {
	v, err := encodeDeployment(d)
	if err != nil {
		return err
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if m.deploys == nil {
		m.deploys = map[string][]byte{}
	}
	if _, ok := m.deploys[d.Name]; !ok && len(m.deploys) >= MaxModels {
		return fmt.Errorf("%w: deployments for more than %d models", ErrTooMany, MaxModels)
	}
	m.deploys[d.Name] = v
	return nil
}

// Desired returns the last desired deployment the update engine accepted,
// or nil.
func (m *Memory) Desired(ctx context.Context) (*proto.DesiredDeployment, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if m.desired == nil {
		return nil, nil
	}
	return protobuf.Clone(m.desired).(*proto.DesiredDeployment), nil
}

// PutDesired stores the desired deployment the update engine accepted.
func (m *Memory) PutDesired(ctx context.Context, d *proto.DesiredDeployment) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.desired = protobuf.Clone(d).(*proto.DesiredDeployment)
	return nil
}
