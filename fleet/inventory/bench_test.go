package inventory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

// BenchmarkHandleTelemetry measures the ingest path of a telemetry window
// (decode, validate, read-modify-write of the device, append to history,
// commit with fsync). Serial is one device publishing after another's
// PUBACK; Parallel is many devices at once, where bbolt's Batch shares one
// commit among concurrent writers.
func BenchmarkHandleTelemetry(b *testing.B) {
	for _, bc := range []struct {
		mode  string
		delay time.Duration
	}{{"Serial", 10 * time.Millisecond}, {"Serial", 2 * time.Millisecond}, {"Parallel", 10 * time.Millisecond}, {"Parallel", 2 * time.Millisecond}} {
		mode := bc.mode
		b.Run(fmt.Sprintf("%s/batchdelay=%s", bc.mode, bc.delay), func(b *testing.B) {
			st := storetest.Open(b, store.Options{History: 100, BatchDelay: bc.delay})
			inv, err := inventory.New(context.Background(), st, inventory.Options{})
			if err != nil {
				b.Fatal(err)
			}
			const devices = 256
			topics := make([]string, devices)
			ids := make([]string, devices)
			for i := range devices {
				ids[i] = fmt.Sprintf("gw-%04d", i)
				topics[i] = proto.Topic(ids[i], proto.KindTelemetry)
			}
			var seq atomic.Uint64
			msg := func(i int) []byte {
				return proto.MustEncode(&proto.TelemetryWindow{ProtocolVersion: 1, DeviceId: ids[i], Seq: seq.Add(1), StartUnixMs: 1, EndUnixMs: 2,
					Models: []*proto.ModelStats{{Name: "kws", Version: "1.0.0", Requests: 100, P50Ms: 1, P95Ms: 2, P99Ms: 3}}})
			}
			ctx := context.Background()
			b.ReportAllocs()
			if mode == "Serial" {
				i := 0
				for b.Loop() {
					d := i % devices
					if err := inv.Handle(ctx, ids[d], topics[d], msg(d)); err != nil {
						b.Fatal(err)
					}
					i++
				}
				return
			}
			b.SetParallelism(16) // devices publishing at once, per GOMAXPROCS
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				d := int(next.Add(1)) % devices
				for pb.Next() {
					if err := inv.Handle(ctx, ids[d], topics[d], msg(d)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkList measures one page of the device list over 10,000 devices:
// unfiltered (reads 100 records) and with a filter only 1 in 100 devices
// match (scans the whole bucket), the case issue 7's console must keep fast.
func BenchmarkList(b *testing.B) {
	st := storetest.Open(b, store.Options{})
	ctx := context.Background()
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10_000 {
		id := fmt.Sprintf("gw-%05d", i)
		h := &proto.Hello{ProtocolVersion: 1, DeviceId: id, Session: 1, FirmwareProfile: "raspberry-pi-4",
			Labels:   map[string]string{"site": fmt.Sprintf("s%d", i%100), "tier": "edge"},
			Hardware: &proto.Hardware{Arch: "arm64", Cores: 4, CpuFlags: []string{"asimddp"}},
			Backends: []*proto.Backend{{Name: "tflite", Available: true}},
			Models:   []*proto.InstalledModel{{Name: "kws", Version: "1.0.0", Active: true}}}
		if err := inv.ApplyHello(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		q    inventory.Query
	}{
		{"FirstPage", inventory.Query{}},
		{"Filter1in100", inventory.Query{Labels: map[string]string{"site": "s42"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := inv.List(ctx, bc.q)
				if err != nil || len(p.Devices) == 0 {
					b.Fatal(len(p.Devices), err)
				}
			}
		})
	}
}
