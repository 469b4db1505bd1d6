"""Shared by the tiny-kernel benchmarks (boot.py, block.py): building what they run."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def add_vmm_args(parser):
    """The options every tiny-kernel benchmark takes: which fennec and which QEMU."""
    parser.add_argument("--fennec",
                        help="fennec binary (default: build target/<triple>/release/fennec)")
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--unfiltered", action="store_true",
                        help="also run fennec with --seccomp-filter off (fennec-nofilter), "
                             "to measure what its syscall filters cost")


def with_unfiltered(args, vmms):
    """`vmms`, plus fennec-nofilter right after fennec when --unfiltered was given."""
    out = {}
    for name, argv in vmms.items():
        out[name] = argv
        if name == "fennec" and args.unfiltered:
            out["fennec-nofilter"] = argv + ["--seccomp-filter", "off"]
    return out


def ratios(med):
    """The ratio rows to print: fennec/qemu, and with --unfiltered filters on/off."""
    rows = [("fennec/qemu", med["fennec"], med["qemu-microvm"])]
    if "fennec-nofilter" in med:
        rows.append(("filters on/off", med["fennec"], med["fennec-nofilter"]))
    return rows


def build(args):
    out = ROOT / "target" / "tiny-kernels"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["make", "-s", "-C", str(ROOT / "resources/tiny"), f"OUT={out}"], check=True)
    if args.fennec is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        args.fennec = str(ROOT / "target/x86_64-unknown-linux-gnu/release/fennec")
    return out / "pvh.elf"
