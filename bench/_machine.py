"""The machine a bench ran on, printed with every figure: CPU model, core count, the SIMD flags that decide
which kernels run (AVX2, FMA, F16C, AVX-512, VNNI), and Numba's target CPU (``NUMBA_CPU_NAME`` emulates an
older CPU's code generation)."""

from __future__ import annotations

import os

SIMD = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
        "avx512_bf16", "avx512_fp16", "amx_int8")


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
    target = os.environ.get("NUMBA_CPU_NAME", "host")
    return f"CPU {model}, {os.cpu_count()} CPUs; SIMD flags: {' '.join(simd)}; Numba target CPU: {target}"
