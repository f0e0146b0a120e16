package client

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8470", "ftp://x", "http://"} {
		if _, err := New(u, nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	if _, err := New("http://127.0.0.1:8470/", nil); err != nil {
		t.Error(err)
	}
}

func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		e                *Error
		busy, nf, badReq bool
	}{
		{&Error{Status: 429, Kind: "queue_full", RetryAfter: time.Millisecond}, true, false, false},
		{&Error{Status: 503, Kind: "expired"}, true, false, false},
		{&Error{Status: 503, Kind: "unavailable"}, false, false, false},
		{&Error{Status: 404, Kind: "unknown_model"}, false, true, false},
		{&Error{Status: 400, Kind: "bad_shape"}, false, false, true},
		{&Error{Status: 413, Kind: "body_too_large"}, false, false, true},
		{&Error{Status: 500, Kind: "run_error"}, false, false, false},
	} {
		var err error = tc.e
		if errors.Is(err, ErrBusy) != tc.busy || errors.Is(err, ErrNotFound) != tc.nf || errors.Is(err, ErrBadRequest) != tc.badReq {
			t.Errorf("%d %s: busy %v notfound %v badrequest %v", tc.e.Status, tc.e.Kind, errors.Is(err, ErrBusy), errors.Is(err, ErrNotFound), errors.Is(err, ErrBadRequest))
		}
	}
}

func TestAPIErrorFallsBackToRetryAfterHeader(t *testing.T) {
	resp := &http.Response{StatusCode: 429, Header: http.Header{"Retry-After": {"2"}}}
	err := apiError(resp, []byte("not json"))
	var e *Error
	if !errors.As(err, &e) || e.RetryAfter != 2*time.Second || e.Kind != "http" || e.Message != "not json" {
		t.Errorf("%#v", err)
	}
}
