#!/usr/bin/env bash
# Builds fennec and a tiny test kernel, then boots it with an interactive console: the guest
# prints what fennec handed it (memory map, command line, CPUs, initrd) and echoes what you
# type; press q to make it reset, which ends fennec with status 0.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v make >/dev/null || ! command -v cc >/dev/null; then
    [ "$(id -u)" -eq 0 ] || { echo "demo.sh: needs make and gcc (apt-get install make gcc)" >&2; exit 1; }
    apt-get update -qq && apt-get install -y -qq --no-install-recommends make gcc binutils
fi
out="$root/target/tiny-kernels"
mkdir -p "$out"
make -s -C "$root/resources/tiny" OUT="$out"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
printf 'fennec demo initrd\n' > "$out/demo-initrd"
echo "== booting the tiny PVH kernel with 2 vCPUs and 256 MiB; type to see the echo, q to reset"
exec "$root/target/x86_64-unknown-linux-gnu/release/fennec" run --kernel "$out/pvh.elf" --initrd "$out/demo-initrd" \
    --vcpus 2 --memory 256 --cmdline "tiny.mode=echo"
