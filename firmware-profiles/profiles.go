// Package profiles holds the firmware profiles: one YAML file per hardware
// class in this folder, embedded into the binaries, each saying how to
// recognise a device of that class, which inference backends it offers
// (with their settings), how much memory models may use and how many
// threads an inference may take.
//
// Parsing is strict: an unknown field or a bad value is an error that names
// the file and the field, so a typo in a profile fails at start, not as a
// device quietly matching the wrong class. Matching a device against the
// rules is the agent's job (agent/hw); the server uses the names only.
package profiles

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	version "github.com/hashicorp/go-version"
	"gopkg.in/yaml.v3"
)

//go:embed *.yaml
var builtin embed.FS

// FS returns the profiles built into this binary.
func FS() fs.FS { return builtin }

// Profile is one hardware class.
type Profile struct {
	// Name is the profile's name, also its file name without ".yaml".
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Generic marks the fallback profile of an architecture: it matches
	// every device of that arch, below every specific profile.
	Generic bool `yaml:"generic"`
	// Priority orders profiles when several match: the highest wins.
	Priority int   `yaml:"priority"`
	Match    Match `yaml:"match"`
	// Backends the class offers, in order of preference.
	Backends []Backend `yaml:"backends"`
	// ModelMemoryMB is the memory budget of all loaded models, in MiB.
	ModelMemoryMB int `yaml:"model_memory_mb"`
	// Threads is the thread count of one inference.
	Threads int `yaml:"threads"`

	boardRE *regexp.Regexp
	cpuRE   *regexp.Regexp
	fwCons  version.Constraints
	osCons  version.Constraints
}

// Match are the rules a device must meet, all of them, to be of a class.
// An empty rule matches everything.
type Match struct {
	// Arch lists the GOARCH values of the class.
	Arch []string `yaml:"arch"`
	// BoardModel is a regular expression on the board model
	// (/proc/device-tree/model or the DMI product name).
	BoardModel string `yaml:"board_model"`
	// CPUModel is a regular expression on the CPU model name.
	CPUModel string `yaml:"cpu_model"`
	// CPUFlags must all be present.
	CPUFlags []string `yaml:"cpu_flags"`
	// DeviceNodes must all exist, e.g. /dev/apex_0.
	DeviceNodes []string `yaml:"device_nodes"`
	// Firmware is a version constraint (hashicorp/go-version) on the
	// firmware version, e.g. ">= 36.0" for Jetson L4T.
	Firmware string `yaml:"firmware"`
	// OSVersion is a version constraint on VERSION_ID of os-release.
	OSVersion string `yaml:"os_version"`
}

// Backend is one inference backend a profile offers.
type Backend struct {
	Name string `yaml:"name"`
	// Settings are passed to the backend, e.g. "library" for ONNX Runtime's
	// shared library path.
	Settings map[string]string `yaml:"settings"`
}

// BoardRE is the compiled BoardModel rule, nil when there is none.
func (p *Profile) BoardRE() *regexp.Regexp { return p.boardRE }

// CPURE is the compiled CPUModel rule, nil when there is none.
func (p *Profile) CPURE() *regexp.Regexp { return p.cpuRE }

// FirmwareOK reports whether v meets the firmware constraint. A profile
// without one accepts anything; a profile with one rejects a device whose
// firmware version is unknown or unparsable.
func (p *Profile) FirmwareOK(v string) bool { return constraintOK(p.fwCons, v) }

// OSVersionOK reports whether v meets the OS version constraint, like
// FirmwareOK.
func (p *Profile) OSVersionOK(v string) bool { return constraintOK(p.osCons, v) }

func constraintOK(c version.Constraints, v string) bool {
	if c == nil {
		return true
	}
	pv, err := version.NewVersion(v)
	if err != nil {
		return false
	}
	return c.Check(pv)
}

// BackendNames returns the names of the offered backends in order.
func (p *Profile) BackendNames() []string {
	names := make([]string, len(p.Backends))
	for i, b := range p.Backends {
		names[i] = b.Name
	}
	return names
}

// Settings returns the settings of the named backend, or nil.
func (p *Profile) Settings(backend string) map[string]string {
	for _, b := range p.Backends {
		if b.Name == backend {
			return b.Settings
		}
	}
	return nil
}

// Limits on a profile file; profiles are written by people, and these only
// stop a runaway file from costing memory.
const (
	maxFileBytes = 64 << 10
	maxListLen   = 32
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Parse reads one profile. file is the name used in errors.
func Parse(file string, data []byte) (*Profile, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalid, file, len(data), maxFileBytes)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s is empty", ErrInvalid, file)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	// Decoding the text again (not the node) is what makes KnownFields apply.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalid, file, describe(err, &doc))
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, file, err)
	}
	return &p, nil
}

