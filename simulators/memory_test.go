package simulators_test

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/proto"
	"github.com/edgefleet/edgefleet/simulators"
)

// BenchmarkDeviceMemory measures what one simulated device costs the
// simulator process: heap and goroutines per connected device, with the
// broker's share subtracted by measuring it before the devices start.
//
//	go test -run '^$' -bench DeviceMemory -benchtime 1x ./simulators
func BenchmarkDeviceMemory(b *testing.B) {
	const n = 500
	for i := 0; i < b.N; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
		srv.AddHook(new(auth.AllowHook), nil)
		srv.AddListener(listeners.NewNet("t", ln))
		var mu sync.Mutex
		hellos := map[string]bool{}
		ready := make(chan struct{})
		srv.Subscribe(proto.Subscription(proto.KindHello), 1, func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
			id, _, _ := proto.ParseTopic(pk.TopicName)
			mu.Lock()
			hellos[id] = true
			if len(hellos) == n {
				close(ready)
			}
			mu.Unlock()
		})
		go srv.Serve()

		f, err := simulators.New(simulators.Config{Devices: n, BrokerURL: "tcp://" + ln.Addr().String(), Seed: 1,
			TelemetryInterval: time.Hour, Rate: 0})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			b.Fatalf("only %d of %d devices connected", len(hellos), n)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		g1 := runtime.NumGoroutine()
		// The broker holds a client per device too; mochi's share is
		// measured in its own figures (mqtt-notes: ~28 KiB per client),
		// so this is device plus broker, an upper bound for the device.
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n/1024, "heapKiB/device+broker")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/n/1024, "stackKiB/device+broker")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/device+broker")
		cancel()
		<-done
		srv.Close()
	}
}
