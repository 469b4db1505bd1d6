#!/usr/bin/env python3
"""Network benchmark: the tiny PVH kernel's virtio-net driver under fennec and QEMU's microvm.

The guest (`tiny.mode=netbench`, resources/tiny/net.c) sends `--frames` 1514-byte frames, one in
flight, then receives as many, which this program sends into the TAP in batches of 256 (so the
TAP's queue never overflows) as the guest reports progress. It timestamps the guest's lines and
reports, per VMM, the median over `--runs` interleaved runs of guest->host and host->guest
throughput (MiB/s of frames), then fennec/QEMU ratios (above 1: fennec faster).

    resources/bench/net.py [--runs 5] [--frames 2000] [--fennec target/x86_64-unknown-linux-gnu/release/fennec]

Everything happens in a network namespace this program creates (and deletes): the TAP, both
VMMs, and a packet socket for the host side. QEMU uses `-netdev tap` (userspace virtio, no
vhost) with its virtio-mmio switched to the modern layout the tiny driver speaks. Needs root,
/dev/kvm, iproute2 and qemu-system-x86_64.
"""

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import time

from tinybench import add_vmm_args, build, ratios, with_unfiltered

ETHERTYPE = 0x88B5
FRAME = 1514
BATCH = 256
MAC = bytes([0x02, 0xFC, 0, 0, 0, 1])


class Guest:
    """A VMM process and its console lines with arrival times."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.buf = b""
        self.text = b""

    def wait_for(self, marker, timeout=120):
        deadline = time.monotonic() + timeout
        marker = marker.encode()
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                self.buf = self.buf[i + len(marker):]
                return time.perf_counter()
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                self.proc.kill()
                sys.exit(f"no {marker!r} from the guest; it printed:\n{self.text.decode(errors='replace')[-2000:]}")
            self.buf += chunk
            self.text += chunk


def drain(sock):
    n = 0
    while True:
        try:
            sock.recv(65536, socket.MSG_DONTWAIT)
            n += 1
        except BlockingIOError:
            return n


def run_once(argv, sock, frames):
    """Returns (guest->host seconds, host->guest seconds)."""
    drain(sock)
    g = Guest(argv)
    t0 = g.wait_for("TINY bench tx start")
    t1 = g.wait_for("TINY bench tx done")
    g.wait_for("TINY bench rx ready")
    seen = drain(sock)
    if seen < frames:
        sys.exit(f"{argv[0]}: the TAP got {seen} of {frames} frames")
    frame = (MAC + MAC[:5] + b"\xfe" + ETHERTYPE.to_bytes(2, "big")).ljust(FRAME, b"\0")
    t2 = time.perf_counter()
    sent = 0
    while sent < frames:
        batch = min(BATCH, frames - sent)
        for _ in range(batch):
            sock.send(frame)
        sent += batch
        g.wait_for("TINY bench rx done" if sent == frames else f"TINY bench rx {sent}\n")
    t3 = time.perf_counter()
    g.proc.wait()
    if b"TINY bench error" in g.text:
        sys.exit(f"{argv[0]} reported an error:\n{g.text.decode(errors='replace')[-2000:]}")
    return t1 - t0, t3 - t2


def inside(args):
    kernel = args.kernel
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    sock.bind(("tap0", ETHERTYPE))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    cmdline = f"console=ttyS0 tiny.mode=netbench netbench.frames={args.frames}"
    mac = ":".join(f"{b:02x}" for b in MAC)
    vmms = {
        "fennec": [args.fennec, "run", "--kernel", kernel, "--memory", "64",
                   "--cmdline", cmdline, "--net", f"tap=tap0,mac={mac}"],
        "qemu-microvm": [args.qemu, "-M", "microvm,acpi=off", "-enable-kvm",
                         "-cpu", "host,-arch-capabilities", "-m", "64", "-smp", "1",
                         "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
                         "-no-reboot", "-kernel", kernel, "-append", cmdline,
                         "-global", "virtio-mmio.force-legacy=false",
                         "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                         "-device", f"virtio-net-device,netdev=n0,mac={mac}"],
    }
    vmms = with_unfiltered(args, vmms)
    results = {name: [] for name in vmms}
    for _ in range(args.runs):
        for name, argv in vmms.items():
            results[name].append(run_once(argv, sock, args.frames))
    mib = args.frames * FRAME / (1 << 20)
    med = {name: [statistics.median(mib / t for t in c) for c in zip(*rows)]
           for name, rows in results.items()}
    print(f"{args.runs} runs each, tiny PVH kernel, {args.frames} frames of {FRAME} bytes each way")
    print(f"{'':16}{'guest->host':>16}{'host->guest':>16}")
    for name, (tx, rx) in med.items():
        print(f"{name:16}{tx:>11.2f} MiB/s{rx:>11.2f} MiB/s")
    for label, f, q in ratios(med):
        print(f"{label:16}{f[0] / q[0]:>16.2f}{f[1] / q[1]:>16.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=2000)
    add_vmm_args(parser)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernel", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        sys.exit("needs root: it creates a network namespace and a TAP")
    kernel = build(args)
    ns = f"fennec-netbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = ["ip", "-n", ns]
        subprocess.run(ip + ["link", "set", "lo", "up"], check=True)
        subprocess.run(ip + ["tuntap", "add", "dev", "tap0", "mode", "tap"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv6/conf/tap0/disable_ipv6"], check=False)
        subprocess.run(ip + ["link", "set", "tap0", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inside",
                        "--kernel", str(kernel), "--fennec", args.fennec, "--qemu", args.qemu,
                        "--runs", str(args.runs), "--frames", str(args.frames)]
                       + (["--unfiltered"] if args.unfiltered else []), check=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
