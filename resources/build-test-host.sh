#!/usr/bin/env bash
# Builds the test host: Debian's cloud kernel with its KVM (AMD) and networking modules, and an
# initramfs with busybox, an init script, the guest artifacts and the given entries; the kernel's
# System.map beside them.
#   build-test-host.sh OUT_DIR INIT GUEST_DIR NAME=PATH...
# Each NAME=PATH is copied to /fennec/NAME: an ELF program with its shared libraries (into
# /fennec/lib, for LD_LIBRARY_PATH; the loader goes to /lib64), any other file as it is, a
# directory recursively. Writes OUT_DIR/vmlinuz, OUT_DIR/System.map and OUT_DIR/initramfs.cpio.
# The kernel package is cached, keyed by its version, under FENNEC_CACHE (default
# ~/.cache/fennec); the initramfs is rebuilt every time, since it holds the binaries under test.
set -euo pipefail
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
[ $# -ge 3 ] || { sed -n "2,11p" "$0" >&2; exit 2; }
out="$1"; init="$2"; guest="$3"; shift 3
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"

missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
command -v cpio >/dev/null || missing="$missing cpio"
[ -x /bin/busybox ] || missing="$missing busybox-static"
command -v strip >/dev/null || missing="$missing binutils"
command -v cc >/dev/null || missing="$missing gcc libc6-dev"
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "needs:$missing (apt-get install$missing)" >&2; exit 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

# The cloud kernel: the package linux-image-cloud-amd64 points at.
pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')"
if [ -z "$pkg" ]; then
    apt-get update -qq >&2
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
fi
version="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
key="$( (cat "$0"; echo "$pkg $version") | sha256sum | cut -c1-16)"
kdir="$cache/test-host-kernel-$key"
if [ ! -f "$kdir/vmlinuz" ]; then
    tmp="$(mktemp -d)"
    cleanup+=("$tmp")
    (cd "$tmp" && apt-get download "$pkg" >&2)
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mkdir -p "$kdir.tmp/modules"
    cp "$tmp"/x/boot/vmlinuz-* "$kdir.tmp/vmlinuz"
    # Its symbols, to name where a frozen test host's CPUs are (QEMU's monitor gives addresses);
    # Debian ships a stub, the real table is in the -dbg package.
    cp "$tmp"/x/boot/System.map-* "$kdir.tmp/System.map"
    for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd drivers/net/tun drivers/net/veth \
        fs/fuse/fuse net/llc/llc net/802/stp net/bridge/bridge; do
        cp "$tmp/x/lib/modules/"*/kernel/$m.ko "$kdir.tmp/modules/"
    done
    rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
fi

mkdir -p "$out"
root="$(mktemp -d)"
cleanup+=("$root")
# (zfs-fuse exits at once, saying nothing, without /var/lock and /var/lib for its files.)
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,root,lib64,fennec/lib,guest,modules,etc/zfs,var/run,var/lock,var/lib}
# (mktemp made the root 0700: an unprivileged test's fennec and passt must get through it.)
chmod 755 "$root"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$init" "$root/init"
chmod 755 "$root/init"
# The init's helper, next to it in the source tree.
cc -O2 -Wall -static -o "$root/fennec/kvm-anchor" "$(dirname "$init")/kvm-anchor.c"
cp "$kdir"/modules/*.ko "$root/modules/"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for entry in "$@"; do
    name="${entry%%=*}"; path="${entry#*=}"
    if [ -d "$path" ]; then
        cp -rL "$path" "$root/fennec/$name"
    elif head -c 4 "$path" | grep -q ELF; then
        cp "$path" "$root/fennec/$name"
        strip --strip-debug "$root/fennec/$name"
        # (A static program, fennec's own, has none: ldd says so and fails.)
        { ldd "$path" 2>/dev/null || true; } | awk '/=> \// {print $3}' | while read -r lib; do
            cp -Ln "$lib" "$root/fennec/lib/"
        done
    else
        cp "$path" "$root/fennec/$name"
    fi
done
# glibc loads libgcc_s when a thread is cancelled or unwinds (zfs-fuse's do); ldd does not
# list it.
cp -L "$(gcc -print-file-name=libgcc_s.so.1)" "$root/fennec/lib/"
cp -L "$guest"/* "$root/guest/"
(cd "$root" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) > "$out/initramfs.cpio.tmp"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
cp "$kdir/vmlinuz" "$out/vmlinuz"
cp "$kdir/System.map" "$out/System.map"
echo "$out"
