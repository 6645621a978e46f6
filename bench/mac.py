"""Throughput of the emulated MAC kernels (``python bench/mac.py [--batch 16] [--repeat 3]``).

For a 512x512x512 matmul and the conv layers of the seed CIFAR CNN (32x32x3 input: Conv 3x3 32 same,
Conv 3x3 32 valid, maxpool, Conv 3x3 64 same, Conv 3x3 64 valid; a batch of images), and the presets
int8_int32, fp8_e4m3_fp16 (nearest and stochastic) and bf16_fp32, prints MAC/s and its ratio to

* numpy float32 matmul of the same GEMM shape (for convolutions: the im2col GEMM
  (N*OH*OW, kh*kw*Cin) x (kh*kw*Cin, Cout), the im2col itself not timed), measured in the same run;
* APyTypes (an accumulator context on the same operand formats) on a slice of the same GEMM: APyTypes
  is slow, so it is timed on a few rows and reported per MAC. Its closest equivalents round every
  product into the accumulator format (hwsim's presets multiply exactly), the same amount of work.

Also prints the first-call time (JIT compilation) of each kernel in a fresh process whose Numba cache
is an empty temporary directory. Timings are the best of ``--repeat`` runs after a warm-up call, the
numpy baseline of each problem timed interleaved with the kernel runs (the machine's load drifts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402

_machine.avx2_from_argv()  # --avx2: rerun with AVX-512 hidden, before numpy / Numba load
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as kernels/__init__.py; before numpy loads

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import apytypes as apy  # noqa: E402

import kernels  # noqa: E402
from kernels.mac import MacSpec, as_spec  # noqa: E402

PRESETS = [("int8_int32", "int8_int32"), ("fp8_e4m3_fp16", "fp8_e4m3_fp16"),
           ("fp8_e4m3_fp16 stochastic", MacSpec("fp8_e4m3", "fp16", fma=True, rounding="stochastic")),
           ("bf16_fp32", "bf16_fp32"),
           # products rounded into the accumulator format: exactly APyTypes' accumulator-context semantics
           ("fp16_fp16 (rounded products)", "fp16_fp16"),
           ("bf16_bf16 (rounded products)", MacSpec("bf16", "bf16", product="bf16"))]
# (name, input H, W, Cin, Cout, padding); the maxpool between layers 2 and 3 halves 30 -> 15
CIFAR_CONVS = [("conv1 3x3x3->32 same", 32, 3, 32, "same"), ("conv2 3x3x32->32 valid", 32, 32, 32, "valid"),
               ("conv3 3x3x32->64 same", 15, 32, 64, "same"), ("conv4 3x3x64->64 valid", 15, 64, 64, "valid")]
TARGETS = {"int8_int32": ("numpy", 0.5), "fp8_e4m3_fp16": ("numpy", 0.1), "bf16_fp32": ("numpy", 0.1),
           "fp8_e4m3_fp16 stochastic": ("numpy", 0.05), "fp16_fp16 (rounded products)": ("numpy", 0.02),
           "bf16_bf16 (rounded products)": ("numpy", 0.02)}
APY_TARGET = 30.0  # per-MAC-rounded float presets vs APyTypes
APY_CHECKED = ("fp8_e4m3_fp16", "bf16_fp32", "fp16_fp16 (rounded products)", "bf16_bf16 (rounded products)")
# absolute targets on the 512^3 matmul (GMAC/s)
ABS_TARGETS = {"fp8_e4m3_fp16 stochastic": 2.5, "fp16_fp16 (rounded products)": 2.0,
               "bf16_bf16 (rounded products)": 2.0}


def paired_times(fn, ref, repeat):
    """Best times of ``fn`` and of ``ref`` measured interleaved (the machine's load drifts; a baseline
    timed minutes apart from the kernel would not be comparable)."""
    fn()
    ref()
    tf, tr = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        tf.append(time.perf_counter() - t)
        for _ in range(3):
            t = time.perf_counter()
            ref()
            tr.append(time.perf_counter() - t)
    return min(tf), min(tr)


def operands(rng, preset, shape):
    """Random inputs suited to the preset (integers for int8, normal values for floats)."""
    if as_spec(preset).a.kind == "int":
        return rng.integers(-128, 128, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def apy_gemm_rate(preset, a, b):
    """MAC/s of APyTypes' matmul inside its accumulator context equivalent to ``preset``, on a, b."""
    spec = as_spec(preset)
    if spec.a.kind == "int":
        A = apy.APyFixedArray.from_float(np.clip(np.round(a), -128, 127), int_bits=8, frac_bits=0)
        B = apy.APyFixedArray.from_float(np.clip(np.round(b), -128, 127), int_bits=8, frac_bits=0)
        ctx = apy.APyFixedAccumulatorContext(int_bits=32, frac_bits=0, quantization=apy.QuantizationMode.TRN,
                                             overflow=apy.OverflowMode.WRAP)
    else:
        A = apy.APyFloatArray.from_float(a, exp_bits=spec.a.exp, man_bits=spec.a.man)
        B = apy.APyFloatArray.from_float(b, exp_bits=spec.b.exp, man_bits=spec.b.man)
        q = apy.QuantizationMode.STOCH_WEIGHTED if spec.is_stochastic else apy.QuantizationMode.TIES_EVEN
        ctx = apy.APyFloatAccumulatorContext(exp_bits=spec.accum.exp, man_bits=spec.accum.man, quantization=q)
    with ctx:
        t = time.perf_counter()
        A @ B
        dt = time.perf_counter() - t
    return a.shape[0] * a.shape[1] * b.shape[1] / dt


