#!/usr/bin/env bash
# Runs a benchmark script inside one test host (QEMU TCG with emulated AMD SVM, see README), with
# the guest kernel and initramfs in /guest, and fennec, QEMU and QEMU's firmware (its own and
# SeaBIOS) in /fennec.
#   in-test-host.sh RUN_SCRIPT N WORK_DIR [NAME=PATH...]
# RUN_SCRIPT runs with N=<N>; its stdout ends up in WORK_DIR/results, the test host's console in
# WORK_DIR/console, its kernel log in WORK_DIR/kernel.log. Each NAME=PATH puts one more file in
# /guest (the Debian guest's, say). With FENNEC_BASELINE=PATH, that fennec binary (an earlier
# build, to compare with) goes in as /fennec/fennec-baseline. QEMU's monitor listens on
# WORK_DIR/monitor.sock (`info registers -a` tells where a frozen test host's CPUs are; the
# test host's System.map is WORK_DIR/host/System.map). passt goes in as /fennec/passt when
# PASST names it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
script="$1"; n="$2"; work="$3"; shift 3
kernel="$("$root/resources/build-guest-kernel.sh")"
initramfs="$("$root/resources/build-guest-initramfs.sh")"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
mkdir -p "$work/guest"
ln -s "$kernel/vmlinux" "$work/guest/vmlinux"
ln -s "$initramfs" "$work/guest/initramfs.cpio"
for extra in "$@"; do
    ln -s "${extra#*=}" "$work/guest/${extra%%=*}"
done
sed "s/^n=.*/n=$n/" "$script" > "$work/run"
chmod +x "$work/run"
"$root/resources/build-test-host.sh" "$work/host" "$root/resources/test-host/init" "$work/guest" \
    "fennec=$root/target/x86_64-unknown-linux-gnu/release/fennec" "qemu-system-x86_64=$(command -v qemu-system-x86_64)" \
    "qemu-share=/usr/share/qemu" "seabios-share=/usr/share/seabios" "ip=$(command -v ip)" "run=$work/run" \
    ${PASST:+"passt=$PASST"} \
    ${FENNEC_BASELINE:+"fennec-baseline=$FENNEC_BASELINE"} > /dev/null
echo "booting the test host; $n runs of each VMM follow" >&2
timeout 3600 qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m 4096 -M q35 -cpu EPYC,+svm \
    -nodefaults -no-user-config -nographic -monitor "unix:$work/monitor.sock,server=on,wait=off" \
    -serial "file:$work/console" \
    -serial "file:$work/results" -serial "file:$work/kernel.log" -kernel "$work/host/vmlinuz" \
    -initrd "$work/host/initramfs.cpio" -append "console=ttyS2 loglevel=7 panic=-1 rdinit=/init kvm_amd.npt=1 fennec.pin=1 fennec.anchor=0 fennec.offline=0 nokaslr" \
    -no-reboot < /dev/null
