#!/usr/bin/env bash
# Network host sides benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see
# README), the same microVM Linux guest moves 64 MiB each way over TCP (busybox nc) on fennec's
# three host sides (a TAP, a bridge, user mode through passt) and on QEMU microvm's bridge (a TAP
# on the bridge, as -netdev bridge's helper makes it) and -netdev stream to passt, N rounds;
# prints medians (MiB/s) and fennec against QEMU on the same host side (above 1: fennec faster).
#   resources/bench/linux-net-hosts.sh [N]       (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
command -v passt > /dev/null || { echo "needs passt: apt-get install passt" >&2; exit 1; }
PASST="$(command -v passt)" "$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-net-hosts-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs = {}
failed = []
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCHNET" and len(w) == 4:
        runs.setdefault(w[1], []).append((64 / max(int(w[2]), 1) * 100, 64 / max(int(w[3]), 1) * 100))
    elif w and w[0] in ("BENCH-FAILED", "BENCH-STALLED"):
        failed.append(line.strip())
    elif failed and not (w and w[0].startswith("BENCH")):
        failed.append("    " + line.rstrip())
if not runs:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest inside the test host: 64 MiB each way over TCP (busybox nc)")
med = {}
for side in ["fennec-tap", "fennec-bridge", "qemu-bridge", "fennec-user", "qemu-stream"]:
    rows = runs.get(side)
    if not rows:
        continue
    med[side] = [statistics.median(c) for c in zip(*rows)]
    print(f"{side:14} host->guest {med[side][0]:7.1f} MiB/s  guest->host {med[side][1]:7.1f} MiB/s  (n={len(rows)})")
for f, q in [("fennec-bridge", "qemu-bridge"), ("fennec-user", "qemu-stream")]:
    if f in med and q in med:
        print(f"{f}/{q}: host->guest {med[f][0] / med[q][0]:.2f}  guest->host {med[f][1] / med[q][1]:.2f}")
if failed:
    print("runs that did not finish or stalled:")
    print("\n".join(failed))
' "$work/console"
