#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60), starting from the corpus kept
# in fuzz/corpus/TARGET; new inputs go to a scratch directory, so the tree is left as it was
# (copy what is worth keeping into fuzz/corpus). On stable Rust: cargo-fuzz needs nightly
# flags, which RUSTC_BOOTSTRAP=1 allows. Installs cargo-fuzz when missing. A crash fails the
# run and leaves its input in fuzz/artifacts/TARGET/.
#   resources/fuzz.sh [SECONDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd "$root/fuzz"
cargo fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target"
    echo "== fuzz $target for ${seconds}s"
    set +e
    cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 > "$scratch/$target.log" 2>&1
    status=$?
    set -e
    grep -E "^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))" \
        "$scratch/$target.log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$scratch/$target.log"
        echo "fuzz target $target failed (exit $status); its input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
done
