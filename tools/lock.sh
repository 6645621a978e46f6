#!/usr/bin/env bash
# Refresh the locks: requirements-dev.lock (hwsim's runtime + dev/test dependencies, every one pinned with
# its hashes) from pyproject.toml, and tools/scalesim.lock (the SCALE-Sim oracle's own environment).
# README command 1 and .ci/run install from these, so a new upstream release changes nothing until the
# locks are refreshed here, the suite is run on the result, and both files are committed.
#
#   bash tools/lock.sh             # keep current pins where pyproject allows them, add what is new
#   bash tools/lock.sh --upgrade   # move every pin to the newest release pyproject allows
#
# The locks are for Linux x86_64, CPython 3.11 (this project's machines). torch resolves to the CPU
# wheel 2.13.0+cpu that lies in the machines' pip find-links folder (/opt/wheels), not to PyPI's CUDA build.
# pip-compile runs from a throwaway virtual environment with a pinned pip-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${TMPDIR:-/tmp}/hwsim-lock-venv"
python3 -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install --quiet "pip-tools==7.7.0"
COMPILE=("$TOOLS/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
         --no-emit-find-links "$@")
"${COMPILE[@]}" --extra dev -o requirements-dev.lock pyproject.toml
# scalesim's metadata pulls pandas, matplotlib, numba...; its simulator needs none of them, so the lock
# keeps only the packages tools/scalesim.in names (with the versions and hashes pip-compile resolved)
# and tools/scalesim_env.sh installs it with --no-deps
"${COMPILE[@]}" -o tools/scalesim.lock tools/scalesim.in
"$TOOLS/bin/python" - <<'PY'
import re
names = {re.split(r"[<>=!~ ]", l.strip())[0].lower() for l in open("tools/scalesim.in")
         if l.strip() and not l.startswith("#")}
out, keep = [], False
for line in open("tools/scalesim.lock"):
    if line and not line[0].isspace() and not line.startswith("#"):
        keep = line.split("==")[0].strip().lower() in names
    elif line.startswith("#") and not line.startswith("#    "):
        keep = True  # the header
    if keep:
        out.append(line)
open("tools/scalesim.lock", "w").write("".join(out))
PY
echo "wrote requirements-dev.lock and tools/scalesim.lock; now run the suite on them and commit both" >&2
