#!/bin/sh
# fetch.sh: fetch the pinned ONNX Runtime shared library for this host (or
# ARCH=x64|arm64) from the npm package onnxruntime-node, verify its sha256
# and cache it in the repository's git-ignored .cache/onnxruntime/<version>/.
# Prints the library's path on stdout; progress goes to stderr.
#
#   deploy/onnxruntime/fetch.sh            # host architecture
#   ARCH=arm64 deploy/onnxruntime/fetch.sh # another one
#   EDGEFLEET_ONNXRUNTIME_LIB=$(deploy/onnxruntime/fetch.sh) go test ./agent/runtime/onnxrt/
#   deploy/onnxruntime/fetch.sh --print-path # the cached library's path, or exit 1; never downloads
#
# Why this version: github.com/yalue/onnxruntime_go v1.27.0 asks ONNX Runtime
# for C API version 24, which ONNX Runtime 1.24 introduced; older libraries
# refuse it. 1.24.3 is the newest 1.24 release, the closest to the 1.23.2
# that produced the reference outputs in ../shared/models.
set -eu

VERSION=1.24.3
# sha256 of bin/napi-v6/linux/<arch>/libonnxruntime.so.1 in onnxruntime-node-1.24.3.tgz
SHA256_x64=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
SHA256_arm64=33032cb5b91c12edbf028d7c69fa40a31848d66c0095448758af237d5e0b07db
# sha256 of the npm tarball itself, checked before anything is extracted.
SHA256_TGZ=aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040

die() { echo "fetch.sh: $*" >&2; exit 1; }

print_only=
case ${1:-} in
"") ;;
--print-path) print_only=1 ;;
-h | --help)
	sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
	exit 0
	;;
*) die "unknown argument $1 (usage: fetch.sh [--print-path])" ;;
esac

arch=${ARCH:-}
if [ -z "$arch" ]; then
	case $(uname -m) in
	x86_64 | amd64) arch=x64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) die "no ONNX Runtime build for $(uname -m) in onnxruntime-node; set ARCH=x64 or ARCH=arm64 to fetch another" ;;
	esac
fi
case $arch in
x64) want=$SHA256_x64 ;;
arm64) want=$SHA256_arm64 ;;
*) die "ARCH=$arch: want x64 or arm64" ;;
esac
[ "$(uname -s)" = Linux ] || [ -n "${ARCH:-}" ] || die "only Linux builds are fetched; set ARCH to fetch one anyway"

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/.cache/onnxruntime/$VERSION/linux-$arch
lib=$dir/libonnxruntime.so.1

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$lib" ] && [ "$(sha "$lib")" = "$want" ]; then
	echo "$lib"
	exit 0
fi
[ -z "$print_only" ] || die "ONNX Runtime $VERSION for linux-$arch is not cached in $dir; run ${ARCH:+ARCH=$ARCH }deploy/onnxruntime/fetch.sh"

command -v npm >/dev/null 2>&1 || die "npm is needed to fetch onnxruntime-node@$VERSION (or install ONNX Runtime $VERSION yourself and set EDGEFLEET_ONNXRUNTIME_LIB)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is needed"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
echo "fetch.sh: npm pack onnxruntime-node@$VERSION (about 86 MB)" >&2
(cd "$tmp" && npm pack --silent "onnxruntime-node@$VERSION" >/dev/null) || die "npm pack onnxruntime-node@$VERSION failed"
tgz=$tmp/onnxruntime-node-$VERSION.tgz
[ -f "$tgz" ] || die "npm pack did not produce $(basename "$tgz")"
got=$(sha "$tgz")
[ "$got" = "$SHA256_TGZ" ] || die "onnxruntime-node-$VERSION.tgz has sha256 $got, want $SHA256_TGZ; refusing it"
member=package/bin/napi-v6/linux/$arch/libonnxruntime.so.1
tar -xzf "$tgz" -C "$tmp" "$member" || die "$member is not in onnxruntime-node-$VERSION.tgz"
got=$(sha "$tmp/$member")
[ "$got" = "$want" ] || die "$member has sha256 $got, want $want; refusing it"

mkdir -p "$dir"
# Install under a temporary name and rename, so a concurrent or interrupted
# run never leaves a partial library where tests look for one.
cp "$tmp/$member" "$dir/.libonnxruntime.so.1.$$"
chmod 0644 "$dir/.libonnxruntime.so.1.$$"
mv -f "$dir/.libonnxruntime.so.1.$$" "$lib"
echo "fetch.sh: cached $lib" >&2
echo "$lib"
