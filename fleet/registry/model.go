package registry

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	version "github.com/hashicorp/go-version"

	"github.com/edgefleet/edgefleet/proto"
)

// Limits on what a publisher controls.
const (
	MaxVariants         = 16
	MaxVersionsPerModel = 10000
)

// Model is a named model and a summary of its versions. The JSON tags are
// both the API shape and the storage encoding.
type Model struct {
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Latest   string    `json:"latest"`   // highest version by semver precedence
	Versions int       `json:"versions"` // how many are published
}

// Version is one published, immutable version of a model.
type Version struct {
	Model     string        `json:"model"`
	Version   string        `json:"version"` // canonical MAJOR.MINOR.PATCH[-PRE]
	Published time.Time     `json:"published"`
	Lineage   proto.Lineage `json:"lineage"`
	Variants  []Variant     `json:"variants"`
}

// Variant is one build of a version for one kind of device. Manifest and
// Signature are what devices receive; the other fields repeat what the
// manifest says, for the API and for Resolve.
type Variant struct {
	ID              string             `json:"id"`
	Format          string             `json:"format"`
	Precision       string             `json:"precision"`
	Backend         string             `json:"backend"`
	Profiles        []string           `json:"profiles,omitempty"`
	MinAgentVersion string             `json:"min_agent_version,omitempty"`
	Artifact        proto.ArtifactRef  `json:"artifact"`
	SelfTest        *proto.SelfTest    `json:"self_test,omitempty"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
	Manifest        []byte             `json:"manifest"`  // canonical manifest bytes (base64 in JSON)
	Signature       []byte             `json:"signature"` // ed25519 over Manifest
	KeyID           string             `json:"key_id"`    // proto.KeyID of the signing key
}

// PublishRequest is what a publisher sends to create a version. Artifacts
// are named by sha256 and must already be in the artifact store (the HTTP
// handler stores uploaded files first and fills these in).
type PublishRequest struct {
	Version  string        `json:"version"`
	Lineage  proto.Lineage `json:"lineage"`
	Variants []VariantSpec `json:"variants"`
}

// VariantSpec is one variant in a PublishRequest. ID defaults to
// "<format>-<precision>". The order of Variants is the publisher's
// preference: Resolve picks the first compatible one among equals.
type VariantSpec struct {
	ID              string             `json:"id,omitempty"`
	Format          string             `json:"format"`
	Precision       string             `json:"precision"`
	Backend         string             `json:"backend"`
	Profiles        []string           `json:"profiles,omitempty"`
	MinAgentVersion string             `json:"min_agent_version,omitempty"`
	Artifact        proto.ArtifactRef  `json:"artifact"`
	SelfTest        *proto.SelfTest    `json:"self_test,omitempty"`
	Metrics         map[string]float64 `json:"metrics,omitempty"`
}

// ParseVersion parses a semver version the way the registry stores it:
// MAJOR.MINOR.PATCH with an optional prerelease, a leading "v" allowed and
// dropped. Build metadata is refused: 1.0.0+a and 1.0.0+b have equal
// precedence, so they could not be two immutable versions.
func ParseVersion(s string) (*version.Version, error) {
	v, err := version.NewSemver(s)
	if err != nil {
		return nil, fieldErr("version", "%q is not a semantic version such as 1.4.0 or 2.0.0-rc.1", truncate(s))
	}
	if v.Metadata() != "" {
		return nil, fieldErr("version", "%q carries build metadata (+%s); versions differing only in it would compare equal, so use a prerelease or a new patch version", truncate(s), v.Metadata())
	}
	// go-version pads "1.2" to 1.2.0; the registry wants the spelling
	// publishers use to be the one it stores.
	if !proto.ValidSemver(strings.TrimPrefix(s, "v")) || v.String() != strings.TrimPrefix(s, "v") {
		return nil, fieldErr("version", "%q must be MAJOR.MINOR.PATCH[-PRERELEASE] with three numbers and no leading zeros", truncate(s))
	}
	return v, nil
}

// CheckName returns a *FieldError unless name is a valid model name.
func CheckName(name string) error {
	if !proto.ValidName(name) {
		return fieldErr("name", "%q is not a model name (lowercase letters, digits, '.', '_', '-', starting with a letter or digit, at most 64)", truncate(name))
	}
	return nil
}

// normalize validates req for model name and returns the version in its
// canonical spelling and the variants with defaults filled in. Every error
// is a *FieldError naming the field in the request.
func normalize(name string, req PublishRequest) (string, []VariantSpec, error) {
	if err := CheckName(name); err != nil {
		return "", nil, err
	}
	v, err := ParseVersion(req.Version)
	if err != nil {
		return "", nil, err
	}
	if len(req.Variants) == 0 {
		return "", nil, fieldErr("variants", "is empty; a version needs at least one variant")
	}
	if len(req.Variants) > MaxVariants {
		return "", nil, fieldErr("variants", "has %d entries, limit %d", len(req.Variants), MaxVariants)
	}
	out := make([]VariantSpec, len(req.Variants))
	ids := map[string]int{}
	for i, s := range req.Variants {
		field := fmt.Sprintf("variants[%d]", i)
		if s.ID == "" {
			s.ID = s.Format + "-" + s.Precision
		}
		if j, dup := ids[s.ID]; dup {
			return "", nil, fieldErr(field+".id", "%q is also the id of variants[%d]; give each variant its own id", s.ID, j)
		}
		ids[s.ID] = i
		if s.MinAgentVersion != "" {
			if _, err := version.NewConstraint(s.MinAgentVersion); err != nil {
				return "", nil, fieldErr(field+".min_agent_version", "%q is not a version constraint such as \">= 0.3.0\": %v", truncate(s.MinAgentVersion), err)
			}
		}
		// The manifest holds the rules every variant must follow; checking
		// it here means the registry can never sign what a device rejects.
		m := manifestFor(name, v.String(), req.Lineage, s)
		if err := m.Validate(); err != nil {
			var fe *proto.ManifestFieldError
			if errors.As(err, &fe) {
				f := field + "." + fe.Field
				switch {
				case fe.Field == "lineage" || len(fe.Field) > 8 && fe.Field[:8] == "lineage.":
					f = fe.Field // lineage belongs to the version, not the variant
				case fe.Field == "variant":
					f = field + ".id"
				case fe.Field == "model":
					f = "name"
				}
				return "", nil, fieldErr(f, "%s", fe.Reason)
			}
			return "", nil, fieldErr(field, "%v", err)
		}
		out[i] = s
	}
	return v.String(), out, nil
}

func manifestFor(name, ver string, lin proto.Lineage, s VariantSpec) *proto.Manifest {
	return &proto.Manifest{
		Schema:          proto.ManifestSchema,
		Model:           name,
		Version:         ver,
		Variant:         s.ID,
		Format:          s.Format,
		Precision:       s.Precision,
		Backend:         s.Backend,
		Profiles:        s.Profiles,
		MinAgentVersion: s.MinAgentVersion,
		Artifact:        s.Artifact,
		SelfTest:        s.SelfTest,
		Metrics:         s.Metrics,
		Lineage:         lin,
	}
}

// sameContent reports whether a stored version holds exactly what a new
// request asks for, which makes re-publishing idempotent.
func sameContent(v *Version, lin proto.Lineage, specs []VariantSpec) bool {
	if !reflect.DeepEqual(normLineage(v.Lineage), normLineage(lin)) || len(v.Variants) != len(specs) {
		return false
	}
	for i, s := range specs {
		if !reflect.DeepEqual(normSpec(v.Variants[i].spec()), normSpec(s)) {
			return false
		}
	}
	return true
}

// normLineage and normSpec make nil and empty compare equal: they encode
// the same manifest.
func normLineage(l proto.Lineage) proto.Lineage {
	if len(l.Metrics) == 0 {
		l.Metrics = nil
	}
	return l
}

func normSpec(s VariantSpec) VariantSpec {
	if len(s.Profiles) == 0 {
		s.Profiles = nil
	}
	if len(s.Metrics) == 0 {
		s.Metrics = nil
	}
	if s.SelfTest != nil {
		st := *s.SelfTest
		if len(st.ExpectedOutputs) == 0 {
			st.ExpectedOutputs = nil
		}
		s.SelfTest = &st
	}
	return s
}

func (v *Variant) spec() VariantSpec {
	return VariantSpec{
		ID: v.ID, Format: v.Format, Precision: v.Precision, Backend: v.Backend,
		Profiles: v.Profiles, MinAgentVersion: v.MinAgentVersion, Artifact: v.Artifact,
		SelfTest: v.SelfTest, Metrics: v.Metrics,
	}
}

// sortVersions orders versions by semver precedence, lowest first.
func sortVersions(vs []Version) {
	slices.SortFunc(vs, func(a, b Version) int {
		va, ea := version.NewSemver(a.Version)
		vb, eb := version.NewSemver(b.Version)
		if ea != nil || eb != nil {
			return compareStrings(a.Version, b.Version)
		}
		return va.Compare(vb)
	})
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
