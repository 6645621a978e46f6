"""Run Python code in a subprocess that sees this CPU without AVX-512, AVX-VNNI and AMX (``tests/_cpumask.c``):
for oracles whose arithmetic depends on the CPU they dispatch to, such as onnxruntime's u8s8 GEMM.

Needs Linux's CPUID faulting (``cpuid_fault`` in /proc/cpuinfo) and a C compiler; :func:`unavailable` says why
not where either is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "_cpumask.c")


def cpu_flags() -> list[str]:
    """The x86 feature flags of /proc/cpuinfo; [] where there are none (another OS or architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return line.split(":", 1)[1].split()
    return []


def unavailable() -> str | None:
    """Why a masked subprocess cannot run here, or None."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return f"CPUID masking needs x86-64 Linux, this is {sys.platform} {os.uname().machine}"
    if "cpuid_fault" not in cpu_flags():
        return "this CPU (or its hypervisor) has no CPUID faulting (no 'cpuid_fault' in /proc/cpuinfo)"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler ('cc') to build tests/_cpumask.c"
    return None


def build(directory: str) -> str:
    """Compile the shim into ``directory``; returns the shared object's path."""
    out = os.path.join(directory, "cpumask.so")
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-o", out, SOURCE], check=True,
                   capture_output=True, text=True)
    return out


def run_masked(directory: str, code: str) -> None:
    """Run ``code`` in a new Python process whose CPUID reports no AVX-512 / VNNI / AMX, before anything is
    imported. Raises with the child's output if it fails, or if the mask cannot be installed, or if no CPUID
    was answered (the mask took no effect)."""
    lib = build(directory)
    boot = textwrap.dedent(f"""
        import ctypes
        _lib = ctypes.CDLL({lib!r})
        _err = _lib.hwsim_mask_cpu()
        if _err:
            raise SystemExit(f"hwsim_mask_cpu failed: errno {{_err}}")
    """) + textwrap.dedent(code) + textwrap.dedent("""
        if _lib.hwsim_cpuid_trapped() == 0:
            raise SystemExit("no CPUID instruction was trapped: the masked library did not ask for the CPU's features")
    """)
    r = subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, cwd=directory)
    if r.returncode != 0:
        raise RuntimeError(f"masked subprocess failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def vnni() -> str | None:
    """The VNNI-like features of this CPU (comma-separated), or None."""
    found = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in cpu_flags()]
    return ", ".join(found) or None


def ort_default_session_without_vnni(directory, model_path: str, x):
    """Outputs of onnxruntime's default CPU session (no session options) on ``x`` (the model's one input), as it
    computes them on an x86 CPU with AVX2 but without VNNI: in this process where the CPU has no VNNI, else in a
    subprocess with the CPU's VNNI / AVX-512 hidden (:func:`run_masked`). Calls ``pytest.skip`` with the reason
    where neither is possible."""
    import numpy as np
    import onnxruntime as ort
    import pytest

    if "avx2" not in cpu_flags():
        pytest.skip(f"this CPU ({os.uname().machine}) reports no AVX2: onnxruntime's AVX2 u8s8 kernels cannot run here")
    if vnni() is None:
        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    why = unavailable()
    if why:
        pytest.skip(f"this CPU has {vnni()}, and its VNNI cannot be hidden from onnxruntime: {why}")
    directory = str(directory)
    np.save(os.path.join(directory, "x.npy"), x)
    run_masked(directory, f"""
        import numpy as np
        import onnxruntime as ort
        sess = ort.InferenceSession({str(model_path)!r}, providers=["CPUExecutionProvider"])
        np.save("y.npy", sess.run(None, {{sess.get_inputs()[0].name: np.load("x.npy")}})[0])
    """)
    return np.load(os.path.join(directory, "y.npy"))
