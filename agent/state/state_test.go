package state_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/state/statetest"
)

func TestMemory(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Store { return state.NewMemory() }, nil)
}

func TestBolt(t *testing.T) {
	dirs := map[statetest.Store]string{}
	statetest.Run(t, func(t *testing.T) statetest.Store {
		dir := t.TempDir()
		s := statetest.OpenBolt(t, dir)
		dirs[s] = dir
		return s
	}, func(t *testing.T, s statetest.Store) statetest.Store {
		dir := dirs[s]
		if err := s.(*state.Bolt).Check(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		n := statetest.OpenBolt(t, dir)
		dirs[n] = dir
		return n
	})
}

func TestBoltLock(t *testing.T) {
	dir := t.TempDir()
	statetest.OpenBolt(t, dir)
	_, err := state.OpenBolt(dir)
	if !errors.Is(err, state.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestBoltRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, state.FileName), []byte("not a bbolt file at all, really not"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := state.OpenBolt(dir); err == nil {
		t.Fatal("opened a garbage file")
	}
}

func TestMemoryQueueStaysCompact(t *testing.T) {
	m := state.NewMemory()
	ctx := context.Background()
	for seq := uint64(1); seq <= 10_000; seq++ {
		if _, err := m.AppendWindow(ctx, seq, []byte("x"), 8, 1<<20); err != nil {
			t.Fatal(err)
		}
		if seq%2 == 0 {
			s, _, _, _ := m.FirstWindow(ctx)
			m.RemoveWindow(ctx, s)
		}
	}
	st, _ := m.QueueStats(ctx)
	if st.Windows != 7 || st.Bytes != 7 {
		t.Fatalf("%+v", st)
	}
}

func TestBoltRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	b, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	db, err := bolt.Open(filepath.Join(dir, state.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, 0, 0, 0, 0, 2})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.OpenBolt(dir); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "upgrade the agent") {
		t.Fatalf("newer schema: %v", err)
	}
}

func TestBoltCheckFindsCounterDrift(t *testing.T) {
	dir := t.TempDir()
	b, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.AppendWindow(ctx, 1, []byte("abc"), 10, 1<<20); err != nil {
		t.Fatal(err)
	}
	b.Close()
	db, err := bolt.Open(filepath.Join(dir, state.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("queue")).Delete([]byte{0, 0, 0, 0, 0, 0, 0, 1}) })
	db.Close()
	b, err = state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Check(); !errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("Check after tampering: %v", err)
	}
}

// BenchmarkQueueRoundTrip is one window's life in the queue: append (with
// the bound check), peek, remove. Bolt fsyncs twice per window.
func BenchmarkQueueRoundTrip(b *testing.B) {
	payload := make([]byte, 700) // a window with one model's histogram
	for _, s := range []struct {
		name string
		open func(b *testing.B) statetest.Store
	}{
		{"memory", func(*testing.B) statetest.Store { return state.NewMemory() }},
		{"bolt", func(b *testing.B) statetest.Store { return statetest.OpenBolt(b, "") }},
	} {
		b.Run(s.name, func(b *testing.B) {
			st := s.open(b)
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				seq := uint64(i + 1)
				if _, err := st.AppendWindow(ctx, seq, payload, 1000, 4<<20); err != nil {
					b.Fatal(err)
				}
				got, _, _, err := st.FirstWindow(ctx)
				if err != nil || got != seq {
					b.Fatal(got, err)
				}
				if err := st.RemoveWindow(ctx, seq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
