package enroll_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/proto"
)

// FuzzEnrollBody feeds the device-facing endpoints arbitrary bodies: they
// must answer with a client error or a decision, never panic or 500.
func FuzzEnrollBody(f *testing.F) {
	for _, s := range []string{
		`{"device_id":"gw-1","token":"abc.def"}`,
		`{"device_id":"gw-1","request_key":"0123456789abcdef0"}`,
		`{"device_id":"","token":""}`,
		`{"clientid":"gw-1","username":"gw-1","password":"x"}`,
		`{"clientid":"gw-1","username":"gw-1","topic":"#","action":"subscribe"}`,
		`[]`, `null`, `{`, "\x00",
	} {
		f.Add(s)
	}
	e, _ := open(f)
	mux := http.NewServeMux()
	enroll.NewHandler(e, enroll.HTTPOptions{BrokerURL: "tcp://127.0.0.1:1883"}).Register(mux)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{proto.EnrollPath, "/api/v1/mqtt/auth", "/api/v1/mqtt/acl"} {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			if rec.Code >= 500 {
				t.Fatalf("%s %q: %d %s", path, body, rec.Code, rec.Body)
			}
		}
	})
}

// FuzzTopicAllowed: whatever the topic, a device is allowed only its own
// exact topics, in the right direction.
func FuzzTopicAllowed(f *testing.F) {
	for _, s := range []string{"edgefleet/v1/devices/gw-1/telemetry", "edgefleet/v1/devices/gw-1/desired", "#", "$SYS/#",
		"edgefleet/v1/devices/+/desired", "edgefleet/v1/devices/gw-1/#", "edgefleet/v1/devices/gw-2/hello"} {
		f.Add("gw-1", s, true)
		f.Add("gw-1", s, false)
	}
	f.Fuzz(func(t *testing.T, id, topic string, write bool) {
		if !enroll.TopicAllowed(id, topic, write) {
			return
		}
		for _, k := range []proto.Kind{proto.KindHello, proto.KindStatus, proto.KindTelemetry, proto.KindJobs, proto.KindAck, proto.KindDesired, proto.KindCommand} {
			if topic == proto.Topic(id, k) {
				if k.FromDevice() != write {
					t.Fatalf("%q may %s %q", id, map[bool]string{true: "write", false: "read"}[write], topic)
				}
				return
			}
		}
		t.Fatalf("%q allowed on %q, which is not one of its own topics", id, topic)
	})
}
