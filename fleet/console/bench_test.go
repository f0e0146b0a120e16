package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/edgefleet/edgefleet/proto"
)

// BenchmarkPages renders the console's device pages against an inventory
// of 10,000 devices: the first page of the list, a page deep into it
// (cursor pagination reads only its own page, so depth should not cost
// more), a filtered page, a search by part of an id, and the overview,
// which counts every device: cached while the inventory does not change,
// recounted after a change.
func BenchmarkPages(b *testing.B) {
	const n = 10_000
	inv := newInventory(b)
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("gw-%05d", i)
		h := &proto.Hello{ProtocolVersion: 1, DeviceId: id, Session: 1, FirmwareProfile: []string{"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano"}[i%3],
			Labels: map[string]string{"site": fmt.Sprintf("plant-%d", i%10)},
			Models: []*proto.InstalledModel{{Name: "kws", Version: "2.0.0", Active: true}}}
		if err := inv.Handle(ctx, id, proto.Topic(id, proto.KindHello), proto.MustEncode(h)); err != nil {
			b.Fatal(err)
		}
	}
	srv, ck := serve(b, inv)
	// The cursor of a page about 9,000 devices in, by following "next".
	next := regexp.MustCompile(`href="/devices\?([^"]+)" rel="next"`)
	deep := ""
	for range 90 {
		resp := get(b, ck, srv.URL+"/devices?"+deep)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := next.FindSubmatch(body)
		if m == nil {
			b.Fatal("no next page")
		}
		deep = string(regexp.MustCompile("&amp;").ReplaceAll(m[1], []byte("&")))
	}
	for _, c := range []struct{ name, path string }{
		{"devices-first", "/devices"},
		{"devices-page90", "/devices?" + deep},
		{"devices-filtered", "/devices?profile=raspberry-pi-5&label=site%3Dplant-3"},
		{"devices-search", "/devices?q=0042"},
		{"overview", "/"},
		{"overview-after-change", "/"},
	} {
		b.Run(c.name, func(b *testing.B) {
			session := uint64(1)
			for b.Loop() {
				if c.name == "overview-after-change" {
					// A device reconnects before every page, so the counts
					// are recomputed each time (what a busy fleet costs).
					session++
					h := &proto.Hello{ProtocolVersion: 1, DeviceId: "gw-00000", Session: session, FirmwareProfile: "raspberry-pi-4",
						Models: []*proto.InstalledModel{{Name: "kws", Version: "2.0.0", Active: true}}}
					if err := inv.Handle(ctx, "gw-00000", proto.Topic("gw-00000", proto.KindHello), proto.MustEncode(h)); err != nil {
						b.Fatal(err)
					}
				}
				resp := get(b, ck, srv.URL+c.path)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", c.path, resp.StatusCode)
				}
			}
		})
	}
}
