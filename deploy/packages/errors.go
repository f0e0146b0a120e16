package main

import "errors"

var (
	// ErrUnknownPackage is returned when -package names a package that is
	// not built here.
	ErrUnknownPackage = errors.New("unknown package")
	// ErrUnknownArch is returned when -arch names an architecture that no
	// selected package supports.
	ErrUnknownArch = errors.New("unsupported architecture")
	// ErrBadVersion is returned when a version cannot be a Debian package
	// version.
	ErrBadVersion = errors.New("invalid package version")
	// ErrNoRoot is returned when the repository root cannot be found.
	ErrNoRoot = errors.New("repository root not found")
)
