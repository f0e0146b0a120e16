package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
)

func TestPutAndGetDevice(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	want := store.Device{
		ID: "gw-1", FirstSeen: now, LastSeen: now, Online: true, Session: 3, Profile: "raspberry-pi-4",
		Hardware: store.Hardware{Arch: "arm64", Cores: 4, CPUFlags: []string{"asimddp"}},
		Backends: []store.Backend{{Name: "tflite", Available: true}},
		Models:   []store.InstalledModel{{Name: "kws", Version: "1.0.0", Active: true}},
		Labels:   map[string]string{"site": "plant-7"},
	}
	if err := s.PutDevice(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Device(ctx, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || !got.LastSeen.Equal(now) || got.Profile != want.Profile || got.Labels["site"] != "plant-7" ||
		got.Hardware.Cores != 4 || len(got.Models) != 1 || !got.Models[0].Active {
		t.Fatalf("Device = %+v, want %+v", got, want)
	}
	if _, err := s.Device(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Device(nope) error = %v, want ErrNotFound", err)
	}
}

func TestDevicesPagination(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	for i := range 25 {
		d := store.Device{ID: fmt.Sprintf("dev-%02d", i), Online: i%2 == 0}
		if err := s.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	online := func(d *store.Device) bool { return d.Online }
	var ids []string
	after := ""
	pages := 0
	for {
		page, next, err := s.Devices(ctx, after, 5, store.Hint{}, online)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range page {
			if !d.Online {
				t.Fatalf("filter let offline %s through", d.ID)
			}
			ids = append(ids, d.ID)
		}
		if next == "" {
			break
		}
		after = next
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	if len(ids) != 13 || pages != 3 {
		t.Fatalf("got %d devices in %d pages, want 13 in 3: %v", len(ids), pages, ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("ids out of order or repeated: %v", ids)
		}
	}
	if _, _, err := s.Devices(ctx, "", 0, store.Hint{}, nil); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func TestTelemetryHistoryIsBounded(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{History: 10})
	now := time.UnixMilli(1_800_000_000_000).UTC()
	for seq := uint64(1); seq <= 25; seq++ {
		_, err := s.UpdateDevice(ctx, "gw-1", func(d *store.Device, found bool) (store.Change, error) {
			d.LastSeq = seq
			return store.Change{Save: true, Window: &store.Window{Seq: seq, Received: now, Payload: []byte{byte(seq)}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ws, err := s.Telemetry(ctx, "gw-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 10 || ws[0].Seq != 16 || ws[9].Seq != 25 || ws[9].Payload[0] != 25 || !ws[0].Received.Equal(now) {
		t.Fatalf("history = %d windows from %d to %d, want 10 from 16 to 25", len(ws), ws[0].Seq, ws[len(ws)-1].Seq)
	}
	last3, err := s.Telemetry(ctx, "gw-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(last3) != 3 || last3[0].Seq != 23 || last3[2].Seq != 25 {
		t.Fatalf("last 3 = %+v", last3)
	}
}

func TestUpdateDeviceWithoutSaveWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	_, err := s.UpdateDevice(ctx, "gw-x", func(d *store.Device, found bool) (store.Change, error) {
		if found {
			t.Error("found a device that was never stored")
		}
		d.Online = true
		return store.Change{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, "gw-x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("device stored without Save: err = %v", err)
	}
}

func TestConcurrentUpdatesAreBatchedSafely(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for seq := uint64(1); seq <= 50; seq++ {
				_, err := s.UpdateDevice(ctx, fmt.Sprintf("gw-%d", i), func(d *store.Device, _ bool) (store.Change, error) {
					d.LastSeq = seq
					return store.Change{Save: true, Window: &store.Window{Seq: seq, Payload: []byte("x")}}, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range 8 {
		d, err := s.Device(ctx, fmt.Sprintf("gw-%d", i))
		if err != nil || d.LastSeq != 50 {
			t.Fatalf("gw-%d: LastSeq %d err %v", i, d.LastSeq, err)
		}
	}
}

func TestMaxDevices(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{MaxDevices: 2})
	for _, id := range []string{"a", "b"} {
		if err := s.PutDevice(ctx, store.Device{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutDevice(ctx, store.Device{ID: "a", Online: true}); err != nil {
		t.Fatalf("updating an existing device at the limit: %v", err)
	}
	if err := s.PutDevice(ctx, store.Device{ID: "c"}); !errors.Is(err, store.ErrTooManyDevices) {
		t.Fatalf("third device: err = %v, want ErrTooManyDevices", err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = store.Open(path, store.Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open error = %v, want ErrLocked", err)
	}
}

func TestSetAllOfflineAndCounters(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	for _, id := range []string{"a", "b", "c"} {
		if err := s.PutDevice(ctx, store.Device{ID: id, Online: id != "b"}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.SetAllOffline(ctx)
	if err != nil || n != 2 {
		t.Fatalf("SetAllOffline = %d, %v; want 2", n, err)
	}
	page, _, err := s.Devices(ctx, "", 10, store.Hint{}, func(d *store.Device) bool { return d.Online })
	if err != nil || len(page) != 0 {
		t.Fatalf("online after SetAllOffline: %v %v", page, err)
	}
	for range 3 {
		if err := s.AddCounter(ctx, "rejected_malformed", 1); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.Counters(ctx)
	if err != nil || c["rejected_malformed"] != 3 {
		t.Fatalf("counters = %v, %v", c, err)
	}
}

func TestClosedStore(t *testing.T) {
	s := storetest.Open(t, store.Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(context.Background(), "a"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Device after Close: %v", err)
	}
}

func TestDevicesHintNeverHidesAMatch(t *testing.T) {
	ctx := context.Background()
	s := storetest.Open(t, store.Options{})
	odd := `we<ird "&" \ value`
	devs := []store.Device{
		{ID: "a", Online: true, Profile: "p1", Labels: map[string]string{"site": "x", "k": odd}},
		{ID: "b", Online: false, Profile: "p1", Labels: map[string]string{"site": "x"}},
		{ID: "c", Online: true, Profile: "p2", Labels: map[string]string{"site": "y", "profile": "p1"}},
	}
	for _, d := range devs {
		if err := s.PutDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	yes, no := true, false
	cases := []struct {
		hint store.Hint
		want string
	}{
		{store.Hint{}, "[a b c]"},
		{store.Hint{Profile: "p1"}, "[a b]"},
		{store.Hint{Labels: map[string]string{"k": odd}}, "[a]"},
		{store.Hint{Labels: map[string]string{"site": "x"}, Online: &yes}, "[a]"},
		{store.Hint{Online: &no}, "[b]"},
		{store.Hint{Labels: map[string]string{"site": "z"}}, "[]"},
	}
	for _, tc := range cases {
		// The match function applies the same conditions, as the inventory's does.
		match := func(d *store.Device) bool {
			if tc.hint.Profile != "" && d.Profile != tc.hint.Profile {
				return false
			}
			if tc.hint.Online != nil && d.Online != *tc.hint.Online {
				return false
			}
			for k, v := range tc.hint.Labels {
				if d.Labels[k] != v {
					return false
				}
			}
			return true
		}
		page, _, err := s.Devices(ctx, "", 10, tc.hint, match)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range page {
			ids = append(ids, d.ID)
		}
		if got := fmt.Sprint(ids); got != tc.want && !(tc.want == "[]" && len(ids) == 0) {
			t.Errorf("hint %+v: %v, want %s", tc.hint, got, tc.want)
		}
	}
}
