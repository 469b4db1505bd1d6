#!/usr/bin/env bash
# Builds the Linux test guest's agent (resources/guest/agent: fennec-agent, a static binary)
# into the cache, keyed by its sources and the compiler. Prints the binary's path on stdout.
#   FENNEC_CACHE  cache root (default ~/.cache/fennec)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"
src="$here/guest/agent"
key="$( (cat "$0" "$src/Cargo.toml" "$src/Cargo.lock" "$src"/src/*.rs; rustc --version) | sha256sum | cut -c1-16)"
out="$cache/guest-agent-$key"
if [ -x "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
target="$cache/guest-agent-target"
# Static (glibc's, crt-static): the guest's initramfs has no libraries.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target" \
    cargo build --quiet --locked --release --manifest-path "$src/Cargo.toml" \
    --target x86_64-unknown-linux-gnu >&2
cp "$target/x86_64-unknown-linux-gnu/release/fennec-guest-agent" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
