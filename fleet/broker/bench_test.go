package broker_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/fleet/broker"
	"github.com/edgefleet/edgefleet/proto"
)

// BenchmarkEmbeddedTelemetry measures a device's QoS 1 telemetry publish
// through the embedded broker until its PUBACK, which the broker sends
// only after the ingest hook committed the window to bbolt. Clients=1 is
// one device's drain rate after an outage; Clients=32 is a busy fleet.
func BenchmarkEmbeddedTelemetry(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("Clients=%d", clients), func(b *testing.B) {
			br, _ := newEmbedded(b, broker.Limits{})
			cs := make([]paho.Client, clients)
			for i := range cs {
				id := fmt.Sprintf("gw-%03d", i)
				c := paho.NewClient(paho.NewClientOptions().AddBroker(br.URL()).SetClientID(id).SetAutoReconnect(false).SetProtocolVersion(4))
				if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
					b.Fatal(tok.Error())
				}
				defer c.Disconnect(50)
				cs[i] = c
			}
			var seq atomic.Uint64
			var next atomic.Int64
			b.SetParallelism((clients + 1) / 2) // GOMAXPROCS is 2 here
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)-1) % clients
				id := fmt.Sprintf("gw-%03d", i)
				topic := proto.Topic(id, proto.KindTelemetry)
				for pb.Next() {
					p := proto.MustEncode(&proto.TelemetryWindow{ProtocolVersion: 1, DeviceId: id, Seq: seq.Add(1), StartUnixMs: 1, EndUnixMs: 2})
					tok := cs[i].Publish(topic, 1, false, p)
					if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
						b.Error("no PUBACK", tok.Error())
						return
					}
				}
			})
		})
	}
}
