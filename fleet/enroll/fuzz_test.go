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
