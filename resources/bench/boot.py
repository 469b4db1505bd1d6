#!/usr/bin/env python3
"""Boot benchmark: the same tiny PVH test kernel under fennec and under QEMU's microvm machine.

Runs each VMM N times (interleaved, so drift on the host hits both alike) and prints, per VMM,
the median time from process start to the kernel's "TINY ready" marker, to process exit, and the
median peak RSS, then fennec/QEMU ratios. The guest triple-faults after its report, which both
VMMs turn into an exit (QEMU through -no-reboot).

    resources/bench/boot.py [--runs 20] [--fennec target/x86_64-unknown-linux-gnu/release/fennec]

Needs /dev/kvm, qemu-system-x86_64 and GNU time (Debian: apt-get install qemu-system-x86 time).
Builds the tiny kernels with resources/tiny/Makefile and fennec in release mode unless --fennec
is given.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tinybench import add_vmm_args, build, ratios, with_unfiltered

MARKER = b"TINY ready"
CMDLINE = "tiny.mode=triple"


def peak_rss(argv):
    """The VMM's peak RSS in KiB, as GNU time reports it. Not from this process's wait4: a child
    of Python starts as a copy of it, and the kernel keeps that copy's high-water mark across the
    exec; GNU time's own is smaller than any VMM's."""
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + argv, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return int(out.read().split()[-1])


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
    _, status, _ = os.wait4(proc.pid, 0)
    done = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if seen is None or proc.returncode != 0:
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}); output:\n{buf.decode(errors='replace')}")
    return seen, done, peak_rss(argv)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    add_vmm_args(parser)
    parser.add_argument("--memory", type=int, default=128, help="guest MiB")
    args = parser.parse_args()
    if not os.path.exists("/usr/bin/time"):
        sys.exit("needs GNU time for the peak RSS: apt-get install time")
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
    vmms = with_unfiltered(args, vmms)
    results = {name: [] for name in vmms}
    for _ in range(args.runs):
        for name, argv in vmms.items():
            results[name].append(run_once(argv))

    med = {name: [statistics.median(col) for col in zip(*rows)] for name, rows in results.items()}
    print(f"{args.runs} runs each, tiny PVH kernel, {args.memory} MiB, 1 vCPU")
    print(f"{'':16}{'start→marker':>14}{'start→exit':>14}{'peak RSS':>12}")
    for name, (marker, done, rss) in med.items():
        print(f"{name:16}{marker * 1000:>11.1f} ms{done * 1000:>11.1f} ms{rss / 1024:>8.1f} MiB")
    for label, f, q in ratios(med):
        print(f"{label:16}{f[0] / q[0]:>14.2f}{f[1] / q[1]:>14.2f}{f[2] / q[2]:>12.2f}")


if __name__ == "__main__":
    main()
