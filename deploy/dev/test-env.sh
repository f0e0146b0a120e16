# Sourced by `make test` and `make bench`: points the tests at what
# install-test-deps.sh fetched. Nothing here is required; tests skip, with the
# command to run, when something is absent.
if [ -z "${EDGEFLEET_ONNXRUNTIME_LIB:-}" ] && [ -x deploy/onnxruntime/fetch.sh ]; then
	if lib=$(deploy/onnxruntime/fetch.sh --print-path 2>/dev/null) && [ -n "$lib" ]; then
		export EDGEFLEET_ONNXRUNTIME_LIB="$lib"
	fi
fi
weed=${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet/weed-v0.0.0-20261109003541-7506e5f91cd6/weed
if [ -z "${EDGEFLEET_WEED:-}" ] && [ -x "$weed" ]; then
	export EDGEFLEET_WEED="$weed"
fi
unset weed
