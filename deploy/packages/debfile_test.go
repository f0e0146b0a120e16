package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
)

// debFile is a .deb read back the way dpkg reads it: an ar archive of
// debian-binary, control.tar.* and data.tar.*, in that order.
type debFile struct {
	Members []string          // ar member names in order
	Control map[string]string // control field → value (continuation lines joined by \n)
	Meta    map[string]tarFile
	Data    map[string]tarFile // path without the leading "." → entry
}

type tarFile struct {
	Mode  int64
	Uname string
	Gname string
	Type  byte
	Body  []byte
}

func readDeb(t *testing.T, path string) *debFile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	members, err := parseAr(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	d := &debFile{}
	for _, m := range members {
		d.Members = append(d.Members, m.name)
	}
	get := func(name string) []byte {
		for _, m := range members {
			if m.name == name {
				return m.body
			}
		}
		t.Fatalf("%s: no ar member %q (have %q)", path, name, d.Members)
		return nil
	}
	if d.Meta, err = readTarGz(get("control.tar.gz")); err != nil {
		t.Fatalf("%s: control.tar.gz: %v", path, err)
	}
	if d.Data, err = readTarGz(get("data.tar.gz")); err != nil {
		t.Fatalf("%s: data.tar.gz: %v", path, err)
	}
	ctl, ok := d.Meta["/control"]
	if !ok {
		t.Fatalf("%s: control.tar.gz has no control file", path)
	}
	d.Control = parseControl(string(ctl.Body))
	return d
}

type arMember struct {
	name string
	body []byte
}

// parseAr reads the common ar format dpkg uses: a global header, then per
// member a 60-byte header (name 16, mtime 12, uid 6, gid 6, mode 8, size 10,
// magic "`\n") and the body padded to an even length.
func parseAr(b []byte) ([]arMember, error) {
	const magic = "!<arch>\n"
	if !bytes.HasPrefix(b, []byte(magic)) {
		return nil, fmt.Errorf("not an ar archive")
	}
	b = b[len(magic):]
	var out []arMember
	for len(b) > 0 {
		if len(b) < 60 {
			return nil, fmt.Errorf("truncated ar header after %d members", len(out))
		}
		h := b[:60]
		if string(h[58:60]) != "`\n" {
			return nil, fmt.Errorf("bad ar header magic in member %d", len(out))
		}
		size, err := strconv.ParseInt(strings.TrimSpace(string(h[48:58])), 10, 64)
		if err != nil || size < 0 || size > int64(len(b)-60) {
			return nil, fmt.Errorf("bad ar member size %q", h[48:58])
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(h[:16])), "/")
		out = append(out, arMember{name: name, body: b[60 : 60+size]})
		b = b[60+size:]
		if size%2 == 1 && len(b) > 0 {
			b = b[1:]
		}
	}
	return out, nil
}

func readTarGz(b []byte) (map[string]tarFile, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	out := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "."), "/")
		out[name] = tarFile{Mode: h.Mode & 0o7777, Uname: h.Uname, Gname: h.Gname, Type: h.Typeflag, Body: body}
	}
}

// parseControl reads an RFC 822-style control file; continuation lines of
// a field (Description) are kept with their newline.
func parseControl(s string) map[string]string {
	out := map[string]string{}
	var last string
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.HasPrefix(line, " ") && last != "" {
			out[last] += "\n" + strings.TrimPrefix(line, " ")
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = k
		out[k] = strings.TrimSpace(v)
	}
	return out
}
