#!/usr/bin/env bash
# Installs the Debian packages fennec's test suite needs (as root), or names the missing ones and
# fails (otherwise). Run by resources/test.sh and .ci/run; safe to run again: a machine that has
# everything is not touched.
#   the tiny test kernels                  gcc make binutils
#   the guest kernel (Debian's source)     linux-source bc bison flex libelf-dev libssl-dev xz-utils
#   the guest initramfs and root disk      busybox-static cpio e2fsprogs
#   the test host (Linux tests here)       qemu-system-x86, 10.0 or later: Debian 12 ships 7.2,
#                                          so it comes from Debian's bookworm-backports suite,
#                                          added to the apt sources when missing (why: README,
#                                          Known problems)
#   namespaces, TAPs, the API tests        util-linux iproute2 curl
#   the ZFS image-store tests              zfs-fuse
#   user-mode networking (--net user)      passt
#   the ACPI tables' tests (iasl -d)       acpica-tools
#   the stock Debian guest                 debootstrap
#   the fuzz targets (libFuzzer is C++)    g++
#   firecracker-python, for the drop-in    python3-venv (the library itself comes from PyPI)
set -euo pipefail
packages=(gcc make binutils linux-source bc bison flex libelf-dev libssl-dev xz-utils
    busybox-static cpio e2fsprogs qemu-system-x86 util-linux iproute2 curl zfs-fuse
    acpica-tools debootstrap g++ python3-venv passt)

qemu_min="1:10.0"
backports=/etc/apt/sources.list.d/fennec-backports.sources

missing=()
for p in "${packages[@]}"; do
    status="$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
qemu_version="$(dpkg-query -W -f '${Version}' qemu-system-x86 2>/dev/null || true)"
old_qemu=""
if ! dpkg --compare-versions "${qemu_version:-0}" ge "$qemu_min"; then
    old_qemu="${qemu_version:-none}"
fi
[ ${#missing[@]} -eq 0 ] && [ -z "$old_qemu" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    [ ${#missing[@]} -eq 0 ] || {
        echo "fennec's tests need these Debian packages: ${missing[*]}" >&2
        echo "install them as root: apt-get install ${missing[*]}" >&2
    }
    [ -z "$old_qemu" ] || {
        echo "the test host needs qemu-system-x86 $qemu_min or later (installed: $old_qemu):" >&2
        echo "as root, add Debian's bookworm-backports suite to the apt sources and run" >&2
        echo "apt-get install -t bookworm-backports qemu-system-x86 (or run this script)" >&2
    }
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# QEMU from bookworm-backports: the suite is added unless the apt sources name it already.
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "adding Debian's bookworm-backports suite ($backports) for QEMU" >&2
    cat > "$backports" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
apt-get update -qq >&2
others=()
for p in "${missing[@]}"; do [ "$p" = qemu-system-x86 ] || others+=("$p"); done
if [ ${#others[@]} -gt 0 ]; then
    echo "installing ${others[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${others[@]}" >/dev/null
fi
if [ -n "$old_qemu" ]; then
    echo "installing qemu-system-x86 from bookworm-backports (the system's: $old_qemu)" >&2
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 \
        >/dev/null
fi
qemu_version="$(dpkg-query -W -f '${Version}' qemu-system-x86)"
if ! dpkg --compare-versions "$qemu_version" ge "$qemu_min"; then
    echo "qemu-system-x86 is still $qemu_version after installing from bookworm-backports" >&2
    exit 1
fi
