package store

import "errors"

var (
	// ErrNotFound is returned when a device (or another record) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLocked is returned by Open when another process holds the database
	// file, typically a second server started on the same data dir.
	ErrLocked = errors.New("database is in use by another process")
	// ErrSchemaTooNew is returned by Open when the database was written by a
	// newer build whose schema this build does not know.
	ErrSchemaTooNew = errors.New("database schema is newer than this build")
	// ErrTooManyDevices is returned when storing a new device would exceed
	// Options.MaxDevices.
	ErrTooManyDevices = errors.New("device limit reached")
	// ErrClosed is returned when the store is used after Close.
	ErrClosed = errors.New("store closed")
)
