package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
)

// BenchmarkDevicesFiltered lists one page of the devices with a label only
// 1 in 100 of 10,000 devices have, with and without the Hint that lets the
// store skip non-matching records undecoded. Compare the two side by side.
func BenchmarkDevicesFiltered(b *testing.B) {
	ctx := context.Background()
	s := storetest.Open(b, store.Options{})
	for i := range 10_000 {
		d := store.Device{ID: fmt.Sprintf("gw-%05d", i), Online: true, Profile: "raspberry-pi-4",
			Labels:   map[string]string{"site": fmt.Sprintf("s%d", i%100), "tier": "edge"},
			Hardware: store.Hardware{Arch: "arm64", Cores: 4, CPUFlags: []string{"asimddp"}, OSRelease: "Debian GNU/Linux 12 (bookworm)"},
			Backends: []store.Backend{{Name: "tflite", Available: true, Formats: []string{"tflite"}}},
			Models:   []store.InstalledModel{{Name: "kws", Version: "1.0.0", Active: true, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}
		if err := s.PutDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	want := map[string]string{"site": "s42"}
	match := func(d *store.Device) bool { return d.Labels["site"] == "s42" }
	for _, bc := range []struct {
		name string
		hint store.Hint
	}{{"NoHint", store.Hint{}}, {"Hint", store.Hint{Labels: want}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				page, _, err := s.Devices(ctx, "", 100, bc.hint, match)
				if err != nil || len(page) != 100 {
					b.Fatal(len(page), err)
				}
			}
		})
	}
}
