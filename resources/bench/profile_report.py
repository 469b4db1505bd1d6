#!/usr/bin/env python3
"""Reads what linux-profile-run.sh printed in the test host and prints where the boot's time goes.

    profile_report.py RESULTS CONSOLE

Times are the test host's (trace events) for what happens outside the guest's clock, and the
guest's own printk times in between; the guest's time 0 is the test host's moment of the guest's
kvm-clock MSR write. Every number is the median over the runs.
"""
import re
import statistics
import sys
from collections import Counter, defaultdict

# Each phase ends at the first kernel-log line matching its pattern (in this order).
GUEST_PHASES = [
    ("memory map, MP table search", r"found SMP MP-table"),
    ("direct mapping of memory", r"RAMDISK: "),
    ("zones, MP table, per-CPU areas", r"Memory: \d+K"),
    ("slab, RCU, IRQs, console", r"APIC: Switch to symmetric I/O mode"),
    ("APIC timer, delay loop", r"Calibrating delay loop"),
    ("CPU bugs, FPU, alternatives", r"smpboot: CPU0: "),
    ("SMP bring-up", r"smpboot: Total of"),
    ("early initcalls, clocksource", r"clocksource: Switched to clocksource"),
    ("device initcalls, initramfs", r"Run /init as init process"),
]
KVM_CLOCK_MSR = "4b564d01"
PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
INITCALL = re.compile(r"initcall (\S+?)\+\S* returned \S+ after (\d+) usecs")


def sections(text):
    """(vmm, run) -> {what: [lines]}"""
    out = defaultdict(lambda: defaultdict(list))
    current = None
    for line in text.splitlines():
        if line.startswith("PROFILE "):
            words = line.split()
            if len(words) == 4 and words[1] == "none":
                sys.exit("the test host has no tracefs with KVM events: " + words[3])
            current = out[(words[1], int(words[2]))][words[3]]
        elif current is not None:
            current.append(line)
    return out


def profile(run):
    """One boot: [(phase, ms, exits, Counter of reasons)], exits by reason, initcalls."""
    events = []
    for line in run["trace"]:
        w = line.split()
        if len(w) >= 2 and w[0] in "STMB" and w[1].endswith(":"):
            events.append((w[0], float(w[1][:-1]), w[2] if len(w) > 2 else ""))
    start = next(t for k, t, _ in events if k == "S")
    exits = [(t, r) for k, t, r in events if k == "T"]
    clock0 = next(t for k, t, m in events if k == "M" and m == KVM_CLOCK_MSR)
    ready = next(t for k, t, _ in events if k == "B")
    log = [(float(m.group(1)), m.group(2)) for m in map(PRINTK.match, run["console"]) if m]
    bounds = [("VMM set-up, to the guest's first exit", exits[0][0]),
              ("kernel entry to its clock", clock0)]
    for name, pattern in GUEST_PHASES:
        t = next((clock0 + t for t, msg in log if re.search(pattern, msg)), None)
        bounds.append((name, t))
    bounds.append(("init script to the boot marker", ready))
    phases, before = [], start
    for name, end in bounds:
        if end is None:
            phases.append((name, None, None, Counter()))
            continue
        reasons = Counter(r for t, r in exits if before <= t < end)
        phases.append((name, (end - before) * 1000, sum(reasons.values()), reasons))
        before = end
    total = Counter(r for t, r in exits if start <= t < ready)
    initcalls = {m.group(1): int(m.group(2)) for m in map(INITCALL.search, run["console"]) if m}
    boot_timer = next((float(m.group(1)) for m in
                       (re.search(r"Guest boot time: ([\d.]+) ms", l) for l in run["console"]) if m),
                      None)
    return phases, (ready - start) * 1000, total, initcalls, boot_timer


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, width=8, digits=0):
    return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def main():
    results = open(sys.argv[1], errors="replace").read().replace("\r", "")
    runs = sections(results)
    vmms = [v for v in ["fennec", "fennec-baseline", "qemu-microvm"] if any(k[0] == v for k in runs)]
    by_vmm = {v: [profile(runs[k]) for k in sorted(runs) if k[0] == v] for v in vmms}
    if "fennec" not in by_vmm or "qemu-microvm" not in by_vmm:
        tail = open(sys.argv[2], errors="replace").read()[-3000:]
        sys.exit("no profile for both VMMs; the test host console ended with:\n" + tail)
    short = {"fennec": "fennec", "fennec-baseline": "before", "qemu-microvm": "QEMU"}
    n = min(len(p) for p in by_vmm.values())
    print(f"Linux guest (vmlinux, PVH), 256 MiB, 1 vCPU, quiet, in the test host; median of {n}")
    print(f"{'phase (ends at)':40}" + "".join(f"{short[v] + ' ms':>10}" for v in vmms)
          + "".join(f"{short[v] + ' exits':>14}" for v in vmms) + "  fennec's top exits")
    names = [p[0] for p in by_vmm["fennec"][0][0]]
    for i, name in enumerate(names):
        cols = {v: [p[0][i] for p in by_vmm[v]] for v in vmms}
        top = Counter()
        for x in cols["fennec"]:
            top.update(x[3])
        top = ", ".join(f"{r} {c // len(cols['fennec'])}" for r, c in top.most_common(3))
        print(f"{name:40}" + "".join(fmt(med(x[1] for x in cols[v]), 10) for v in vmms)
              + "".join(fmt(med(x[2] for x in cols[v]), 14) for v in vmms) + f"  {top}")
    total = {v: med(p[1] for p in by_vmm[v]) for v in vmms}
    exits = {v: med(sum(p[2].values()) for p in by_vmm[v]) for v in vmms}
    print(f"{'total: VMM start to the boot marker':40}"
          + "".join(fmt(total[v], 10) for v in vmms) + "".join(fmt(exits[v], 14) for v in vmms))
    for other in vmms[1:]:
        print(f"fennec/{short[other]}: {total['fennec'] / total[other]:.2f} in time, "
              f"{exits['fennec'] / exits[other]:.2f} in exits")
    for v in vmms:
        timer = med(p[4] for p in by_vmm[v])
        if timer is not None:
            print(f"{v}'s own boot timer (process start to the marker): {timer:.0f} ms")
    print()
    exits_by_reason = {v: [p[2] for p in by_vmm[v]] for v in vmms}
    table("exits by reason, start to marker", vmms, short, exits_by_reason, 12)
    print()
    initcalls = {v: [p[3] for p in by_vmm[v]] for v in vmms}
    table("slowest initcalls (us)", vmms, short, initcalls, 10)


def table(title, vmms, short, counts, rows):
    """The `rows` keys with the largest sums over every run, each VMM's median for each."""
    print(f"{title:32}" + "".join(f"{short[v]:>10}" for v in vmms))
    total = Counter()
    for v in vmms:
        for c in counts[v]:
            total.update(c)
    for key, _ in total.most_common(rows):
        print(f"{key:32}" + "".join(fmt(med(c.get(key) for c in counts[v]), 10) for v in vmms))


if __name__ == "__main__":
    main()
