"""The machine a bench ran on, printed with every figure: CPU model, core count, the SIMD flags that decide
which kernels run (AVX2, FMA, F16C, AVX-512, VNNI), and the CPU Numba compiles for, with the vector
features it uses.

``--avx2`` (:func:`avx2_from_argv`): rerun the bench in a process whose CPUID hides AVX-512, VNNI and AMX
(``tests/_cpumask.c`` preloaded, Linux CPUID faulting). Every library that dispatches on CPUID then runs its AVX2
code, natively on this CPU: Numba / LLVM compile for AVX2 + FMA + F16C, numpy's BLAS takes its AVX2
kernels, onnxruntime and TensorFlow theirs. That is how an AVX2-only machine is measured on an AVX-512 one.
(``NUMBA_CPU_NAME`` alone does not do it: Numba keeps the host's feature string, AVX-512 included.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
        "avx512_bf16", "avx512_fp16", "amx_int8")
_MASKED = "HWSIM_BENCH_AVX2"
_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")


def numba_target() -> str:
    """The CPU name and the vector features (AVX2 / FMA / F16C / AVX-512 ones) Numba compiles for here:
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` where set, else what LLVM reads from CPUID."""
    import llvmlite.binding as ll
    name = os.environ.get("NUMBA_CPU_NAME") or ll.get_host_cpu_name()
    feats = os.environ.get("NUMBA_CPU_FEATURES")
    if feats is None:
        on = sorted(k for k, v in ll.get_host_cpu_features().items() if v)
    else:
        on = sorted(f[1:] for f in feats.split(",") if f.startswith("+"))
    vec = [f for f in on if f in ("avx2", "fma", "f16c") or f.startswith("avx512")]
    return f"{name} ({' '.join(vec) or 'no AVX2 / AVX-512'})"


def describe() -> str:
    """One line: ``CPU <model>, <n> CPUs; SIMD flags ...; Numba target ...``."""
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    simd = [f for f in SIMD if f in flags] or ["(no /proc/cpuinfo flags)"]
    masked = "; run with --avx2: CPUID hides AVX-512 / VNNI / AMX from every library" if os.environ.get(_MASKED) else ""
    return (f"CPU {model}, {os.cpu_count()} CPUs; SIMD flags: {' '.join(simd)}; Numba target: {numba_target()}"
            f"{masked}")


def _masked_env(directory: str) -> dict:
    """The environment that runs a program (and every process it starts) with AVX-512 / VNNI / AMX hidden:
    the CPUID mask preloaded (``tests/_cpumask.c``, built into ``directory``). Raises SystemExit with the
    reason where it cannot work here (not x86-64 Linux, no CPUID faulting, no C compiler). The mask answers
    CPUID in a SIGSEGV handler: a program that installs its own afterwards (pytest's faulthandler: run
    ``pytest -p no:faulthandler``) crashes at its next CPUID."""
    sys.path.insert(0, _TESTS)
    import _cpumask
    why = _cpumask.unavailable()
    if why:
        raise SystemExit(f"--avx2: cannot hide AVX-512 here: {why}")
    lib = _cpumask.build(directory)
    pre = os.environ.get("LD_PRELOAD")
    return {**os.environ, "LD_PRELOAD": lib + (" " + pre if pre else ""), "HWSIM_MASK_CPU": "1", _MASKED: "1"}


def avx2_from_argv() -> None:
    """Where ``--avx2`` is among the arguments: rerun this script with them (less ``--avx2``) with the CPU's
    AVX-512 / VNNI / AMX hidden (:func:`_masked_env`), and exit with its status. Call it first thing,
    before numpy, Numba or any kernel library is imported."""
    if "--avx2" not in sys.argv[1:]:
        return
    args = [a for a in sys.argv[1:] if a != "--avx2"]
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, os.path.abspath(sys.argv[0])] + args, env=_masked_env(tmp))
    raise SystemExit(r.returncode)


if __name__ == "__main__":
    # python bench/_machine.py --avx2 COMMAND ...: run any command (``hwsim sweep ...``) the same way
    if len(sys.argv) < 3 or sys.argv[1] != "--avx2":
        raise SystemExit("usage: python bench/_machine.py --avx2 COMMAND [ARGS...]")
    with tempfile.TemporaryDirectory() as tmp:
        raise SystemExit(subprocess.run(sys.argv[2:], env=_masked_env(tmp)).returncode)
