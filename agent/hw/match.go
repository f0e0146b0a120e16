package hw

import (
	"fmt"

	profiles "github.com/edgefleet/edgefleet/firmware-profiles"
)

// Match returns the profile the device belongs to: among the specific
// profiles whose every rule the facts meet, the one with the highest
// priority (ties go to the name that sorts first, so the choice is stable);
// if none matches, the generic profile of the device's architecture. It
// fails only when there is not even a generic profile for the arch.
func Match(f Facts, ps []*profiles.Profile) (*profiles.Profile, error) {
	var best, generic *profiles.Profile
	for _, p := range ps {
		if p.Generic {
			if hasArch(p, f.Arch) {
				generic = p
			}
			continue
		}
		if !Matches(f, p) {
			continue
		}
		if best == nil || p.Priority > best.Priority || (p.Priority == best.Priority && p.Name < best.Name) {
			best = p
		}
	}
	if best != nil {
		return best, nil
	}
	if generic != nil {
		return generic, nil
	}
	return nil, fmt.Errorf("%w: arch %q", ErrNoProfile, f.Arch)
}

// Matches reports whether the facts meet every rule of p.
func Matches(f Facts, p *profiles.Profile) bool {
	if !hasArch(p, f.Arch) {
		return false
	}
	if re := p.BoardRE(); re != nil && !re.MatchString(f.BoardModel) {
		return false
	}
	if re := p.CPURE(); re != nil && !re.MatchString(f.CPUModel) {
		return false
	}
	for _, fl := range p.Match.CPUFlags {
		if !f.HasFlag(fl) {
			return false
		}
	}
	for _, n := range p.Match.DeviceNodes {
		if !f.HasAccelerator(n) {
			return false
		}
	}
	return p.FirmwareOK(f.FirmwareVersion) && p.OSVersionOK(f.OSVersion)
}

func hasArch(p *profiles.Profile, arch string) bool {
	for _, a := range p.Match.Arch {
		if a == arch {
			return true
		}
	}
	return false
}
