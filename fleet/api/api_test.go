package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/fleet/store/storetest"
	"github.com/edgefleet/edgefleet/proto"
)

// newAPI serves the API over a real inventory and store holding 12
// devices: gw-00..gw-11, site a/b/c by id mod 3, every fourth offline.
func newAPI(t *testing.T, ready func() error) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t, store.Options{})
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		id := fmt.Sprintf("gw-%02d", i)
		h := &proto.Hello{
			ProtocolVersion: proto.ProtocolVersion, DeviceId: id, AgentVersion: "0.1.0", Session: 1,
			FirmwareProfile: []string{"raspberry-pi-4", "generic-amd64"}[i%2],
			Labels:          map[string]string{"site": []string{"a", "b", "c"}[i%3]},
			Hardware:        &proto.Hardware{Arch: "arm64", Cores: 4},
			Backends:        []*proto.Backend{{Name: "tflite", Version: "2.16", Available: true}},
			Models:          []*proto.InstalledModel{{Name: "kws", Version: "1.0.0", Active: true}},
		}
		if err := inv.Handle(ctx, id, proto.Topic(id, proto.KindHello), proto.MustEncode(h)); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			st := &proto.Status{ProtocolVersion: 1, DeviceId: id, State: proto.Status_STATE_OFFLINE, Session: 1}
			if err := inv.Handle(ctx, id, proto.Topic(id, proto.KindStatus), proto.MustEncode(st)); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(api.New(api.Options{Inventory: inv, Ready: ready}).Handler())
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string, v any) int {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
	return resp.StatusCode
}

func TestListDevices(t *testing.T) {
	srv := newAPI(t, nil)
	cases := []struct {
		query string
		want  int
	}{
		{"", 12},
		{"?label=site=a", 4},
		{"?label=site=a&label=site=a", 4},
		{"?status=offline", 3},
		{"?status=online&profile=raspberry-pi-4", 3},
		{"?model=kws@1.0.0", 12},
		{"?model=other", 0},
	}
	for _, tc := range cases {
		var list api.DeviceList
		if code := get(t, srv, "/api/v1/devices"+tc.query, &list); code != 200 || len(list.Devices) != tc.want {
			t.Errorf("GET %s: %d with %d devices, want 200 with %d", tc.query, code, len(list.Devices), tc.want)
		}
	}
	var list api.DeviceList
	get(t, srv, "/api/v1/devices?limit=1", &list)
	d := list.Devices[0]
	if d.ID != "gw-00" || d.Status != "offline" || d.Profile != "raspberry-pi-4" || d.Labels["site"] != "a" ||
		d.LastSeen == "" || d.FirstSeen == "" || len(d.Models) != 1 || d.Hardware.Arch != "arm64" ||
		len(d.Backends) != 1 || d.AgentVersion != "0.1.0" {
		t.Errorf("device JSON = %+v", d)
	}
}

func TestPagination(t *testing.T) {
	srv := newAPI(t, nil)
	var ids []string
	path := "/api/v1/devices?limit=5&label=site=b"
	for pages := 0; ; pages++ {
		var list api.DeviceList
		if code := get(t, srv, path, &list); code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		for _, d := range list.Devices {
			ids = append(ids, d.ID)
		}
		if list.Next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		path = "/api/v1/devices?limit=5&label=site=b&cursor=" + list.Next
	}
	if fmt.Sprint(ids) != "[gw-01 gw-04 gw-07 gw-10]" {
		t.Fatalf("ids = %v", ids)
	}
	var list api.DeviceList
	get(t, srv, "/api/v1/devices?limit=2", &list)
	if len(list.Devices) != 2 || list.Next == "" {
		t.Fatalf("first page of 2: %+v", list)
	}
}

