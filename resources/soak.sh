#!/usr/bin/env bash
# A load test for the Linux test tier: runs `cargo test --test linux` N times per configuration
# while a parallel compile (Debian's kernel source, `make -j$(nproc)`, over and over) keeps every
# core busy beside it, and prints a table: per configuration the runs, passes, each kind of
# failure, and the median time of the tier. Configurations take turns run by run, so a change in
# the machine's load falls on all of them alike. Logs stay in the printed directory, with the
# evidence a dead test host left (target/.../test-host-failures).
#   resources/soak.sh [-n N] [CONFIG...]         N runs each (default 10)
#   SOAK_LOAD=none                               no load beside the tests
# CONFIG is NAME=QEMU[:CMDLINE]:
#   QEMU     `system` (the qemu-system-x86_64 on PATH), or a Debian suite (`bookworm`,
#            `bookworm-backports`): that suite's qemu-system-x86, unpacked once into
#            ~/.cache/fennec/qemu-VERSION (the suite must be in the apt sources)
#   CMDLINE  added to the test host's kernel command line (a later word wins), words joined
#            by commas: the test host's workarounds for QEMU 7.2 (fennec.pin, fennec.anchor,
#            fennec.offline: 1 on, 0 off; see resources/test-host/init) or module parameters
#            (kvm_amd.npt=0)
# Without CONFIG: one, `system=system`. Each run is counted once, by its worst outcome:
#   pass         every test passed, no test host died
#   host died    a test host stopped reporting (frozen) or crashed (its kernel panicked); the
#                run's one retry may have passed, but the death counts
#   guest stall  a test failed waiting for its guest (a marker that never came, a time limit)
#   failed       a test failed otherwise
# Example, QEMU 7.2 with its workarounds against QEMU 10 as the test host runs it, and QEMU 10
# with the test host's CPUs both free for the VMs:
#   resources/soak.sh -n 10 \
#       q7=bookworm:kvm_amd.npt=0,fennec.pin=1,fennec.anchor=1,fennec.offline=1 \
#       q10=bookworm-backports q10-free=bookworm-backports:fennec.pin=0
set -euo pipefail
runs=10
if [ "${1:-}" = "-n" ]; then runs="$2"; shift 2; fi
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(system=system)
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${FENNEC_CACHE:-$HOME/.cache/fennec}"
logs="$(mktemp -d /tmp/fennec-soak.XXXXXX)"
failures="$root/target/x86_64-unknown-linux-gnu/tmp/test-host-failures"
mkdir -p "$failures"
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

# The qemu-system-x86_64 of Debian suite $1, unpacked into the cache; prints its path.
qemu_of_suite() {
    local suite="$1" version dir tmp
    version="$(apt-cache madison qemu-system-x86 | awk -v s="$suite" '$0 ~ " "s"/" {print $3; exit}')"
    [ -n "$version" ] || { echo "no qemu-system-x86 in suite $suite: is it in the apt sources? (apt-get update)" >&2; return 1; }
    dir="$cache/qemu-${version//[:~+]/_}"
    if [ ! -x "$dir/usr/bin/qemu-system-x86_64" ]; then
        tmp="$(mktemp -d)"
        # Each package at its own version in the suite (the architecture-independent data
        # package has no binNMU suffix).
        for pkg in qemu-system-x86 qemu-system-data qemu-system-common; do
            local v
            v="$(apt-cache madison "$pkg" | awk -v s="$suite" '$0 ~ " "s"/" {print $3; exit}')"
            (cd "$tmp" && apt-get download -qq "$pkg=$v" >&2 2>/dev/null) \
                || { echo "cannot download $pkg=$v from $suite" >&2; return 1; }
        done
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir.tmp"; done
        rm -rf "$tmp" "$dir" && mv "$dir.tmp" "$dir"
    fi
    echo "$dir/usr/bin/qemu-system-x86_64"
}

names=(); binaries=(); cmdlines=()
for config in "${configs[@]}"; do
    name="${config%%=*}"; spec="${config#*=}"
    qemu="${spec%%:*}"; cmdline=""
    [ "$spec" != "$qemu" ] && cmdline="${spec#*:}"
    if [ "$qemu" = system ]; then
        binary=""
    else
        binary="$(qemu_of_suite "$qemu")" || exit 1
    fi
    names+=("$name"); binaries+=("$binary"); cmdlines+=("${cmdline//,/ }")
    echo "config $name: $("${binary:-qemu-system-x86_64}" --version | head -n 1), command line +[${cmdline//,/ }]" >&2
done

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

# The worst outcome of run log $1.
classify() {
    local log="$1"
    if grep -qE "FENNEC-RETRY|the test host reported nothing past its time limit|the test host powered off or crashed|the test host never ran" "$log"; then
        echo "host-died"
    elif grep "^test result:" "$log" | tail -n 1 | grep -q "^test result: ok"; then
        echo "pass"
    elif grep -qE "did not appear within|still running after|within [0-9]+s|was still running after" "$log"; then
        echo "guest-stall"
    else
        echo "failed"
    fi
}

declare -A count times
results="$logs/results.tsv"
for i in $(seq 1 "$runs"); do
    for c in "${!names[@]}"; do
        name="${names[$c]}"
        log="$logs/$name-run-$i.log"
        before="$(ls "$failures" 2>/dev/null | wc -l)"
        start=$(date +%s)
        FENNEC_TEST_HOST_QEMU="${binaries[$c]}" FENNEC_TEST_HOST_CMDLINE="${cmdlines[$c]}" \
            cargo test --test linux -- --test-threads=1 --nocapture >"$log" 2>&1 || true
        took=$(($(date +%s) - start))
        outcome="$(classify "$log")"
        # Keep what a dead test host left.
        if [ "$(ls "$failures" 2>/dev/null | wc -l)" != "$before" ]; then
            mkdir -p "$logs/$name-run-$i-hosts"
            ls -t "$failures" | head -n $(($(ls "$failures" | wc -l) - before)) \
                | while read -r d; do cp -r "$failures/$d" "$logs/$name-run-$i-hosts/"; done
        fi
        # The test host's own panic, if its kernel log says so.
        if [ "$outcome" = host-died ] && grep -rqsE "Kernel panic|BUG: |corrupted stack" "$logs/$name-run-$i-hosts"; then
            outcome="host-died (panic)"
        elif [ "$outcome" = host-died ]; then
            outcome="host-died (froze)"
        fi
        count["$name $outcome"]=$((${count["$name $outcome"]:-0} + 1))
        times["$name"]="${times[$name]:-} $took"
        printf '%s\t%s\t%s\t%s\n' "$name" "$i" "$outcome" "$took" >> "$results"
        echo "$name run $i: $outcome in ${took}s"
        if [ "$outcome" != pass ]; then
            grep -E "^test .* FAILED$|panicked at|failed inside the test host|test host ended|did not appear|within [0-9]+s|still running after|FENNEC-RETRY" "$log" \
                | head -n 20 | sed 's/^/    /'
        fi
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
echo
echo "== soak: $runs runs per configuration, load: ${SOAK_LOAD:-compile} (logs in $logs)"
echo "| config | runs | pass | guest stall | host froze | host panic | other failure | median tier time |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
status=0
for name in "${names[@]}"; do
    pass=${count["$name pass"]:-0}
    [ "$pass" -eq "$runs" ] || status=1
    echo "| $name | $runs | $pass | ${count["$name guest-stall"]:-0} | ${count["$name host-died (froze)"]:-0} | ${count["$name host-died (panic)"]:-0} | ${count["$name failed"]:-0} | $(echo "${times[$name]}" | median) s |"
done
exit "$status"