def im2col_shape(batch, h, cin, cout, padding):
    oh = h if padding == "same" else h - 2
    return batch * oh * oh, 9 * cin, cout


def first_call_times():
    """First call of each kernel in a fresh process with an empty Numba cache."""
    code = (
        "import time, numpy as np\n"
        "t = time.perf_counter(); import kernels; print(f'import kernels: {time.perf_counter() - t:.2f} s')\n"
        "x = np.ones((1, 8, 8, 4), np.float32); w = np.ones((3, 3, 4, 2), np.float32)\n"
        "for name, f in [('matmul fp8_e4m3_fp16', lambda: kernels.matmul(np.ones((4, 8)), np.ones((8, 3)), "
        "'fp8_e4m3_fp16')),\n"
        "                ('matmul again (compiled)', lambda: kernels.matmul(np.ones((4, 8)), np.ones((8, 3)), "
        "'fp8_e4m3_fp16')),\n"
        "                ('conv2d fp8_e4m3_fp16', lambda: kernels.conv2d(x, w, 'fp8_e4m3_fp16')),\n"
        "                ('depthwise_conv2d fp8_e4m3_fp16', lambda: kernels.depthwise_conv2d(x, w, "
        "'fp8_e4m3_fp16'))]:\n"
        "    t = time.perf_counter(); f(); print(f'first call {name}: {time.perf_counter() - t:.2f} s')\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=ROOT)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
        total = time.perf_counter() - t
    out = r.stdout.strip().splitlines() if r.returncode == 0 else [f"FAILED: {r.stderr.strip()[-500:]}"]
    return out + [f"(fresh process total, incl. interpreter start: {total:.2f} s)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16, help="images per conv layer (default 16)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    ap.add_argument("--apy-rows", type=int, default=8, help="least GEMM rows of the APyTypes slice (default 8)")
    ap.add_argument("--apy-macs", type=int, default=2_000_000,
                    help="least MACs of the APyTypes slice (default 2e6; more rows are taken for small K*N)")
    ap.add_argument("--avx2", action="store_true",
                    help="run with AVX-512 / VNNI hidden from CPUID: the AVX2 code of every library (bench/_machine.py)")
    ap.add_argument("--no-compile", action="store_true", help="skip the first-call compile measurement")
    ap.add_argument("--only", default=None,
                    help="comma-separated substrings: time only the presets whose label contains one of them")
    args = ap.parse_args()
    presets = [p for p in PRESETS if args.only is None or any(t in p[0] for t in args.only.split(","))]
    if not presets:
        ap.error(f"--only {args.only!r} matches no preset; labels: {', '.join(label for label, _ in PRESETS)}")
    rng = np.random.default_rng(0)
    import numba
    print(f"hwsim MAC kernel throughput; numpy {np.__version__}, numba {numba.__version__} "
          f"({numba.get_num_threads()} threads), apytypes {apy.__version__}\n{_machine.describe()}")
    print(f"batch {args.batch}, best of {args.repeat} (numpy, interleaved with each kernel run: best of "
          f"{3 * args.repeat}); APyTypes timed once on a "
          f"slice of each GEMM (>= {args.apy_rows} rows and >= {args.apy_macs:.0e} MACs; it is too slow for the full "
          "problems) in its accumulator context, which also rounds each product into the accumulator\n")

    problems = [("matmul 512x512x512", (512, 512, 512), None)]
    for name, h, cin, cout, pad in CIFAR_CONVS:
        problems.append((name, im2col_shape(args.batch, h, cin, cout, pad), (h, cin, cout, pad)))
    gemm = {}  # float32 operands of each GEMM shape for the numpy baseline
    for name, (M, K, N), _ in problems:
        gemm[name] = (rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32))

    rows = []
    summary = {}
    np_rates = {}
    for label, preset in presets:
        tot_mac = {"matmul": 0, "conv": 0}
        tot_t = {"matmul": 0.0, "conv": 0.0}
        tot_np_t = {"matmul": 0.0, "conv": 0.0}
        tot_apy_t = {"matmul": 0.0, "conv": 0.0}
        for name, (M, K, N), conv in problems:
            kind = "conv" if conv else "matmul"
            ga, gb = gemm[name]
            if conv is None:
                a, b = operands(rng, preset, (M, K)), operands(rng, preset, (K, N))
                t, t_np = paired_times(lambda: kernels.matmul(a, b, preset, seed=1), lambda: ga @ gb, args.repeat)
            else:
                h, cin, cout, pad = conv
                x = operands(rng, preset, (args.batch, h, h, cin))
                w = operands(rng, preset, (3, 3, cin, cout))
                t, t_np = paired_times(lambda: kernels.conv2d(x, w, preset, padding=pad, seed=1), lambda: ga @ gb,
                                       args.repeat)
                a, b = operands(rng, preset, (M, K)), operands(rng, preset, (K, N))
            macs = M * K * N
            rows_apy = min(M, max(args.apy_rows, -(-args.apy_macs // (K * N))))
            apy_rate = apy_gemm_rate(preset, a[:rows_apy].astype(np.float64), b.astype(np.float64))
            rate, np_rate = macs / t, macs / t_np
            np_rates.setdefault(name, []).append(np_rate)
            rows.append((label, name, rate, rate / np_rate, rate / apy_rate, apy_rate, np_rate))
            tot_mac[kind] += macs
            tot_t[kind] += t
            tot_np_t[kind] += t_np
            tot_apy_t[kind] += macs / apy_rate
        summary[label] = {k: (tot_mac[k] / tot_t[k], tot_np_t[k] / tot_t[k], tot_apy_t[k] / tot_t[k]) for k in tot_t}

    print(f"{'preset':<30} {'problem':<24} {'MMAC/s':>9} {'x numpy f32':>12} {'x APyTypes':>11} {'APy MMAC/s':>11} "
          f"{'numpy MMAC/s':>13}")
    for label, name, rate, r_np, r_apy, apy_rate, np_rate in rows:
        print(f"{label:<30} {name:<24} {rate / 1e6:>9.1f} {r_np:>12.3f} {r_apy:>11.1f} {apy_rate / 1e6:>11.2f} "
              f"{np_rate / 1e6:>13.0f}")
    print("\nnumpy float32 GEMM baselines (MMAC/s; min .. max over the presets' interleaved runs: the spread is the "
          "machine's load): " + ", ".join(f"{n}: {min(r) / 1e6:.0f}..{max(r) / 1e6:.0f}" for n, r in np_rates.items()))

    print("\ntargets (on the matmul and on all CIFAR conv layers together):")
    for label, _ in presets:
        _, need = TARGETS[label]
        for kind in ("matmul", "conv"):
            rate, r_np, r_apy = summary[label][kind]
            ok_np = r_np >= need
            msg = f"  {label:<30} {kind:<7} {rate / 1e6:8.1f} MMAC/s = {r_np:.3f}x numpy f32 (target >= {need}x: " \
                  f"{'PASS' if ok_np else 'FAIL'})"
            if kind == "matmul" and label in ABS_TARGETS:
                msg += f", target >= {ABS_TARGETS[label]} GMAC/s: {'PASS' if rate >= ABS_TARGETS[label] * 1e9 else 'FAIL'}"
            if label in APY_CHECKED:
                msg += f", {r_apy:.0f}x APyTypes (target >= {APY_TARGET:.0f}x: {'PASS' if r_apy >= APY_TARGET else 'FAIL'})"
            else:
                msg += f", {r_apy:.0f}x APyTypes"
            print(msg)

    if not args.no_compile:
        print("\nfirst-call times in a fresh process with an empty Numba cache (NUMBA_CACHE_DIR=<new temp dir>):")
        for line in first_call_times():
            print("  " + line)


if __name__ == "__main__":
    main()
