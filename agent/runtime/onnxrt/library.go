//go:build cgo

package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/agent/runtime"
)

// env is ONNX Runtime's process-wide state: onnxruntime_go keeps one
// environment per process, bound to one library.
var env struct {
	mu      sync.Mutex
	path    string // library loaded, "" before
	version string
}

// load makes the library at path the process's ONNX Runtime, or confirms it
// already is. It never loads a second library next to a first.
func load(path string) (version string, err error) {
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.path != "" {
		if sameFile(env.path, path) {
			return env.version, nil
		}
		return "", fmt.Errorf("ONNX Runtime is already loaded from %s in this process; cannot also load %s (restart the agent to switch libraries)", env.path, path)
	}
	if ort.IsInitialized() {
		// Someone else in the process initialised onnxruntime_go.
		env.path, env.version = "(loaded by another package)", ort.GetVersion()
		return env.version, nil
	}
	version, err = probe(path)
	if err != nil {
		return version, err
	}
	ort.SetSharedLibraryPath(path)
	// Fatal only: ONNX Runtime's errors come back to the caller with the
	// run's error, and its own logging would go, coloured, to stderr.
	if err := ort.InitializeEnvironment(ort.WithLogLevelFatal()); err != nil {
		return version, fmt.Errorf("initialising ONNX Runtime %s from %s: %w", version, path, err)
	}
	env.path, env.version = path, version
	return version, nil
}

// loaded returns the library already loaded in this process, if any.
func loaded() (path, version string) {
	env.mu.Lock()
	defer env.mu.Unlock()
	return env.path, env.version
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// libraryNames are the file names ONNX Runtime installs as.
var libraryNames = []string{"libonnxruntime.so.1", "libonnxruntime.so"}

// systemCandidates lists the usual places of the library, existing files
// first, then bare sonames for the dynamic linker to find through its cache
// and LD_LIBRARY_PATH.
func systemCandidates() []string {
	dirs := []string{"/usr/local/lib", "/usr/lib"}
	if t := triplet(); t != "" {
		dirs = append(dirs, "/usr/local/lib/"+t, "/usr/lib/"+t)
	}
	dirs = append(dirs, "/usr/lib64", "/opt/onnxruntime/lib")
	var files []string
	for _, d := range dirs {
		for _, n := range libraryNames {
			p := filepath.Join(d, n)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				files = append(files, p)
			}
		}
	}
	return append(files, libraryNames...)
}

func triplet() string {
	switch goruntime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	}
	return ""
}

// resolve loads the library named by the settings, the environment or the
// system, in that order. A library named explicitly is the only one tried:
// silently using another than the one configured would hide a mistake.
func resolve(configured string) (path, version string, err error) {
	if configured != "" {
		v, err := load(configured)
		if err != nil {
			return "", "", fmt.Errorf("%w: %s=%s: %w", runtime.ErrUnavailable, SettingLibrary, configured, err)
		}
		return configured, v, nil
	}
	if p := os.Getenv(EnvLibrary); p != "" {
		v, err := load(p)
		if err != nil {
			return "", "", fmt.Errorf("%w: $%s=%s: %w", runtime.ErrUnavailable, EnvLibrary, p, err)
		}
		return p, v, nil
	}
	if p, v := loaded(); p != "" {
		return p, v, nil
	}
	var reasons []string
	for _, p := range systemCandidates() {
		v, err := load(p)
		if err == nil {
			return p, v, nil
		}
		reasons = append(reasons, err.Error())
	}
	return "", "", fmt.Errorf("%w: no usable ONNX Runtime library (set %q in the agent config or firmware profile, or $%s; deploy/onnxruntime/fetch.sh fetches one): %w",
		runtime.ErrUnavailable, SettingLibrary, EnvLibrary, errors.New(strings.Join(reasons, "; ")))
}
