#!/usr/bin/env bash
# A load test for the Linux test tier: runs `cargo test --test linux` N times in a row while a
# parallel compile (Debian's kernel source, `make -j$(nproc)`, over and over) keeps every core
# busy beside it, then prints each run's outcome, the test hosts it booted, and every failure
# with its cause. Logs stay in the printed directory.
#   resources/soak.sh [N]        N runs (default 10)
#   SOAK_LOAD=none               no load beside the tests
set -euo pipefail
runs="${1:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
logs="$(mktemp -d /tmp/fennec-soak.XXXXXX)"
load_pid=""
cleanup() {
    if [ -n "$load_pid" ]; then
        # The load runs in its own process group: end it and its compilers.
        kill -TERM -- "-$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    rm -rf "$logs/load-src"
}
trap cleanup EXIT

"$root/resources/prereqs.sh"
cd "$root"
echo "building the tests once, before the load starts" >&2
cargo test --test linux --no-run 2>"$logs/build.log" || { cat "$logs/build.log" >&2; exit 1; }

if [ "${SOAK_LOAD:-compile}" != none ]; then
    tarball="$(ls /usr/src/linux-source-*.tar.* | sort -V | tail -n 1)"
    mkdir -p "$logs/load-src"
    tar -xf "$tarball" -C "$logs/load-src" --strip-components=1
    setsid bash -c "cd '$logs/load-src' && make -s defconfig >/dev/null 2>&1 &&
        while true; do make -s -j$(nproc) vmlinux >/dev/null 2>&1; make -s clean >/dev/null 2>&1; done" &
    load_pid=$!
    echo "load: a parallel kernel compile (make -j$(nproc)) in process group $load_pid" >&2
fi

passed=0
failed=0
summary=()
for i in $(seq 1 "$runs"); do
    log="$logs/run-$i.log"
    start=$(date +%s)
    if cargo test --test linux -- --test-threads=1 --nocapture >"$log" 2>&1; then
        outcome=pass
        passed=$((passed + 1))
    else
        outcome=FAIL
        failed=$((failed + 1))
    fi
    took=$(($(date +%s) - start))
    hosts=$(grep -c "linux tests: booting test host" "$log" || true)
    retries=$(grep -c "FENNEC-RETRY" "$log" || true)
    line="run $i: $outcome in ${took}s, test hosts booted: $hosts, retries: $retries"
    summary+=("$line")
    echo "$line"
    if [ "$outcome" = FAIL ]; then
        # Each failed test, and the first lines of why.
        grep -E "^test .* FAILED$|panicked at|failed inside the test host|test host ended|did not appear|within [0-9]+s|still running after" "$log" \
            | head -n 20 | sed 's/^/    /'
    fi
done

echo
echo "== soak: $runs runs, $passed passed, $failed failed (logs in $logs)"
printf '%s\n' "${summary[@]}"
[ "$failed" -eq 0 ]
