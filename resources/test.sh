#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine too: installs the packages the tests need
# (resources/prereqs.sh; as root, or it names them), then runs `cargo test --workspace` with any
# arguments given (`resources/test.sh --test linux`, say). The guest kernel and the test host
# are built on first use and cached in ~/.cache/fennec.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/resources/prereqs.sh"
cd "$root"
exec cargo test --workspace "$@"
