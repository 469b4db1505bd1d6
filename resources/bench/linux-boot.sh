#!/usr/bin/env bash
# Linux boot benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), boots
# the same microVM Linux guest with fennec and with QEMU's microvm machine (QEMU's binary and
# firmware copied in), N times each, and prints medians and the ratio.
#   resources/bench/linux-boot.sh [N]        (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-boot-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs, boot = {}, []
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCH":
        runs.setdefault(w[1], []).append(int(w[2]) * 10)
        if len(w) > 3:
            boot.append(float(w[3]))
    elif w and w[0] == "BENCH-FAILED":
        sys.exit("a boot failed under " + w[1] + "; see the console")
if len(runs) != 2:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest (vmlinux, PVH) inside the test host, 256 MiB, 1 vCPU: start -> init -> reboot")
for vmm, ms in runs.items():
    print(f"{vmm:14} median {statistics.median(ms):6.0f} ms  (min {min(ms)}, max {max(ms)}, n={len(ms)})")
if boot:
    print(f"fennec boot timer (process start -> init up): median {statistics.median(boot):.0f} ms (n={len(boot)})")
f, q = statistics.median(runs["fennec"]), statistics.median(runs["qemu-microvm"])
print(f"fennec/qemu-microvm: {f / q:.2f}")
' "$work/console"
