// Package storetest opens fleet stores for tests: in a temporary directory,
// with an integrity check of the whole file when the test ends.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/fleet/store"
)

// Open opens a new store in t.TempDir(). At cleanup it closes the store,
// reopens the file and fails the test if bbolt's consistency check finds
// anything wrong.
func Open(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fleet.db")
	s, err := store.Open(path, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { CheckFile(t, s) })
	return s
}

// CheckFile closes s (if still open), reopens its file and runs the
// integrity check, failing t on any problem.
func CheckFile(t testing.TB, s *store.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Errorf("close store: %v", err)
	}
	s2, err := store.Open(s.Path(), store.Options{})
	if err != nil {
		t.Errorf("reopen store for the integrity check: %v", err)
		return
	}
	defer s2.Close()
	if err := s2.Check(); err != nil {
		t.Errorf("store integrity check failed: %v", err)
	}
}
