#!/usr/bin/env bash
# Print the environment that makes Numba generate AVX2 code (no AVX-512) on this machine, so the kernels'
# AVX2 speed can be measured on an AVX-512 host (the project's machines vary: some have only AVX2 + FMA +
# F16C). Numba keeps a separate cache per CPU name / feature string; use a fresh NUMBA_CACHE_DIR anyway.
#
#   eval "$(bash tools/avx2_env.sh)"; python bench/mac.py --no-compile
#
# NUMBA_CPU_NAME alone is not enough: Numba still takes the host's feature string, AVX-512 included.
set -euo pipefail
PY="${PYTHON:-python}"
FEAT=$("$PY" - <<'PY'
import llvmlite.binding as ll
off = ("avx512", "amx", "evex512", "avx10", "avxvnni")
print(",".join(("-" if (k.startswith(off) or not v) else "+") + k for k, v in sorted(ll.get_host_cpu_features().items())))
PY
)
echo "export NUMBA_CPU_NAME=haswell"
echo "export NUMBA_CPU_FEATURES='$FEAT'"
echo "export NUMBA_CACHE_DIR=${TMPDIR:-/tmp}/hwsim-numba-avx2"
