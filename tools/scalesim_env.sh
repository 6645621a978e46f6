#!/usr/bin/env bash
# Create (once) the private virtual environment that runs SCALE-Sim 3, the cycle-count oracle of
# tests/test_scalesim_oracle.py, and print its python interpreter's path on stdout.
#
# Why a separate environment: scalesim 3.0.0's memory model fails on numpy >= 2.3, and hwsim
# itself runs on numpy 2.4, so the oracle gets its own interpreter with numpy < 2.3 and is run in a
# subprocess. Only what scalesim's simulator imports is installed (numpy, tqdm, scalesim), pinned with
# hashes in tools/scalesim.lock (refreshed by tools/lock.sh) and installed with --no-deps, so scalesim's
# unpinned extras (pandas, matplotlib, cython, numba...) stay out.
#
# Idempotent and cached: the venv lives in $HWSIM_SCALESIM_VENV (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/hwsim/scalesim-venv); a stamp file records the lock's digest,
# and a second call only checks the stamp. Usage:  PY=$(bash tools/scalesim_env.sh)
set -euo pipefail

VENV="${HWSIM_SCALESIM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hwsim/scalesim-venv}"
LOCK="$(cd "$(dirname "$0")" && pwd)/scalesim.lock"
STAMP="$VENV/.hwsim-scalesim-stamp"
WANT="$(sha256sum "$LOCK" | cut -d' ' -f1)"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

PYTHON="${PYTHON:-python3}"
{
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$LOCK"
    "$VENV/bin/python" -c "import numpy, scalesim.scale_sim; assert tuple(map(int, numpy.__version__.split('.')[:2])) < (2, 3)"
    echo "$WANT" > "$STAMP"
} >&2
echo "$VENV/bin/python"
