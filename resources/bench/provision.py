#!/usr/bin/env python3
"""Provisioning benchmark: 10 VMs from one template, ZFS clones against copying the image.

One template of `--size-mib` MiB of random bytes (incompressible, no holes) is imported into a
ZFS store (a pool on a sparse file vdev, made here) and into a directory store (on the
filesystem of --workdir, where a clone is a reflink if it can be, else a full copy). Then, for
each store in turn, `--vms` VMs are provisioned and started one after another:

    fennec run --kernel pvh.elf --cmdline "tiny.mode=disk" --disk template=T,store=S,vm=benchN

each of which clones the template, boots the tiny kernel, reads its first 4 KiB through
virtio-blk and exits. The figure is the wall time for all of them; the program prints both
figures and the ratio (copy / ZFS: how many times faster ZFS clones are), then destroys what it
made.

    resources/bench/provision.py [--vms 10] [--size-mib 1024] [--fennec target/x86_64-unknown-linux-gnu/release/fennec]

Needs root, /dev/kvm and ZFS (zfs-fuse or OpenZFS, with its service running).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinybench import build


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vms", type=int, default=10)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--fennec")
    p.add_argument("--workdir", default="/var/tmp", help="where the pool's vdev and the directory store live")
    args = p.parse_args()
    kernel = build(args)

    work = Path(tempfile.mkdtemp(prefix="fennec-provision-", dir=args.workdir))
    pool = f"fennecbench{os.getpid()}"
    try:
        image = work / "template.img"
        with open(image, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        vdev = work / "vdev"
        with open(vdev, "wb") as f:
            f.truncate((args.size_mib * 3 + 512) << 20)
        sh("zpool", "create", "-m", str(work / "mnt"), pool, str(vdev), stdout=subprocess.DEVNULL)
        sh("zfs", "create", f"{pool}/fennec")
        (work / "dir").mkdir()
        stores = {"zfs clone": f"zfs:{pool}/fennec", "copy (dir)": f"dir:{work / 'dir'}"}

        results = {}
        for label, store in stores.items():
            t = time.monotonic()
            sh(args.fennec, "image", "--store", store, "import", "tpl", str(image))
            print(f"{label:>11}: import {time.monotonic() - t:6.2f} s", flush=True)
        for label, store in stores.items():
            t = time.monotonic()
            for n in range(args.vms):
                out = subprocess.run(
                    [args.fennec, "run", "--kernel", str(kernel),
                     "--cmdline", "console=ttyS0 tiny.mode=disk",
                     "--disk", f"template=tpl,store={store},vm=bench{n}"],
                    stdin=subprocess.DEVNULL, capture_output=True, text=True)
                if out.returncode != 0 or "TINY disk done" not in out.stdout:
                    sys.exit(f"{label}: VM {n} failed: {out.stderr[-2000:]}")
            results[label] = time.monotonic() - t
            print(f"{label:>11}: {args.vms} VMs provisioned and run in {results[label]:6.2f} s "
                  f"({results[label] / args.vms * 1000:.0f} ms each)", flush=True)
        zfs, copy = results["zfs clone"], results["copy (dir)"]
        print(f"ratio copy/zfs: {copy / zfs:.1f}x (template {args.size_mib} MiB, {args.vms} VMs)")
    finally:
        subprocess.run(["zpool", "destroy", "-f", pool], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
