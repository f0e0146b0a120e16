package update

import "errors"

var (
	// ErrConfig is returned by New when the configuration is unusable; the
	// message names the setting.
	ErrConfig = errors.New("bad update configuration")
	// ErrManifest is returned when a desired model's manifest does not
	// verify with the pinned fleet key or names other bytes than the
	// desired model does.
	ErrManifest = errors.New("desired model manifest rejected")
	// ErrIncompatible is returned when the device lacks the backend or
	// format a variant needs.
	ErrIncompatible = errors.New("model variant incompatible with this device")
	// ErrDiskSpace is returned when the state directory's file system lacks
	// room for a download; the message names what is needed and free.
	ErrDiskSpace = errors.New("not enough free disk space for the download")
	// ErrTooLarge is returned when an artifact is over the configured cap.
	ErrTooLarge = errors.New("artifact over the size limit")
	// ErrDownload is returned when an artifact could not be downloaded
	// within the retry budget.
	ErrDownload = errors.New("artifact download failed")
	// ErrSelfTest is returned when a loaded model does not answer its
	// sample input with the expected output.
	ErrSelfTest = errors.New("model self-test failed")
	// ErrHealth is returned when a new version breaches the health window.
	ErrHealth = errors.New("health window breached")
	// ErrSuperseded is returned when a newer desired generation replaced
	// the one being applied.
	ErrSuperseded = errors.New("superseded by a newer desired generation")
)
