#!/usr/bin/env python3
"""Boot benchmark: the same tiny PVH test kernel under fennec and under QEMU's microvm machine.

Runs each VMM N times (interleaved, so drift on the host hits both alike) and prints, per VMM,
the median time from process start to the kernel's "TINY ready" marker, to process exit, and the
median peak RSS, then fennec/QEMU ratios. The guest triple-faults after its report, which both
VMMs turn into an exit (QEMU through -no-reboot).

    resources/bench/boot.py [--runs 20] [--fennec target/release/fennec]

Needs /dev/kvm and qemu-system-x86_64 (Debian: apt-get install qemu-system-x86). Builds the tiny
kernels with resources/tiny/Makefile and fennec in release mode unless --fennec is given.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

from tinybench import build

MARKER = b"TINY ready"
CMDLINE = "tiny.mode=triple"


def run_once(argv):
    """Returns (seconds to marker, seconds to exit, peak RSS KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    seen, buf = None, b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if seen is None and MARKER in buf:
            seen = time.perf_counter() - start
    _, status, usage = os.wait4(proc.pid, 0)
    done = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if seen is None or proc.returncode != 0:
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}); output:\n{buf.decode(errors='replace')}")
    return seen, done, usage.ru_maxrss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--fennec", help="fennec binary (default: build target/release/fennec)")
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--memory", type=int, default=128, help="guest MiB")
    args = parser.parse_args()
    kernel = build(args)
    vmms = {
        "fennec": [args.fennec, "run", "--kernel", str(kernel), "--memory", str(args.memory),
                   "--cmdline", CMDLINE],
        # -cpu host minus arch-capabilities: some nested KVMs refuse that MSR.
        "qemu-microvm": [args.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                         "-m", str(args.memory), "-smp", "1", "-nodefaults", "-no-user-config",
                         "-nographic", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
                         "-append", CMDLINE],
    }
    results = {name: [] for name in vmms}
    for _ in range(args.runs):
        for name, argv in vmms.items():
            results[name].append(run_once(argv))

    med = {name: [statistics.median(col) for col in zip(*rows)] for name, rows in results.items()}
    print(f"{args.runs} runs each, tiny PVH kernel, {args.memory} MiB, 1 vCPU")
    print(f"{'':14}{'start→marker':>14}{'start→exit':>14}{'peak RSS':>12}")
    for name, (marker, done, rss) in med.items():
        print(f"{name:14}{marker * 1000:>11.1f} ms{done * 1000:>11.1f} ms{rss / 1024:>8.1f} MiB")
    f, q = med["fennec"], med["qemu-microvm"]
    print(f"{'fennec/qemu':14}{f[0] / q[0]:>14.2f}{f[1] / q[1]:>14.2f}{f[2] / q[2]:>12.2f}")


if __name__ == "__main__":
    main()
