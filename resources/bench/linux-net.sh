#!/usr/bin/env bash
# Linux network benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), the
# same microVM Linux guest moves 64 MiB each way over TCP (busybox nc) through a virtio-net
# device on a TAP, under fennec and under QEMU microvm (virtio-net-device on the same TAP,
# userspace virtio, binary and firmware copied in), N times each; prints medians (MiB/s) and
# ratios (above 1: fennec faster).
#   resources/bench/linux-net.sh [N]       (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-net-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs = {}
failed = []
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCHNET" and len(w) == 4:
        runs.setdefault(w[1], []).append((64 / max(int(w[2]), 1) * 100, 64 / max(int(w[3]), 1) * 100))
    elif w and w[0] == "BENCH-FAILED":
        failed.append(line.strip())
    elif failed and not (w and w[0].startswith("BENCH")):
        failed.append("    " + line.rstrip())
if len(runs) != 2:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest inside the test host: 64 MiB each way over TCP (busybox nc), virtio-net on a TAP")
med = {}
for vmm, rows in runs.items():
    med[vmm] = [statistics.median(c) for c in zip(*rows)]
    print(f"{vmm:14} host->guest {med[vmm][0]:7.1f} MiB/s  guest->host {med[vmm][1]:7.1f} MiB/s  (n={len(rows)})")
f, q = med["fennec"], med["qemu-microvm"]
print(f"fennec/qemu-microvm: host->guest {f[0] / q[0]:.2f}  guest->host {f[1] / q[1]:.2f}")
if failed:
    print("runs that did not finish (stopped after 240 s):")
    print("\n".join(failed))
' "$work/console"
