#!/usr/bin/env bash
# Installs what `make test` needs on a Debian machine with Go:
#   - Debian packages (mosquitto for the external-broker tests; chromium for the
#     console's browser tests) when running as root; otherwise it prints the
#     command and the tests that need them skip;
#   - pinned downloads (ONNX Runtime's shared library) into the git-ignored .cache/.
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
