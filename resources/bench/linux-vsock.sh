#!/usr/bin/env bash
# Linux vsock benchmark: inside one test host (QEMU TCG with emulated AMD SVM, see README), the
# microVM Linux guest under fennec with a vsock device and a virtio-net interface on a TAP moves
# 64 MiB each way over vsock (fennec's Unix socket) and over TCP, fennec-agent on both ends and
# timed the same way, N times; and the host opens 100 vsock connections one after another to a guest
# listener. Prints medians: MiB/s each way for vsock and for virtio-net, their ratio (above 1:
# vsock faster), and the connection set-up time.
#   resources/bench/linux-vsock.sh [N]       (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-5}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
agent="$("$root/resources/build-guest-agent.sh")"
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-vsock-run.sh" "$n" "$work" \
    "fennec-agent=$agent"
tr -d '\r' < "$work/results" | python3 -c '
import statistics, sys
rows = []
failed = []
for line in sys.stdin:
    w = line.split()
    if w and w[0] == "BENCHVSOCK" and len(w) == 8:
        rows.append([int(x) for x in w[1:]])
    elif w and w[0] == "BENCH-FAILED":
        failed.append(line.strip())
if not rows:
    sys.exit("no results; the test host console ended with:\n" + open(sys.argv[1]).read()[-3000:])
mib = 64
med = [statistics.median(c) for c in zip(*rows)]
rate = lambda ms: mib / max(ms, 1) * 1000
print(f"Linux guest inside the test host under fennec: {mib} MiB each way (n={len(rows)})")
print(f"vsock       host->guest {rate(med[0]):7.1f} MiB/s  guest->host {rate(med[1]):7.1f} MiB/s")
print(f"virtio-net  host->guest {rate(med[2]):7.1f} MiB/s  guest->host {rate(med[3]):7.1f} MiB/s")
print(f"vsock/virtio-net: host->guest {med[2] / max(med[0], 1):.2f}  guest->host {med[3] / max(med[1], 1):.2f}")
print(f"vsock connection set-up (host CONNECT to OK): median {med[4]:.0f} us, slowest of 100 {med[5]:.0f} us (medians over runs)")
print(f"guest boot to ready: {med[6]:.0f} ms")
if failed:
    print("runs that did not finish:")
    print("\n".join(failed))
' "$work/console"
