#!/usr/bin/env bash
# Linux boot benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), boots
# the same microVM Linux guest with fennec and with QEMU's microvm machine (QEMU's binary and
# firmware copied in), N times each, and prints medians and the ratio.
#   resources/bench/linux-boot.sh [N]        (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
kernel="$("$root/resources/build-guest-kernel.sh")"
initramfs="$("$root/resources/build-guest-initramfs.sh")"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/guest"
ln -s "$kernel/vmlinux" "$work/guest/vmlinux"
ln -s "$initramfs" "$work/guest/initramfs.cpio"
sed "s/^n=.*/n=$n/" "$root/resources/bench/linux-boot-run.sh" > "$work/run"
chmod +x "$work/run"
"$root/resources/build-test-host.sh" "$work/host" "$root/resources/test-host/init" "$work/guest" \
    "fennec=$root/target/release/fennec" "qemu-system-x86_64=$(command -v qemu-system-x86_64)" \
    "qemu-share=/usr/share/qemu" "run=$work/run" > /dev/null
echo "booting the test host; $n boots of each VMM follow" >&2
timeout 3600 qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m 3072 -M q35 -cpu EPYC,+svm \
    -nodefaults -no-user-config -nographic -monitor none -serial "file:$work/console" \
    -serial "file:$work/results" -kernel "$work/host/vmlinuz" -initrd "$work/host/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" -no-reboot < /dev/null
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCH":
        runs.setdefault(w[1], []).append(int(w[2]) * 10)
    elif w and w[0] == "BENCH-FAILED":
        sys.exit("a boot failed under " + w[1] + "; see the console")
if len(runs) != 2:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest (vmlinux, PVH) inside the test host, 256 MiB, 1 vCPU: start -> init -> reboot")
for vmm, ms in runs.items():
    print(f"{vmm:14} median {statistics.median(ms):6.0f} ms  (min {min(ms)}, max {max(ms)}, n={len(ms)})")
f, q = statistics.median(runs["fennec"]), statistics.median(runs["qemu-microvm"])
print(f"fennec/qemu-microvm: {f / q:.2f}")
' "$work/console"