func TestBadQueryParameters(t *testing.T) {
	srv := newAPI(t, nil)
	cases := []struct{ query, param string }{
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"limit=1&limit=2", "limit"},
		{"status=asleep", "status"},
		{"label=site", "label"},
		{"label==x", "label"},
		{"label=site=a&label=site=b", "label"},
		{"cursor=garbage!", "cursor"},
		{"cursor=Zm9vYmFy", "cursor"},
		{"colour=red", "colour"},
		{"profile=" + strings.Repeat("p", 2000), "profile"},
		{"%zz", "query"},
	}
	for _, tc := range cases {
		var e api.Error
		code := get(t, srv, "/api/v1/devices?"+tc.query, &e)
		if code != http.StatusBadRequest || e.Param != tc.param || !strings.Contains(e.Error, tc.param) && tc.param != "query" {
			t.Errorf("?%.40s: %d %+v, want 400 naming %q", tc.query, code, e, tc.param)
		}
	}
}

func TestGetDevice(t *testing.T) {
	srv := newAPI(t, nil)
	var d api.Device
	if code := get(t, srv, "/api/v1/devices/gw-03", &d); code != 200 || d.ID != "gw-03" || d.Status != "online" {
		t.Fatalf("GET gw-03: %d %+v", code, d)
	}
	var e api.Error
	if code := get(t, srv, "/api/v1/devices/gw-99", &e); code != 404 || !strings.Contains(e.Error, `"gw-99"`) {
		t.Fatalf("GET gw-99: %d %+v, want 404 naming the id", code, e)
	}
	if code := get(t, srv, "/api/v1/devices/bad%20id", &e); code != 400 || e.Param != "id" {
		t.Fatalf("GET bad id: %d %+v", code, e)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	var notReady error = errors.New("broker down")
	srv := newAPI(t, func() error { return notReady })
	var body map[string]string
	if code := get(t, srv, "/healthz", &body); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	var e api.Error
	if code := get(t, srv, "/readyz", &e); code != 503 || !strings.Contains(e.Error, "broker down") {
		t.Fatalf("readyz while not ready = %d %+v", code, e)
	}
	notReady = nil
	if code := get(t, srv, "/readyz", &body); code != 200 || body["status"] != "ready" {
		t.Fatalf("readyz when ready = %d %v", code, body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	srv := newAPI(t, nil)
	resp, err := http.Post(srv.URL+"/api/v1/devices", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST devices = %d, want 405", resp.StatusCode)
	}
}

func TestStatsWithoutSource(t *testing.T) {
	srv := newAPI(t, nil)
	var e api.Error
	if code := get(t, srv, "/api/v1/stats", &e); code != 404 {
		t.Fatalf("stats without a source = %d", code)
	}
}

func TestTelemetry(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, store.Options{})
	inv, err := inventory.New(ctx, st, inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		w := &proto.TelemetryWindow{ProtocolVersion: 1, DeviceId: "gw-t", Seq: seq, StartUnixMs: 1, EndUnixMs: 2,
			Models: []*proto.ModelStats{{Name: "kws", Version: "1.0.0", Requests: 10 * seq, P95Ms: 4.5}}}
		if err := inv.Handle(ctx, "gw-t", proto.Topic("gw-t", proto.KindTelemetry), proto.MustEncode(w)); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(api.New(api.Options{Inventory: inv}).Handler())
	defer srv.Close()
	var list api.TelemetryList
	if code := get(t, srv, "/api/v1/devices/gw-t/telemetry?limit=2", &list); code != 200 || len(list.Windows) != 2 {
		t.Fatalf("telemetry: %d %+v", code, list)
	}
	last := list.Windows[1]
	var w struct {
		Seq    string `json:"seq"`
		Models []struct {
			Requests string  `json:"requests"`
			P95      float64 `json:"p95_ms"`
		} `json:"models"`
	}
	if err := json.Unmarshal(last.Window, &w); err != nil || last.Seq != 5 || w.Seq != "5" || w.Models[0].Requests != "50" || w.Models[0].P95 != 4.5 || last.Received == "" {
		t.Fatalf("last window %+v / %s: %v", last, last.Window, err)
	}
	var e api.Error
	if code := get(t, srv, "/api/v1/devices/gw-none/telemetry", &e); code != 404 || !strings.Contains(e.Error, "gw-none") {
		t.Fatalf("missing device: %d %+v", code, e)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "since=1"} {
		if code := get(t, srv, "/api/v1/devices/gw-t/telemetry?"+q, &e); code != 400 || e.Param == "" {
			t.Errorf("?%s: %d %+v", q, code, e)
		}
	}
}
