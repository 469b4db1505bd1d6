#!/usr/bin/env bash
# Linux boot benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), boots
# the same microVM Linux guest with fennec and with QEMU's microvm machine (QEMU's binary and
# firmware copied in), N times each, and prints medians and the ratio. With FENNEC_BASELINE set
# to another fennec binary (an earlier build), that one boots too, for a before-and-after.
# Where the time goes (each phase, its VM exits by reason): resources/bench/linux-profile.sh.
#   [FENNEC_BASELINE=PATH] resources/bench/linux-boot.sh [N]        (default 10)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-boot-run.sh" "$n" "$work"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
runs, boot, rss = {}, {}, {}
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCH":
        runs.setdefault(w[1], []).append(int(w[2]) * 10)
        fields = dict(f.split("=", 1) for f in w[3:])
        if "boot" in fields:
            boot.setdefault(w[1], []).append(float(fields["boot"]))
        if fields.get("rss"):
            rss.setdefault(w[1], []).append(int(fields["rss"]))
    elif w and w[0] == "BENCH-FAILED":
        sys.exit("a boot failed under " + w[1] + "; see the console")
if "fennec" not in runs or "qemu-microvm" not in runs:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
print("Linux guest (vmlinux, PVH) inside the test host, 256 MiB, 1 vCPU: start -> init -> reboot")
for vmm, ms in runs.items():
    print(f"{vmm:16} median {statistics.median(ms):6.0f} ms  (min {min(ms)}, max {max(ms)}, n={len(ms)})")
for vmm, kib in rss.items():
    print(f"{vmm:16} peak RSS {statistics.median(kib) / 1024:6.1f} MiB (guest memory it touched included)")
for vmm, ms in boot.items():
    print(f"{vmm:16} boot timer (process start -> init up): median {statistics.median(ms):.0f} ms (n={len(ms)})")
f, q = statistics.median(runs["fennec"]), statistics.median(runs["qemu-microvm"])
print(f"fennec/qemu-microvm: {f / q:.2f}")
if "fennec-baseline" in runs:
    b = statistics.median(runs["fennec-baseline"])
    print(f"fennec/fennec-baseline: {f / b:.2f} start to exit", end="")
    if "fennec" in boot and "fennec-baseline" in boot:
        now = statistics.median(boot["fennec"])
        before = statistics.median(boot["fennec-baseline"])
        print(f", {now / before:.2f} by the boot timer", end="")
    print()
' "$work/console"
