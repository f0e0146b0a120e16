package rollout

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/fleet/inventory"
	"github.com/edgefleet/edgefleet/proto"
)

// Group is a named set of devices: an explicit list (static) or a label
// selector evaluated against the inventory whenever a rollout starts.
type Group struct {
	Name     string   `json:"name"`
	Devices  []string `json:"devices,omitempty"`
	Selector string   `json:"selector,omitempty"`
}

func (g *Group) validate() error {
	if !proto.ValidName(g.Name) {
		return fmt.Errorf("%w: group name %q: use lowercase letters, digits, '.', '_', '-' (at most 64)", ErrInvalid, truncate(g.Name))
	}
	if (len(g.Devices) > 0) == (g.Selector != "") {
		return fmt.Errorf("%w: group %s needs exactly one of devices or selector", ErrInvalid, g.Name)
	}
	if g.Selector != "" {
		_, err := ParseSelector(g.Selector)
		return err
	}
	return checkDevices(g.Devices)
}

// Selector matches devices by firmware profile and labels.
type Selector struct {
	Profile string
	Labels  map[string]string
}

// ParseSelector reads "profile=raspberry-pi-4,site=plant-7": comma-separated
// key=value pairs, all of which must hold; the key "profile" is the
// device's firmware profile, every other key a label.
func ParseSelector(s string) (Selector, error) {
	sel := Selector{Labels: map[string]string{}}
	if len(s) > proto.MaxStringLen {
		return sel, fmt.Errorf("%w: selector is %d bytes, limit %d", ErrInvalid, len(s), proto.MaxStringLen)
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return sel, fmt.Errorf("%w: selector %q: %q is not key=value", ErrInvalid, truncate(s), truncate(part))
		}
		if len(k) > proto.MaxLabelKeyLen || len(v) > proto.MaxLabelValueLen {
			return sel, fmt.Errorf("%w: selector %q: key or value of %q too long", ErrInvalid, truncate(s), truncate(part))
		}
		if k == "profile" {
			if sel.Profile != "" {
				return sel, fmt.Errorf("%w: selector %q names profile twice", ErrInvalid, truncate(s))
			}
			sel.Profile = v
			continue
		}
		if _, dup := sel.Labels[k]; dup {
			return sel, fmt.Errorf("%w: selector %q names %s twice", ErrInvalid, truncate(s), k)
		}
		sel.Labels[k] = v
	}
	return sel, nil
}

// String writes the selector back in canonical order.
func (s Selector) String() string {
	var parts []string
	if s.Profile != "" {
		parts = append(parts, "profile="+s.Profile)
	}
	for _, k := range slices.Sorted(maps.Keys(s.Labels)) {
		parts = append(parts, k+"="+s.Labels[k])
	}
	return strings.Join(parts, ",")
}

func (s Selector) query() inventory.Query {
	return inventory.Query{Profile: s.Profile, Labels: s.Labels, Limit: inventory.MaxLimit}
}
