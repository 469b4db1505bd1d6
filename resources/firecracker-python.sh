#!/usr/bin/env bash
# A virtualenv with firecracker-python (PyPI), the Python library the Firecracker drop-in test
# drives fennec with: made once in ~/.cache/fennec, keyed by the pinned version. Prints the
# virtualenv's python.
set -euo pipefail
version=0.0.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/fennec/firecracker-python-$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import firecracker.api' >/dev/null 2>&1; then
    rm -rf "$venv.tmp"
    python3 -m venv "$venv.tmp" >&2
    "$venv.tmp/bin/pip" install -q --disable-pip-version-check "firecracker-python==$version" >&2
    rm -rf "$venv"
    mv "$venv.tmp" "$venv"
fi
echo "$venv/bin/python"
