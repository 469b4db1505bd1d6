#!/usr/bin/env python3
"""Creation-rate benchmark: how many tiny VMs fennec (and QEMU's microvm machine) start, boot and
tear down per second, P at a time.

Each VM is a process running the tiny PVH kernel, which prints its marker and triple-faults; both
VMMs turn that into an exit. N VMs per VMM, P running at once; the VMMs take turns in batches of
P, so drift on the host hits both alike. Prints, per VMM: VMs per second, VMs per second per busy
core (the rate divided by min(P, cores)), and the CPU time (user + system) one VM costs.

    resources/bench/create.py [--vms 200] [--parallel 2]

Needs /dev/kvm and qemu-system-x86_64 (Debian: apt-get install qemu-system-x86).
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tinybench import add_vmm_args, build

CMDLINE = "tiny.mode=triple"


def one_vm(argv):
    """Runs one VM to its exit; returns its CPU seconds (user + system)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}): {err.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=200, help="VMs per VMM")
    parser.add_argument("--parallel", type=int, default=2, help="VMs running at once")
    add_vmm_args(parser)
    args = parser.parse_args()
    kernel = build(args)
    vmms = {
        "fennec": [args.fennec, "run", "--kernel", str(kernel), "--memory", "128",
                   "--cmdline", CMDLINE],
        # -cpu host minus arch-capabilities: some nested KVMs refuse that MSR.
        "qemu-microvm": [args.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
                         "-m", "128", "-smp", "1", "-nodefaults", "-no-user-config",
                         "-nographic", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
                         "-append", CMDLINE],
    }
    wall = {name: 0.0 for name in vmms}
    cpu = {name: 0.0 for name in vmms}
    done = {name: 0 for name in vmms}
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        while min(done.values()) < args.vms:
            for name, argv in vmms.items():
                batch = min(args.parallel, args.vms - done[name])
                start = time.perf_counter()
                cpu[name] += sum(pool.map(one_vm, [argv] * batch))
                wall[name] += time.perf_counter() - start
                done[name] += batch
    cores = min(args.parallel, os.cpu_count() or 1)
    print(f"{args.vms} tiny VMs per VMM (PVH kernel, 128 MiB, 1 vCPU), {args.parallel} at a time, "
          f"{os.cpu_count()} cores")
    print(f"{'':14}{'VMs/s':>8}{'VMs/s/core':>12}{'CPU ms/VM':>11}")
    for name in vmms:
        rate = done[name] / wall[name]
        print(f"{name:14}{rate:>8.1f}{rate / cores:>12.1f}{cpu[name] / done[name] * 1000:>11.1f}")
    f, q = done["fennec"] / wall["fennec"], done["qemu-microvm"] / wall["qemu-microvm"]
    print(f"fennec/qemu rate: {f / q:.2f}")


if __name__ == "__main__":
    main()
