#!/usr/bin/env bash
# Builds the guest initramfs (busybox-static and resources/guest/init, newc cpio) into the cache,
# keyed by its inputs. Prints the file's path on stdout.
#   FENNEC_CACHE  cache root (default ~/.cache/fennec)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"
need() { command -v "$1" >/dev/null || missing="$missing $2"; }
missing=""
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || missing="$missing busybox-static"
need cpio cpio
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "needs:$missing (apt-get install$missing)" >&2; exit 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi
bb_version="$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || /bin/busybox | head -n 1)"
agent="$("$here/build-guest-agent.sh")"
key="$( (cat "$here/guest/init" "$here/guest/tree.sh" "$0" "$agent"; echo "$bb_version") | sha256sum | cut -c1-16)"
out="$cache/guest-initramfs-$key.cpio"
if [ -f "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
. "$here/guest/tree.sh"
(cd "$root" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
