#!/usr/bin/env bash
# Where a Linux boot's time goes, under fennec and under QEMU's microvm machine, side by side in
# one test host (QEMU TCG with emulated AMD SVM, see README): N profiled boots of each (quiet,
# initcall_debug), and a table of each boot phase's time and VM exits, the exits by reason, and
# the slowest initcalls. Medians over the N runs.
#   [FENNEC_BASELINE=PATH] resources/bench/linux-profile.sh [N]        (default 3)
# With FENNEC_BASELINE set to an earlier fennec build, that one is profiled too.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
n="${1:-3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$root/resources/bench/in-test-host.sh" "$root/resources/bench/linux-profile-run.sh" "$n" "$work"
python3 "$root/resources/bench/profile_report.py" "$work/results" "$work/console"
