#!/usr/bin/env bash
# Installs what `make test` needs on a Debian machine with Go:
#   - Debian packages (mosquitto for the external-broker tests; chromium for the
#     console's browser tests) when running as root; otherwise it prints the
#     command and the tests that need them skip;
#   - pinned downloads (ONNX Runtime's shared library) into the git-ignored .cache/;
#   - SeaweedFS's `weed` (a real S3-compatible server for the artifact-store
#     tests), built from its pinned Go module once per machine into
#     ~/.cache/edgefleet/ (about 3.5 minutes and 2.6 GB of memory the first
#     time; EDGEFLEET_SKIP_WEED=1 skips it and those tests skip).
# It is idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

want=(mosquitto chromium)
missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "test-deps: installing Debian packages: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# Services must not start on install: the tests start their own
		# mosquitto on free loopback ports, and port 1883 belongs to `make run`.
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		if pgrep -x mosquitto >/dev/null && command -v systemctl >/dev/null; then
			systemctl disable --now mosquitto >/dev/null 2>&1 || true
		fi
	else
		echo "test-deps: not root; tests needing ${missing[*]} will skip. Install with:"
		echo "  sudo apt-get install -y ${missing[*]}"
	fi
fi

if [ -x deploy/onnxruntime/fetch.sh ]; then
	deploy/onnxruntime/fetch.sh >/dev/null || echo "test-deps: could not fetch ONNX Runtime; its tests will skip"
fi

# SeaweedFS: `go install` cannot build it (its go.mod has replace directives),
# so build inside a copy of the module source. The copy sits at a fixed path
# outside the repo so Go's build cache serves later builds, and the binary is
# kept per machine: a fresh clone (CI) does not pay the build again.
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
weed_dir=${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet/weed-$WEED_VERSION
if [ -z "${EDGEFLEET_SKIP_WEED:-}" ] && [ ! -x "$weed_dir/weed" ]; then
	if [ -x .cache/weed/weed ] && .cache/weed/weed version 2>/dev/null | grep -q 4.53; then
		mkdir -p "$weed_dir" && cp .cache/weed/weed "$weed_dir/weed.tmp" && mv "$weed_dir/weed.tmp" "$weed_dir/weed"
	else
		echo "test-deps: building SeaweedFS weed $WEED_VERSION for the S3 tests (once per machine, ~3.5 min)"
		modcache=$(go env GOMODCACHE)
		(cd / && GOFLAGS=-mod=mod go mod download "github.com/seaweedfs/seaweedfs@$WEED_VERSION")
		rm -rf "$weed_dir/src" && mkdir -p "$weed_dir"
		cp -r "$modcache/github.com/seaweedfs/seaweedfs@$WEED_VERSION" "$weed_dir/src"
		chmod -R u+w "$weed_dir/src"
		if (cd "$weed_dir/src" && go build -o "$weed_dir/weed.tmp" ./weed) >"$weed_dir/build.log" 2>&1; then
			mv "$weed_dir/weed.tmp" "$weed_dir/weed"
		else
			echo "test-deps: building weed failed (see $weed_dir/build.log); the S3 tests will skip"
		fi
	fi
fi
