#!/usr/bin/env bash
# Builds fennec's guest kernel (vmlinux with a PVH note, and bzImage) from Debian's linux-source
# with resources/guest/microvm.config on top of allnoconfig. The result is cached outside the repo,
# keyed by the fragment, this script and the linux-source package version: a second run is
# instant. Prints the output directory on stdout (everything else goes to stderr).
#   FENNEC_CACHE  cache root (default ~/.cache/fennec)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fragment="$here/guest/microvm.config"
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"

if ! ls /usr/src/linux-source-*.tar.* >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { echo "needs Debian's linux-source: apt-get install linux-source" >&2; exit 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        linux-source bc bison flex libelf-dev libssl-dev xz-utils make gcc >&2
fi
tarball="$(ls /usr/src/linux-source-*.tar.* | sort -V | tail -n 1)"
version="$(dpkg-query -W -f '${Version}' "$(basename "$tarball" | sed 's/\.tar\..*//')" 2>/dev/null || basename "$tarball")"
key="$( (cat "$fragment" "$0"; echo "$version") | sha256sum | cut -c1-16)"
out="$cache/guest-kernel-$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
    echo "$out"
    exit 0
fi

work="$cache/build-guest-kernel-$key"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work" "$out.tmp"' EXIT
echo "building the guest kernel from $tarball ($version) in $work" >&2
tar -xf "$tarball" -C "$work" --strip-components=1
cd "$work"
KCONFIG_ALLCONFIG="$fragment" make -s allnoconfig >&2
# Every option the fragment sets must have survived dependency resolution.
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=n) opt="${line%=n}"; grep -q "^$opt=" .config && { echo "unexpectedly set: $opt" >&2; missing=1; } ;;
        CONFIG_*) grep -qx "$line" .config || { echo "not set: $line" >&2; missing=1; } ;;
    esac
done < "$fragment"
[ "$missing" -eq 0 ] || { echo "the guest kernel config lost options (see above)" >&2; exit 1; }
make -s -j"$(nproc)" vmlinux bzImage >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
