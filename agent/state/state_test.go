package state_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

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
