package main

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed scripts/*.tmpl
var scriptFS embed.FS

var scriptTmpl = template.Must(template.ParseFS(scriptFS, "scripts/*.tmpl"))

const (
	maintainer = "edgefleet maintainers <maintainers@edgefleet.invalid>"
	homepage   = "https://github.com/edgefleet/edgefleet"
)

// buildAll compiles and packages every build of the plan into out and
// returns the .deb paths written, in plan order. Intermediate binaries and
// rendered scripts live in a temporary directory removed on return.
func buildAll(ctx context.Context, root, out string, plan []build) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	work, err := os.MkdirTemp("", "edgefleet-packages-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(work)
	mtime := sourceDate(ctx, root)
	var written []string
	for _, b := range plan {
		dir := filepath.Join(work, b.Spec.Name+"_"+b.Target.DebArch)
		bin := filepath.Join(dir, b.Spec.Name)
		if err := buildBinary(ctx, root, b, bin); err != nil {
			return written, err
		}
		path, err := writeDeb(root, dir, out, bin, b, mtime)
		if err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// buildBinary compiles the package's command as a static binary; the
// gateways have no toolchain and may have an older libc than the build host.
func buildBinary(ctx context.Context, root string, b build, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+b.Version,
		"-o", out, b.Spec.Cmd)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+b.Target.GOARCH)
	if b.Target.GOARM != "" {
		cmd.Env = append(cmd.Env, "GOARM="+b.Target.GOARM)
	}
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s for linux/%s: %w\n%s", b.Spec.Cmd, b.Target.DebArch, err, bytes.TrimSpace(msg))
	}
	return nil
}

// writeDeb packages one build. work is a private directory for the rendered
// maintainer scripts; bin is the compiled binary.
func writeDeb(root, work, out, bin string, b build, mtime time.Time) (string, error) {
	scripts, err := renderScripts(work, b.Spec)
	if err != nil {
		return "", err
	}
	info := debInfo(root, bin, b, scripts, mtime)
	pkg := deb.Default
	path := filepath.Join(out, pkg.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	if err := pkg.Package(nfpm.WithDefaults(info), f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("package %s %s for %s: %w", b.Spec.Name, b.Version, b.Target.DebArch, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// debInfo is the nFPM description of one package. Files are owned by root;
// only the configuration is readable by the service group and no one else,
// because enrolment tokens or broker credentials may be pasted into it.
func debInfo(root, bin string, b build, scripts nfpm.Scripts, mtime time.Time) *nfpm.Info {
	s := b.Spec
	src := func(rel string) string { return filepath.Join(root, filepath.FromSlash(rel)) }
	contents := files.Contents{
		{Source: bin, Destination: "/usr/bin/" + s.Name,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: mtime}},
		{Source: src(s.UnitSrc), Destination: "/usr/lib/systemd/system/" + s.Unit,
			FileInfo: &files.ContentFileInfo{Mode: 0o644, MTime: mtime}},
		{Source: src(s.ConfigSrc), Destination: s.Config, Type: files.TypeConfig,
			FileInfo: &files.ContentFileInfo{Mode: 0o640, Owner: "root", Group: s.User, MTime: mtime}},
		{Destination: "/etc/edgefleet", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: mtime}},
	}
	for dst, rel := range s.Docs {
		contents = append(contents, &files.Content{Source: src(rel), Destination: dst,
			FileInfo: &files.ContentFileInfo{Mode: 0o644, MTime: mtime}})
	}
	return &nfpm.Info{
		Name:          s.Name,
		Arch:          b.Target.NFPMArch,
		Platform:      "linux",
		Version:       b.Version,
		VersionSchema: "none", // debianVersion already made it sort right
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   s.Description,
		Vendor:        "edgefleet",
		Homepage:      homepage,
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts:  scripts,
			Deb: nfpm.Deb{
				// preinst runs useradd/groupadd before unpacking.
				Predepends:  []string{"passwd"},
				Compression: "gzip",
			},
		},
	}
}

// renderScripts writes the maintainer scripts for s into dir.
func renderScripts(dir string, s pkgSpec) (nfpm.Scripts, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nfpm.Scripts{}, fmt.Errorf("create script directory: %w", err)
	}
	var sc nfpm.Scripts
	for name, dst := range map[string]*string{
		"preinst": &sc.PreInstall, "postinst": &sc.PostInstall,
		"prerm": &sc.PreRemove, "postrm": &sc.PostRemove,
	} {
		var buf bytes.Buffer
		if err := scriptTmpl.ExecuteTemplate(&buf, name+".tmpl", s); err != nil {
			return sc, fmt.Errorf("render %s of %s: %w", name, s.Name, err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, buf.Bytes(), 0o755); err != nil {
			return sc, fmt.Errorf("write %s: %w", path, err)
		}
		*dst = path
	}
	return sc, nil
}

// sourceDate is the timestamp stamped on every file: $SOURCE_DATE_EPOCH,
// else the last commit's time, so the same commit packs to the same bytes.
func sourceDate(ctx context.Context, root string) time.Time {
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			epoch = strings.TrimSpace(string(out))
		}
	}
	if sec, err := strconv.ParseInt(epoch, 10, 64); err == nil && sec > 0 {
		return time.Unix(sec, 0).UTC()
	}
	return time.Now().UTC().Truncate(time.Second)
}
