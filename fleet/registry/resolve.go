package registry

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	version "github.com/hashicorp/go-version"

	"github.com/edgefleet/edgefleet/proto"
)

// Device is what Resolve needs to know about a device: the facts its hello
// reported (see proto.Hello).
type Device struct {
	Profile      string          // firmware profile the device matched
	AgentVersion string          // agent build, a semver
	Backends     []DeviceBackend // inference backends the agent has
}

// DeviceBackend is one backend on a device.
type DeviceBackend struct {
	Name      string
	Available bool
	Reason    string   // why it is unavailable
	Formats   []string // formats it runs; empty means not reported
}

// DeviceFromHello takes the facts Resolve needs from a device's hello.
func DeviceFromHello(h *proto.Hello) Device {
	d := Device{Profile: h.GetFirmwareProfile(), AgentVersion: h.GetAgentVersion()}
	for _, b := range h.GetBackends() {
		d.Backends = append(d.Backends, DeviceBackend{Name: b.GetName(), Available: b.GetAvailable(), Reason: b.GetReason(), Formats: b.GetFormats()})
	}
	return d
}

// IncompatibleError says why no variant of a version fits a device. It
// wraps ErrIncompatible; a rollout lists the device as incompatible with
// this reason rather than counting it as a failure.
type IncompatibleError struct {
	Model, Version string
	Reasons        []VariantReason // one per variant, in the version's order
}

// VariantReason is why one variant does not fit.
type VariantReason struct {
	Variant string `json:"variant"`
	Reason  string `json:"reason"`
}

func (e *IncompatibleError) Error() string {
	parts := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		parts[i] = r.Variant + ": " + r.Reason
	}
	return fmt.Sprintf("%v: %s %s has no variant this device can run (%s)", ErrIncompatible, e.Model, e.Version, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrIncompatible) hold.
func (e *IncompatibleError) Unwrap() error { return ErrIncompatible }

// Resolve picks the variant of v that device d should run. A variant fits
// when its firmware profiles include the device's (or it lists none), the
// backend it needs is available on the device and runs its format, and the
// device's agent version satisfies its constraint. Among fitting variants,
// one built for the device's profile beats one built for any profile; ties
// go to the variant listed first, the publisher's preference.
func (v *Version) Resolve(d Device) (*Variant, error) {
	best, bestRank := -1, 2
	var reasons []VariantReason
	for i := range v.Variants {
		va := &v.Variants[i]
		if why := va.misfit(d); why != "" {
			reasons = append(reasons, VariantReason{Variant: va.ID, Reason: why})
			continue
		}
		rank := 1
		if len(va.Profiles) > 0 {
			rank = 0
		}
		if rank < bestRank {
			best, bestRank = i, rank
		}
	}
	if best < 0 {
		return nil, &IncompatibleError{Model: v.Model, Version: v.Version, Reasons: reasons}
	}
	return &v.Variants[best], nil
}

// misfit returns why the variant cannot run on d, or "".
func (va *Variant) misfit(d Device) string {
	var why []string
	if len(va.Profiles) > 0 && !slices.Contains(va.Profiles, d.Profile) {
		if d.Profile == "" {
			why = append(why, fmt.Sprintf("built for firmware profiles %s, device reports no profile", strings.Join(va.Profiles, ", ")))
		} else {
			why = append(why, fmt.Sprintf("built for firmware profiles %s, device has %s", strings.Join(va.Profiles, ", "), d.Profile))
		}
	}
	i := slices.IndexFunc(d.Backends, func(b DeviceBackend) bool { return b.Name == va.Backend })
	switch {
	case i < 0:
		why = append(why, fmt.Sprintf("needs backend %s, which the device does not have", va.Backend))
	case !d.Backends[i].Available:
		r := d.Backends[i].Reason
		if r == "" {
			r = "no reason given"
		}
		why = append(why, fmt.Sprintf("needs backend %s, unavailable on the device (%s)", va.Backend, r))
	case len(d.Backends[i].Formats) > 0 && !slices.Contains(d.Backends[i].Formats, va.Format):
		why = append(why, fmt.Sprintf("backend %s on the device does not run %s models", va.Backend, va.Format))
	}
	if va.MinAgentVersion != "" {
		c, err := constraints.get(va.MinAgentVersion)
		if err != nil { // validated at publish; a stored record is corrupt
			why = append(why, fmt.Sprintf("agent constraint %q does not parse: %v", va.MinAgentVersion, err))
		} else if av, err := agentVersions.get(d.AgentVersion); err != nil {
			why = append(why, fmt.Sprintf("needs agent %s, device reports agent version %q", va.MinAgentVersion, truncate(d.AgentVersion)))
		} else if !c.Check(av) {
			why = append(why, fmt.Sprintf("needs agent %s, device runs %s", va.MinAgentVersion, av.Original()))
		}
	}
	return strings.Join(why, "; ")
}

// DesiredModel is the entry of a device's desired deployment for variant
// va of v; url is where the device downloads the artifact (the server's
// public base URL + ArtifactPath).
func (v *Version) DesiredModel(va *Variant, url, jobID string) *proto.DesiredModel {
	return &proto.DesiredModel{
		Name:      v.Model,
		Version:   v.Version,
		Format:    va.Format,
		Backend:   va.Backend,
		Url:       url,
		Sha256:    va.Artifact.SHA256,
		SizeBytes: va.Artifact.Size,
		Manifest:  va.Manifest,
		Signature: va.Signature,
		JobId:     jobID,
	}
}

// ArtifactPath is the path, under the server's base URL, from which the
// Handler serves a blob.
func ArtifactPath(sha256 string) string { return "/artifacts/" + sha256 }

// Parsing a constraint or a version is a regexp match and most of what
// Resolve costs; a rollout resolves thousands of devices against the same
// few strings. The caches are bounded: past maxParsed entries, strings are
// parsed every time.
const maxParsed = 4096

var (
	constraints   = parseCache[version.Constraints]{parse: version.NewConstraint, limit: maxParsed}
	agentVersions = parseCache[*version.Version]{parse: func(s string) (*version.Version, error) { return version.NewVersion(s) }, limit: maxParsed}
)

type parseCache[T any] struct {
	parse func(string) (T, error)
	limit int
	mu    sync.Mutex
	m     map[string]T
}

func (c *parseCache[T]) get(s string) (T, error) {
	c.mu.Lock()
	v, ok := c.m[s]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := c.parse(s)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]T)
	}
	if len(c.m) < c.limit {
		c.m[s] = v
	}
	c.mu.Unlock()
	return v, nil
}