func (p *Profile) check() error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("field name: %q must be 1-63 lowercase letters, digits and '-'", p.Name)
	}
	if len(p.Match.Arch) == 0 {
		return fmt.Errorf("field match.arch: at least one architecture is required")
	}
	for _, l := range []struct {
		field string
		n     int
	}{{"match.arch", len(p.Match.Arch)}, {"match.cpu_flags", len(p.Match.CPUFlags)}, {"match.device_nodes", len(p.Match.DeviceNodes)}, {"backends", len(p.Backends)}} {
		if l.n > maxListLen {
			return fmt.Errorf("field %s: %d entries, limit %d", l.field, l.n, maxListLen)
		}
	}
	for _, a := range p.Match.Arch {
		switch a {
		case "amd64", "arm64", "arm", "386", "riscv64":
		default:
			return fmt.Errorf("field match.arch: unknown architecture %q (want a GOARCH such as amd64 or arm64)", a)
		}
	}
	if p.Generic && (p.Match.BoardModel != "" || p.Match.CPUModel != "" || len(p.Match.CPUFlags) > 0 || len(p.Match.DeviceNodes) > 0 || p.Match.Firmware != "" || p.Match.OSVersion != "") {
		return fmt.Errorf("field generic: a generic profile matches on arch only; remove its other match rules")
	}
	var err error
	if p.Match.BoardModel != "" {
		if p.boardRE, err = regexp.Compile(p.Match.BoardModel); err != nil {
			return fmt.Errorf("field match.board_model: %v", err)
		}
	}
	if p.Match.CPUModel != "" {
		if p.cpuRE, err = regexp.Compile(p.Match.CPUModel); err != nil {
			return fmt.Errorf("field match.cpu_model: %v", err)
		}
	}
	for _, n := range p.Match.DeviceNodes {
		if !strings.HasPrefix(n, "/dev/") || path.Clean(n) != n {
			return fmt.Errorf("field match.device_nodes: %q is not a clean path under /dev/", n)
		}
	}
	if p.Match.Firmware != "" {
		if p.fwCons, err = version.NewConstraint(p.Match.Firmware); err != nil {
			return fmt.Errorf("field match.firmware: %v", err)
		}
	}
	if p.Match.OSVersion != "" {
		if p.osCons, err = version.NewConstraint(p.Match.OSVersion); err != nil {
			return fmt.Errorf("field match.os_version: %v", err)
		}
	}
	if len(p.Backends) == 0 {
		return fmt.Errorf("field backends: at least one backend is required")
	}
	seen := map[string]bool{}
	for i, b := range p.Backends {
		if b.Name == "" {
			return fmt.Errorf("field backends[%d].name: empty", i)
		}
		if seen[b.Name] {
			return fmt.Errorf("field backends[%d].name: %q listed twice", i, b.Name)
		}
		seen[b.Name] = true
	}
	if p.ModelMemoryMB <= 0 {
		return fmt.Errorf("field model_memory_mb: %d must be positive", p.ModelMemoryMB)
	}
	if p.Threads <= 0 || p.Threads > 256 {
		return fmt.Errorf("field threads: %d must be between 1 and 256", p.Threads)
	}
	return nil
}

// Load reads every *.yaml file at the top of fsys. Each profile's name must
// equal its file name, and every architecture named by any profile must have
// a generic profile, so a device that matches nothing still gets one.
func Load(fsys fs.FS) ([]*Profile, error) {
	files, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("list profiles: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no *.yaml profile files", ErrInvalid)
	}
	sort.Strings(files)
	var out []*Profile
	names := map[string]bool{}
	generic := map[string]bool{}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("read profile %s: %w", f, err)
		}
		p, err := Parse(f, data)
		if err != nil {
			return nil, err
		}
		if want := strings.TrimSuffix(f, ".yaml"); p.Name != want {
			return nil, fmt.Errorf("%w: %s: field name: %q does not match the file name %q", ErrInvalid, f, p.Name, want)
		}
		if names[p.Name] {
			return nil, fmt.Errorf("%w: %s: field name: %q defined twice", ErrInvalid, f, p.Name)
		}
		names[p.Name] = true
		if p.Generic {
			for _, a := range p.Match.Arch {
				if generic[a] {
					return nil, fmt.Errorf("%w: %s: field generic: a second generic profile for %s", ErrInvalid, f, a)
				}
				generic[a] = true
			}
		}
		out = append(out, p)
	}
	for _, p := range out {
		for _, a := range p.Match.Arch {
			if !generic[a] {
				return nil, fmt.Errorf("%w: %s.yaml: field match.arch: no generic profile for %s", ErrInvalid, p.Name, a)
			}
		}
	}
	return out, nil
}

// Builtin loads the embedded profiles. They are tested, so an error here is
// a build defect.
func Builtin() ([]*Profile, error) { return Load(builtin) }

var lineRE = regexp.MustCompile(`line (\d+): `)

// describe adds the dotted field path to yaml's "line N: ..." messages,
// which name only the line.
func describe(err error, doc *yaml.Node) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			var line int
			fmt.Sscan(sm[1], &line)
			if f := fieldAt(doc, line, ""); f != "" {
				msgs[i] = "field " + f + ": " + m
			}
		}
	}
	return strings.Join(msgs, "; ")
}

// fieldAt returns the path of the deepest mapping key on the given line.
func fieldAt(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if f := fieldAt(c, line, prefix); f != "" {
				return f
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if f := fieldAt(v, line, path); f != "" {
				return f
			}
			if k.Line == line {
				return path
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if f := fieldAt(c, line, fmt.Sprintf("%s[%d]", prefix, i)); f != "" {
				return f
			}
		}
	}
	return ""
}
