#!/usr/bin/env bash
# Linux block benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), the
# same microVM Linux guest reads and writes a 128 MiB virtio-blk disk with dd (1 MiB, direct)
# under fennec and under QEMU microvm (binary and firmware copied in), N times each; prints
# medians (MiB/s) and ratios. Random 4 KiB IOPS are measured by resources/bench/block.py.
#   resources/bench/linux-block.sh [N]       (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-block-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCHIO" and len(w) == 4:
        runs.setdefault(w[1], []).append((128 / max(int(w[2]), 1) * 100, 128 / max(int(w[3]), 1) * 100))
    elif w and w[0] == "BENCH-FAILED":
        sys.exit("a run failed under " + w[1] + "; see the console")
if len(runs) != 2:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest inside the test host: dd of a 128 MiB virtio-blk disk, 1 MiB blocks, O_DIRECT")
med = {}
for vmm, rows in runs.items():
    med[vmm] = [statistics.median(c) for c in zip(*rows)]
    print(f"{vmm:14} read {med[vmm][0]:7.1f} MiB/s  write {med[vmm][1]:7.1f} MiB/s  (n={len(rows)})")
f, q = med["fennec"], med["qemu-microvm"]
print(f"fennec/qemu-microvm: read {f[0] / q[0]:.2f}  write {f[1] / q[1]:.2f}")
' "$work/console"
