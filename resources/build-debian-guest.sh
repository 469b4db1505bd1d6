#!/usr/bin/env bash
# Builds a stock Debian 12 guest from Debian's own packages, for the tests of distribution
# kernels: `debootstrap` of bookworm (systemd, udev, iproute2, ping) with Debian's cloud kernel
# installed in it, so initramfs-tools generates the initramfs Debian would. Nothing of fennec is
# in it but three small files:
#   - root logs in on the serial console without a password (the tests type commands there);
#   - /etc/fstab mounts /dev/vda as /;
#   - fennec-report.service, after multi-user.target, prints on the console
#       FENNEC-DEBIAN-READY uptime=<s> cpus=<n> disks=<names> ifaces=<names>
# Writes into the cache, keyed by this script and the mirror, a directory with vmlinuz,
# initrd.img (copied out of the image's /boot), rootfs.ext4 and kernel-version; prints its
# path. Takes a few minutes (the packages come from deb.debian.org); a second run is instant.
# Needs root.
#   FENNEC_CACHE          cache root (default ~/.cache/fennec)
#   FENNEC_DEBIAN_MIRROR  the mirror (default http://deb.debian.org/debian)
set -euo pipefail
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"
mirror="${FENNEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
[ "$(id -u)" -eq 0 ] || { echo "building the Debian guest needs root (debootstrap)" >&2; exit 1; }
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
command -v mkfs.ext4 >/dev/null || missing="$missing e2fsprogs"
if [ -n "$missing" ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Keyed by this script and the mirror: bookworm's packages change only at point releases, and a
# new recipe builds a new image. The kernel it got is in kernel-version.
key="$( (cat "$0"; echo "$mirror") | sha256sum | cut -c1-16)"
out="$cache/debian-guest-$key"
if [ -f "$out/rootfs.ext4" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ] \
    && [ -f "$out/kernel-version" ]; then
    echo "$out"
    exit 0
fi

work="$(mktemp -d "$cache/debian-guest-build.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache/debian-guest-build.XXXXXX"; })"
cleanup() {
    # debootstrap mounts /proc and /sys in the root it builds; never delete through a mount.
    for m in proc sys dev/pts dev; do
        mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m" || true
    done
    rm -rf "$work" "$out.tmp"
}
trap cleanup EXIT
root="$work/root"
echo "building the Debian guest in $work: debootstrap of bookworm from $mirror (a few minutes)" >&2
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,iproute2,iputils-ping,kmod,procps,e2fsprogs,initramfs-tools,linux-image-cloud-amd64 \
    bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
    tail -n 40 "$work/debootstrap.log" >&2
    echo "debootstrap failed (its log's end is above)" >&2
    exit 1
}

echo fennec-debian > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
cat > "$root/usr/local/sbin/fennec-report" <<'EOF'
#!/bin/sh
# What the guest found, on the console, once multi-user.target is reached.
uptime=$(cut -d' ' -f1 /proc/uptime)
cpus=$(nproc)
disks=$(lsblk -dno NAME 2>/dev/null | tr '\n' ',' || ls /sys/block | tr '\n' ',')
ifaces=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ',')
echo "FENNEC-DEBIAN-READY uptime=$uptime cpus=$cpus disks=${disks%,} ifaces=${ifaces%,}" > /dev/console
EOF
chmod 755 "$root/usr/local/sbin/fennec-report"
cat > "$root/etc/systemd/system/fennec-report.service" <<'EOF'
[Unit]
Description=Report what the guest found to fennec's tests
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fennec-report

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable fennec-report.service >/dev/null 2>&1
# Quiet and quick: no periodic jobs racing the tests.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    fstrim.timer >/dev/null 2>&1 || true

mkdir -p "$out.tmp"
cp -L "$root"/boot/vmlinuz-* "$out.tmp/vmlinuz"
cp -L "$root"/boot/initrd.img-* "$out.tmp/initrd.img"
basename "$root"/boot/vmlinuz-* | sed 's/^vmlinuz-//' > "$out.tmp/kernel-version"
# Smaller: what a running system does not need.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*.log
for m in proc sys dev/pts dev; do
    mountpoint -q "$root/$m" && umount -l "$root/$m" || true
done
# The files plus a quarter and 64 MiB free.
mib=$(( $(du -sm "$root" | cut -f1) * 5 / 4 + 64 ))
mkfs.ext4 -q -F -L debian-root -d "$root" "$out.tmp/rootfs.ext4" "${mib}M" >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
