package api_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/api"
	"github.com/edgefleet/edgefleet/fleet/inventory"
)

// FuzzParseQuery feeds arbitrary query strings to the device-list parser:
// it must never panic, and whatever it accepts must be a valid query.
func FuzzParseQuery(f *testing.F) {
	for _, seed := range []string{
		"", "label=site=a", "label=site=a&label=tier=edge&status=online", "limit=1000", "limit=-1",
		"cursor=YzE6Z3ctMDE", "cursor=%00", "status=offline&profile=raspberry-pi-4&model=kws@1.0.0",
		"label==", "label=%3D%3D", "model=@", "limit=99999999999999999999", "a=b&a=c", "%zz",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := api.ParseQuery(v)
		if err != nil {
			var pe *api.ParamError
			if !errors.As(err, &pe) || pe.Param == "" {
				t.Fatalf("error %v does not name a parameter", err)
			}
			return
		}
		if err := q.Validate(); err != nil {
			t.Fatalf("ParseQuery accepted %q but the query is invalid: %v", raw, err)
		}
		if q.Limit < 0 || q.Limit > inventory.MaxLimit {
			t.Fatalf("limit %d accepted", q.Limit)
		}
	})
}
