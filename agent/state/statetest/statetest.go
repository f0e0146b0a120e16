// Package statetest is the conformance suite every agent state store must
// pass, and a helper that opens a bbolt store whose integrity is checked
// when the test ends.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/agent/state"
	"github.com/edgefleet/edgefleet/agent/telemetry"
	"github.com/edgefleet/edgefleet/proto"
)

// Store is what the suite exercises: the domain methods both stores have.
type Store interface {
	telemetry.QueueStore
	DeviceID(ctx context.Context, want string) (string, error)
	NextSession(ctx context.Context) (uint64, error)
	NextTelemetrySeq(ctx context.Context) (uint64, error)
	Models(ctx context.Context) ([]state.Model, error)
	SetModels(ctx context.Context, models []state.Model) error
	Close() error
}

// OpenBolt opens a bbolt store in dir (a new temporary directory when dir
// is empty), closes it at cleanup and fails the test if the file is then
// inconsistent.
func OpenBolt(t testing.TB, dir string) *state.Bolt {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	b, err := state.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Check(); err != nil && !errors.Is(err, state.ErrClosed) {
			t.Errorf("agent state integrity: %v", err)
		}
		b.Close()
	})
	return b
}

// Run runs the suite. open returns a fresh, empty store; reopen, when not
// nil, closes a store and opens the same state again, to prove persistence.
func Run(t *testing.T, open func(t *testing.T) Store, reopen func(t *testing.T, s Store) Store) {
	ctx := context.Background()
	t.Run("DeviceID", func(t *testing.T) {
		s := open(t)
		id, err := s.DeviceID(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := proto.ValidateDeviceID(id); err != nil {
			t.Fatalf("generated id: %v", err)
		}
		again, _ := s.DeviceID(ctx, "")
		if again != id {
			t.Fatalf("second call gave %q, first %q", again, id)
		}
		if reopen != nil {
			s = reopen(t, s)
			if got, _ := s.DeviceID(ctx, ""); got != id {
				t.Fatalf("after reopen id is %q, was %q", got, id)
			}
		}
		if got, _ := s.DeviceID(ctx, "gw-7"); got != "gw-7" {
			t.Fatalf("configured id gave %q", got)
		}
		if got, _ := s.DeviceID(ctx, ""); got != "gw-7" {
			t.Fatalf("configured id not kept: %q", got)
		}
	})
	t.Run("Counters", func(t *testing.T) {
		s := open(t)
		for i := uint64(1); i <= 3; i++ {
			if n, err := s.NextSession(ctx); err != nil || n != i {
				t.Fatalf("session %d: %d, %v", i, n, err)
			}
		}
		if n, _ := s.NextTelemetrySeq(ctx); n != 1 {
			t.Fatalf("first seq %d", n)
		}
		if reopen != nil {
			s = reopen(t, s)
			if n, _ := s.NextSession(ctx); n != 4 {
				t.Fatalf("session after reopen %d, want 4", n)
			}
			if n, _ := s.NextTelemetrySeq(ctx); n != 2 {
				t.Fatalf("seq after reopen %d, want 2", n)
			}
		}
	})
	t.Run("Models", func(t *testing.T) {
		s := open(t)
		ms := []state.Model{
			{Name: "kws", Version: "2.0.0", Format: "tflite", Backend: "tflite", SHA256: "ab", SizeBytes: 10, Active: true, Slot: "a"},
			{Name: "kws", Version: "1.0.0", Format: "tflite", Backend: "tflite", Slot: "b"},
		}
		if err := s.SetModels(ctx, ms); err != nil {
			t.Fatal(err)
		}
		if reopen != nil {
			s = reopen(t, s)
		}
		got, err := s.Models(ctx)
		if err != nil || !reflect.DeepEqual(got, ms) {
			t.Fatalf("models %+v, %v; want %+v", got, err, ms)
		}
		if err := s.SetModels(ctx, ms[1:]); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Models(ctx); len(got) != 1 {
			t.Fatalf("replace left %d models", len(got))
		}
		if err := s.SetModels(ctx, make([]state.Model, state.MaxModels+1)); !errors.Is(err, state.ErrTooMany) {
			t.Fatalf("too many models: %v", err)
		}
	})
	t.Run("QueueFIFO", func(t *testing.T) {
		s := open(t)
		push := func(n int) {
			for i := 0; i < n; i++ {
				seq, err := s.NextTelemetrySeq(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.AppendWindow(ctx, seq, []byte(fmt.Sprintf("w%d", seq)), 100, 1<<20); err != nil {
					t.Fatal(err)
				}
			}
		}
		push(5)
		if reopen != nil {
			s = reopen(t, s)
		}
		for want := uint64(1); want <= 5; want++ {
			seq, p, ok, err := s.FirstWindow(ctx)
			if err != nil || !ok || seq != want || string(p) != fmt.Sprintf("w%d", want) {
				t.Fatalf("first = %d %q %v %v, want %d", seq, p, ok, err, want)
			}
			if err := s.RemoveWindow(ctx, seq); err != nil {
				t.Fatal(err)
			}
			if err := s.RemoveWindow(ctx, seq); err != nil {
				t.Fatalf("second remove: %v", err)
			}
		}
		if _, _, ok, _ := s.FirstWindow(ctx); ok {
			t.Fatal("queue not empty")
		}
		st, _ := s.QueueStats(ctx)
		if st != (telemetry.QueueStats{}) {
			t.Fatalf("stats of empty queue %+v", st)
		}
		if _, err := s.AppendWindow(ctx, 3, []byte("old"), 100, 1<<20); err != nil {
			// An empty queue accepts any seq above what is stored; 3 is
			// fine since nothing is stored.
			t.Fatalf("append to empty queue: %v", err)
		}
		if _, err := s.AppendWindow(ctx, 3, []byte("dup"), 100, 1<<20); !errors.Is(err, state.ErrSeqOrder) {
			t.Fatalf("duplicate seq: %v", err)
		}
	})
	t.Run("QueueBounds", func(t *testing.T) {
		s := open(t)
		total := 0
		for seq := uint64(1); seq <= 10; seq++ {
			d, err := s.AppendWindow(ctx, seq, make([]byte, 100), 4, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			total += d
		}
		st, _ := s.QueueStats(ctx)
		if total != 6 || st.Windows != 4 || st.Bytes != 400 || st.Dropped != 6 {
			t.Fatalf("count bound: dropped %d, stats %+v", total, st)
		}
		if seq, _, _, _ := s.FirstWindow(ctx); seq != 7 {
			t.Fatalf("oldest kept %d, want 7 (oldest dropped first)", seq)
		}
		// Byte bound: 350 bytes hold three windows of 100.
		d, err := s.AppendWindow(ctx, 11, make([]byte, 100), 100, 350)
		if err != nil || d != 2 {
			t.Fatalf("byte bound dropped %d, %v; want 2", d, err)
		}
		if reopen != nil {
			s = reopen(t, s)
		}
		st, _ = s.QueueStats(ctx)
		if st.Windows != 3 || st.Bytes != 300 || st.Dropped != 8 {
			t.Fatalf("after byte bound %+v", st)
		}
		// A window is kept even when it alone is over the byte bound; the
		// queue in front refuses such windows.
		if d, _ := s.AppendWindow(ctx, 12, make([]byte, 500), 100, 350); d != 3 {
			t.Fatalf("oversized window dropped %d, want 3", d)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[uint64]bool{}
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					n, err := s.NextSession(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if seen[n] {
						t.Errorf("session %d handed out twice", n)
					}
					seen[n] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(seen) != 100 {
			t.Fatalf("%d distinct sessions, want 100", len(seen))
		}
	})
	t.Run("Closed", func(t *testing.T) {
		s := open(t)
		s.Close()
		if _, err := s.NextSession(ctx); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("after close: %v", err)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		s := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.NextSession(cctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled ctx: %v", err)
		}
	})
}
