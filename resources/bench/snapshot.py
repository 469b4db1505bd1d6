#!/usr/bin/env python3
"""Snapshot benchmark: the tiny echo guest restored from a snapshot against the same guest
booted cold, side by side in one run, and the memory three restored clones share.

For each of N rounds (interleaved, so drift on the host hits both alike) it times, from process
start, how long until the guest answers: a byte typed at once comes back echoed.
  boot     fennec run --kernel pvh.elf (tiny.mode=echo): the guest's whole boot first
  restore  fennec run --restore DIR: the same guest, snapshotted once while it waited for input
and prints the medians and their ratio. Then it restores three clones at once, waits until each
counts, and reads /proc/PID/smaps_rollup: each clone's RSS and PSS, and how much of the three
RSS is shared (guest memory mapped MAP_PRIVATE from one memory file).

    resources/bench/snapshot.py [--runs 20] [--fennec target/x86_64-unknown-linux-gnu/release/fennec]

Needs /dev/kvm. Builds the tiny kernels and fennec in release mode unless --fennec is given.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from tinybench import add_vmm_args, build

ECHO = "console=ttyS0 tiny.mode=echo"
# A byte nothing else on the console has: the guest's echo of it is its answer.
PROBE = b"#"


def until_answer(argv):
    """Starts argv and types PROBE at once; returns (process, seconds until it comes back)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    proc.stdin.write(PROBE)
    proc.stdin.flush()
    buf = b""
    while PROBE not in buf:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            proc.wait()
            sys.exit(f"{argv} ended before it answered (exit {proc.returncode})")
        buf += chunk
    return proc, time.perf_counter() - start


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def make_snapshot(fennec, kernel, workdir):
    """Boots the echo guest with a control socket and snapshots it, waiting for input, into
    DIR."""
    sock = os.path.join(workdir, "api.sock")
    snap = os.path.join(workdir, "snap")
    proc = subprocess.Popen([fennec, "run", "--api-socket", sock, "--allow-path", workdir,
                             "--kernel", str(kernel), "--cmdline", ECHO],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    buf = b""
    while b"TINY ready" not in buf:
        buf += os.read(proc.stdout.fileno(), 4096)
    time.sleep(0.2)
    subprocess.run([fennec, "ctl", "--api-socket", sock, "snapshot-vm", snap], check=True,
                   stdout=subprocess.DEVNULL)
    stop(proc)
    return snap


def rollup(pid):
    """smaps_rollup's fields, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    add_vmm_args(parser)
    args = parser.parse_args()
    kernel = build(args)
    fennec = args.fennec
    with tempfile.TemporaryDirectory() as workdir:
        snap = make_snapshot(fennec, kernel, workdir)
        times = {"boot": [], "restore": []}
        for _ in range(args.runs):
            proc, t = until_answer([fennec, "run", "--kernel", str(kernel), "--cmdline", ECHO])
            stop(proc)
            times["boot"].append(t)
            proc, t = until_answer([fennec, "run", "--restore", snap])
            stop(proc)
            times["restore"].append(t)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(f"{'':10} {'median ms to an answer':>24} {'min':>8} {'max':>8}   ({args.runs} runs)")
        for k, v in times.items():
            print(f"{k:10} {med[k]:24.2f} {min(v) * 1000:8.2f} {max(v) * 1000:8.2f}")
        print(f"restore/boot {med['restore'] / med['boot']:.2f}")

        clones = [until_answer([fennec, "run", "--restore", snap])[0] for _ in range(3)]
        time.sleep(0.5)
        rows = [rollup(p.pid) for p in clones]
        for p in clones:
            stop(p)
        rss = sum(r["Rss"] for r in rows)
        pss = sum(r["Pss"] for r in rows)
        shared = sum(r.get("Shared_Clean", 0) + r.get("Shared_Dirty", 0) for r in rows)
        print(f"three clones: RSS {rss} KiB, PSS {pss} KiB, shared {shared} KiB "
              f"({100 * shared / max(rss, 1):.0f}% of RSS)")
        print(json.dumps({"median_ms": med, "clones": rows}))


if __name__ == "__main__":
    main()
