package enroll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/enroll"
	"github.com/edgefleet/edgefleet/proto"
)

func serve(t *testing.T) (*enroll.Enroll, *httptest.Server) {
	e, _ := open(t)
	mux := http.NewServeMux()
	enroll.NewHandler(e, enroll.HTTPOptions{BrokerURL: "tcp://127.0.0.1:1883", ServerUser: "edgefleet-server", ServerSecret: "server-pw"}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return e, srv
}

func post(t *testing.T, url string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestHTTPEnrol(t *testing.T) {
	ctx := context.Background()
	_, srv := serve(t)
	c, err := enroll.NewClient(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.CreateToken(ctx, enroll.TokenRequest{Group: "canary", TTL: "1h", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	code, body := post(t, srv.URL+proto.EnrollPath, proto.EnrollRequest{DeviceID: "gw-1", Token: tc.Secret})
	if code != http.StatusOK {
		t.Fatalf("enrol: %d %s", code, body)
	}
	var resp proto.EnrollResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Secret == "" || resp.BrokerURL != "tcp://127.0.0.1:1883" || resp.Labels["group"] != "canary" {
		t.Fatalf("enrol response %s (%v)", body, err)
	}
	// Replay beyond the use count, wrong token, bad ttl: clear refusals.
	for _, tt := range []struct {
		req  any
		path string
		code int
		msg  string
	}{
		{proto.EnrollRequest{DeviceID: "gw-2", Token: tc.Secret}, proto.EnrollPath, 401, "allowed 1 enrolment"},
		{proto.EnrollRequest{DeviceID: "gw-2", Token: tc.Token.ID + ".x"}, proto.EnrollPath, 401, "unknown token or wrong secret"},
		{proto.EnrollRequest{DeviceID: "gw/2", Token: tc.Secret}, proto.EnrollPath, 400, "device id"},
		{proto.EnrollRequest{DeviceID: "gw-2"}, proto.EnrollPath, 400, "give a token"},
		{map[string]string{"device_id": "gw-2", "extra": "x"}, proto.EnrollPath, 400, "unknown field"},
		{proto.EnrollRequest{DeviceID: "gw-2", Token: strings.Repeat("a", 20<<10)}, proto.EnrollPath, 400, "too large"},
		{enroll.TokenRequest{TTL: "soon"}, "/api/v1/enroll-tokens", 400, "not a duration"},
		{proto.EnrollRequest{DeviceID: "gw-2", Token: tc.Secret, CSR: "x"}, proto.EnrollPath, 400, "issues no client certificates"},
	} {
		code, body := post(t, srv.URL+tt.path, tt.req)
		if code != tt.code || !strings.Contains(body, tt.msg) {
			t.Errorf("%s: got %d %s, want %d mentioning %q", tt.path, code, body, tt.code, tt.msg)
		}
	}
	// Without a token: pending until accepted.
	req := proto.EnrollRequest{DeviceID: "gw-3", RequestKey: "a-random-key-of-the-device"}
	if code, body := post(t, srv.URL+proto.EnrollPath, req); code != http.StatusAccepted {
		t.Fatalf("request: %d %s", code, body)
	}
	ds, err := c.Devices(ctx, enroll.StatePending)
	if err != nil || len(ds) != 1 || ds[0].ID != "gw-3" {
		t.Fatalf("pending: %+v %v", ds, err)
	}
	if _, err := c.Act(ctx, "gw-3", "accept"); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, srv.URL+proto.EnrollPath, req); code != http.StatusOK {
		t.Fatalf("after accept: %d %s", code, body)
	}
	if _, err := c.Act(ctx, "gw-3", "revoke"); err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, srv.URL+proto.EnrollPath, req); code != http.StatusForbidden {
		t.Fatalf("after revoke: %d %s", code, body)
	}
	if _, err := c.Act(ctx, "nobody", "accept"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("accept unknown: %v", err)
	}
	ts, err := c.Tokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].Uses != 1 {
		t.Fatalf("tokens %+v %v", ts, err)
	}
	if err := c.RevokeToken(ctx, ts[0].ID); err != nil {
		t.Fatal(err)
	}
}

// TestEMQXEndpoints drives the HTTP auth and ACL endpoints the way EMQX's
// HTTP authenticator and authoriser call them.
func TestEMQXEndpoints(t *testing.T) {
	e, srv := serve(t)
	a, err := e.Preauthorize(context.Background(), "gw-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		path string
		req  enroll.BrokerAuthRequest
		want string
	}{
		{"own credentials", "auth", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Password: string(a.Secret)}, "allow"},
		{"wrong password", "auth", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Password: "x"}, "deny"},
		{"client id not the username", "auth", enroll.BrokerAuthRequest{ClientID: "gw-b", Username: "gw-a", Password: string(a.Secret)}, "deny"},
		{"anonymous", "auth", enroll.BrokerAuthRequest{ClientID: "gw-a"}, "deny"},
		{"server", "auth", enroll.BrokerAuthRequest{ClientID: "srv", Username: "edgefleet-server", Password: "server-pw"}, "allow"},
		{"server wrong password", "auth", enroll.BrokerAuthRequest{ClientID: "srv", Username: "edgefleet-server", Password: "no"}, "deny"},
		{"publish own telemetry", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "publish", Topic: proto.Topic("gw-a", proto.KindTelemetry)}, "allow"},
		{"publish as another", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "publish", Topic: proto.Topic("gw-b", proto.KindTelemetry)}, "deny"},
		{"publish own desired", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "publish", Topic: proto.Topic("gw-a", proto.KindDesired)}, "deny"},
		{"read own desired", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "subscribe", Topic: proto.Topic("gw-a", proto.KindDesired)}, "allow"},
		{"read another's desired", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "subscribe", Topic: proto.Topic("gw-b", proto.KindDesired)}, "deny"},
		{"subscribe #", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "subscribe", Topic: "#"}, "deny"},
		{"subscribe own +", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "subscribe", Topic: "edgefleet/v1/devices/gw-a/+"}, "deny"},
		{"$SYS", "acl", enroll.BrokerAuthRequest{ClientID: "gw-a", Username: "gw-a", Action: "subscribe", Topic: "$SYS/#"}, "deny"},
		{"server anything", "acl", enroll.BrokerAuthRequest{ClientID: "srv", Username: "edgefleet-server", Action: "subscribe", Topic: "edgefleet/v1/devices/+/telemetry"}, "allow"},
	} {
		code, body := post(t, srv.URL+"/api/v1/mqtt/"+tt.path, tt.req)
		var r enroll.BrokerAuthResponse
		if code != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil || r.Result != tt.want {
			t.Errorf("%s: got %d %s, want result %s", tt.name, code, body, tt.want)
		}
	}
}
