package inventory

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/edgefleet/edgefleet/fleet/store"
	"github.com/edgefleet/edgefleet/proto"
)

// Limits of a device listing.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Status filter values.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// Query selects devices. Every set filter must match.
type Query struct {
	// Labels must all be present on the device with these values.
	Labels map[string]string
	// Profile is the firmware profile name.
	Profile string
	// Status is StatusOnline or StatusOffline.
	Status string
	// Model matches an installed model by "name" or "name@version".
	Model string
	// Limit is the page size: 0 means DefaultLimit; at most MaxLimit.
	Limit int
	// Cursor is Page.Next of the previous page.
	Cursor string
}

// Page is one page of devices, in id order.
type Page struct {
	Devices []store.Device
	// Next is the cursor of the following page; empty on the last page.
	Next string
}

// cursorPrefix versions the cursor encoding so it can change without old
// cursors being misread.
const cursorPrefix = "c1:"

func encodeCursor(id string) string {
	if id == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + id))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(b), cursorPrefix) {
		return "", fmt.Errorf("%w: cursor %q was not returned by this server", ErrBadQuery, truncate(c))
	}
	id := string(b[len(cursorPrefix):])
	if err := proto.ValidateDeviceID(id); err != nil {
		return "", fmt.Errorf("%w: cursor %q was not returned by this server", ErrBadQuery, truncate(c))
	}
	return id, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Validate checks the query and returns an error wrapping ErrBadQuery that
// names the field at fault.
func (q Query) Validate() error {
	if q.Limit < 0 || q.Limit > MaxLimit {
		return fmt.Errorf("%w: limit %d is outside 1..%d", ErrBadQuery, q.Limit, MaxLimit)
	}
	switch q.Status {
	case "", StatusOnline, StatusOffline:
	default:
		return fmt.Errorf("%w: status %q is neither %q nor %q", ErrBadQuery, truncate(q.Status), StatusOnline, StatusOffline)
	}
	if len(q.Labels) > proto.MaxLabels {
		return fmt.Errorf("%w: %d label filters, limit %d", ErrBadQuery, len(q.Labels), proto.MaxLabels)
	}
	for k, v := range q.Labels {
		if k == "" || len(k) > proto.MaxLabelKeyLen || len(v) > proto.MaxLabelValueLen {
			return fmt.Errorf("%w: label %q=%q is empty or too long", ErrBadQuery, truncate(k), truncate(v))
		}
	}
	if len(q.Profile) > proto.MaxStringLen || len(q.Model) > proto.MaxStringLen {
		return fmt.Errorf("%w: profile or model filter longer than %d bytes", ErrBadQuery, proto.MaxStringLen)
	}
	_, err := decodeCursor(q.Cursor)
	return err
}

// Match reports whether the device passes the query's filters.
func (q Query) Match(d *store.Device) bool {
	if q.Profile != "" && d.Profile != q.Profile {
		return false
	}
	if q.Status == StatusOnline && !d.Online || q.Status == StatusOffline && d.Online {
		return false
	}
	for k, v := range q.Labels {
		if got, ok := d.Labels[k]; !ok || got != v {
			return false
		}
	}
	if q.Model != "" {
		name, version, withVersion := strings.Cut(q.Model, "@")
		found := false
		for _, m := range d.Models {
			if m.Name == name && (!withVersion || m.Version == version) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (q Query) hint() store.Hint {
	h := store.Hint{Profile: q.Profile, Labels: q.Labels}
	switch q.Status {
	case StatusOnline:
		h.Online = new(true)
	case StatusOffline:
		h.Online = new(false)
	}
	return h
}

// List returns one page of the devices matching q, in id order.
func (inv *Inventory) List(ctx context.Context, q Query) (Page, error) {
	if err := q.Validate(); err != nil {
		return Page{}, err
	}
	after, _ := decodeCursor(q.Cursor)
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	ds, next, err := inv.st.Devices(ctx, after, limit, q.hint(), q.Match)
	if err != nil {
		return Page{}, fmt.Errorf("list devices: %w", err)
	}
	return Page{Devices: ds, Next: encodeCursor(next)}, nil
}
