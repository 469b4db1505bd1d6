#!/usr/bin/env bash
# Stock Debian boot benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README),
# boots the Debian 12 guest of resources/build-debian-guest.sh (Debian's cloud kernel and
# initramfs, root on virtio-blk, 2 vCPUs, 512 MiB) N times each under fennec, QEMU's microvm
# machine with ACPI (virtio-mmio) and QEMU's q35 machine (SeaBIOS, virtio-pci), alternating,
# and prints medians and ratios of the time to systemd's multi-user.target: as the guest's
# report unit timestamps it (kernel uptime) and as seen from outside (VMM start to the report).
#   resources/bench/debian-boot.sh [N]        (default 5; needs root the first time)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
debian="$("$root/resources/build-debian-guest.sh")"
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/debian-boot-run.sh" "$n" "$work" \
    "debian-vmlinuz=$debian/vmlinuz" "debian-initrd.img=$debian/initrd.img" \
    "debian-rootfs.ext4=$debian/rootfs.ext4"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
guest, outside, failed = {}, {}, []
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCH":
        guest.setdefault(w[1], []).append(float(w[2]))
        outside.setdefault(w[1], []).append(int(w[3]) / 100)
    elif w and w[0] == "BENCH-FAILED":
        failed.append(w[1])
if failed:
    print("boots that did not reach multi-user.target: " + ", ".join(failed))
if "fennec" not in guest:
    sys.exit("no fennec results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Debian 12 (cloud kernel, its initramfs, systemd) inside the test host, 2 vCPUs, 512 MiB:")
print("seconds to multi-user.target, guest uptime at the report / VMM start to the report")
for vmm in guest:
    g, o = guest[vmm], outside[vmm]
    print(f"{vmm:14} median {statistics.median(g):6.2f} s / {statistics.median(o):6.2f} s"
          f"  (uptime min {min(g):.2f}, max {max(g):.2f}, n={len(g)})")
fg, fo = statistics.median(guest["fennec"]), statistics.median(outside["fennec"])
for other in [v for v in guest if v != "fennec"]:
    rg = fg / statistics.median(guest[other])
    ro = fo / statistics.median(outside[other])
    print(f"fennec/{other}: {rg:.2f} (uptime), {ro:.2f} (outside)")
' "$work/console"
