#!/usr/bin/env bash
# Linux restore benchmark: inside one test host (see README), the microVM Linux guest booted
# cold (start to its init's ready marker) and restored from a snapshot taken at its shell
# prompt (start to the answer of a command typed at start), N times each, alternating; prints
# the medians and the ratio.
#   resources/bench/linux-restore.sh [N]        (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-restore-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCH":
        runs.setdefault(w[1], []).append(int(w[2]) * 10)
    elif w and w[0] == "BENCH-FAILED":
        sys.exit("a run failed: " + " ".join(w[1:]) + "; see the console")
if "boot" not in runs or "restore" not in runs:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest (vmlinux, PVH, 256 MiB, 1 vCPU) inside the test host")
for what, ms in runs.items():
    print(f"{what:8} median {statistics.median(ms):6.0f} ms  (min {min(ms)}, max {max(ms)}, n={len(ms)})")
b, r = statistics.median(runs["boot"]), statistics.median(runs["restore"])
print(f"restore/boot: {r / b:.2f}")
' "$work/console"
