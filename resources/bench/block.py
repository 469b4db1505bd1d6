#!/usr/bin/env python3
"""Block benchmark: the tiny PVH kernel's virtio-blk driver under fennec and QEMU's microvm.

The guest (`tiny.mode=blkbench`, resources/tiny/virtio.c) reads the first `--mib` MiB of a raw
image sequentially in 1 MiB requests, writes it back the same way (then flushes), and does
2000 reads of 4 KiB at pseudo-random offsets, one request in flight, printing a line before and
after each phase. This program timestamps those lines as they arrive and reports, per VMM, the
median over `--runs` interleaved runs of sequential read and write throughput (MiB/s) and random
read IOPS, then fennec/QEMU ratios (above 1: fennec faster).

    resources/bench/block.py [--runs 5] [--mib 64] [--fennec target/x86_64-unknown-linux-gnu/release/fennec]

Both VMMs use the same image file, opened without O_DIRECT (QEMU: cache=writeback, its
default; fennec: buffered I/O with fdatasync on flush). QEMU's virtio-mmio is switched to the
modern (version 2) layout the tiny driver speaks. Needs /dev/kvm and qemu-system-x86_64.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinybench import add_vmm_args, build, ratios, with_unfiltered

PHASES = ("seqread", "seqwrite", "randread")
IOS = 2000


def run_once(argv):
    """Returns {phase: seconds}."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    stamps, buf = {}, b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        now = time.perf_counter()
        buf += chunk
        for phase in PHASES:
            for edge in ("start", "done"):
                key = f"TINY bench {phase} {edge}".encode()
                if (phase, edge) not in stamps and key in buf:
                    stamps[(phase, edge)] = now
    proc.wait()
    text = buf.decode(errors="replace")
    if proc.returncode != 0 or "TINY bench error" in text or len(stamps) != 2 * len(PHASES):
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}); output:\n{text}")
    return {p: stamps[(p, "done")] - stamps[(p, "start")] for p in PHASES}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64, help="MiB read and written per run")
    add_vmm_args(parser)
    args = parser.parse_args()
    kernel = build(args)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "bench.img"
        with open(image, "wb") as f:
            f.write(os.urandom(args.mib << 20))
        cmdline = f"console=ttyS0 tiny.mode=blkbench blkbench.mib={args.mib}"
        vmms = {
            "fennec": [args.fennec, "run", "--kernel", str(kernel), "--memory", "256",
                       "--cmdline", cmdline, "--disk", f"path={image}"],
            # acpi=off: microvm then lists its virtio-mmio devices on the command line.
            "qemu-microvm": [args.qemu, "-M", "microvm,acpi=off", "-enable-kvm",
                             "-cpu", "host,-arch-capabilities", "-m", "256", "-smp", "1",
                             "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
                             "-no-reboot", "-kernel", str(kernel), "-append", cmdline,
                             "-global", "virtio-mmio.force-legacy=false",
                             "-drive", f"id=d0,file={image},format=raw,if=none",
                             "-device", "virtio-blk-device,drive=d0"],
        }
        vmms = with_unfiltered(args, vmms)
        results = {name: [] for name in vmms}
        for _ in range(args.runs):
            for name, argv in vmms.items():
                results[name].append(run_once(argv))

    def rates(r):
        return (args.mib / r["seqread"], args.mib / r["seqwrite"], IOS / r["randread"])

    med = {name: [statistics.median(c) for c in zip(*map(rates, rows))]
           for name, rows in results.items()}
    print(f"{args.runs} runs each, tiny PVH kernel, {args.mib} MiB image, 1 request in flight")
    print(f"{'':16}{'seq read':>14}{'seq write':>14}{'4K rand read':>16}")
    for name, (r, w, iops) in med.items():
        print(f"{name:16}{r:>9.1f} MiB/s{w:>9.1f} MiB/s{iops:>11.0f} IOPS")
    for label, f, q in ratios(med):
        print(f"{label:16}{f[0] / q[0]:>14.2f}{f[1] / q[1]:>14.2f}{f[2] / q[2]:>16.2f}")


if __name__ == "__main__":
    main()
