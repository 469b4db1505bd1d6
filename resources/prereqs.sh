#!/usr/bin/env bash
# Installs the Debian packages fennec's test suite needs (as root), or names the missing ones and
# fails (otherwise). Run by resources/test.sh and .ci/run; safe to run again: a machine that has
# everything is not touched.
#   the tiny test kernels                  gcc make binutils
#   the guest kernel (Debian's source)     linux-source bc bison flex libelf-dev libssl-dev xz-utils
#   the guest initramfs and root disk      busybox-static cpio e2fsprogs
#   the test host (Linux tests here)       qemu-system-x86
#   namespaces, TAPs, the API tests        util-linux iproute2 curl
#   the ZFS image-store tests              zfs-fuse
#   the ACPI tables' tests (iasl -d)       acpica-tools
#   the stock Debian guest                 debootstrap
#   the fuzz targets (libFuzzer is C++)    g++
#   firecracker-python, for the drop-in    python3-venv (the library itself comes from PyPI)
set -euo pipefail
packages=(gcc make binutils linux-source bc bison flex libelf-dev libssl-dev xz-utils
    busybox-static cpio e2fsprogs qemu-system-x86 util-linux iproute2 curl zfs-fuse
    acpica-tools debootstrap g++ python3-venv)

missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "fennec's tests need these Debian packages: ${missing[*]}" >&2
    echo "install them as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
