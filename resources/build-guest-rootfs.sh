#!/usr/bin/env bash
# Builds the guest's ext4 root filesystem (busybox-static and resources/guest/init, 32 MiB, made
# with `mkfs.ext4 -d`, no mount needed) into the cache, keyed by its inputs. Prints its path.
# Boot it with `--disk path=COPY,root` and `init=/init` on the command line; use a copy, since
# the guest writes to it.
#   FENNEC_CACHE  cache root (default ~/.cache/fennec)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"
missing=""
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || missing="$missing busybox-static"
command -v mkfs.ext4 >/dev/null || missing="$missing e2fsprogs"
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "needs:$missing (apt-get install$missing)" >&2; exit 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi
bb_version="$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || /bin/busybox | head -n 1)"
e2_version="$(dpkg-query -W -f '${Version}' e2fsprogs 2>/dev/null || echo unknown)"
agent="$("$here/build-guest-agent.sh")"
key="$( (cat "$here/guest/init" "$here/guest/tree.sh" "$0" "$agent"; echo "$bb_version $e2_version") | sha256sum | cut -c1-16)"
out="$cache/guest-rootfs-$key.ext4"
if [ -f "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
. "$here/guest/tree.sh"
rm -f "$out.tmp"
mkfs.ext4 -q -F -L fennec-root -E root_owner=0:0 -d "$root" "$out.tmp" 32M >&2
mv "$out.tmp" "$out"
echo "$out"
