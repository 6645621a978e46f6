"""Throughput of kernels.quantize beside ml_dtypes' casts and qtorch's quantizers, measured in one run.

    python bench/quantize.py [--log2n 22] [--repeats 7] [--threads N]

For each case: elements/s of hwsim and of the references on the same float32 array (standard normal
times 4: every binade of the fp8 range, some saturation), after one warm-up call each (numba compiles /
loads its cache, qtorch's extension is built on import); the best of ``--repeats`` runs counts.
Ratios are hwsim / reference (> 1: hwsim faster). Targets (from the issue): >= 10x qtorch nearest and
>= 10x ml_dtypes' float8 cast, >= 5x qtorch stochastic.

Reference semantics differ in details (qtorch: ties away in float_quantize, no inf below e8;
ml_dtypes: its own overflow rules); the work per element is the comparable part.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402

_machine.avx2_from_argv()  # --avx2: rerun with AVX-512 hidden, before numpy / torch / Numba load

import ml_dtypes  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from qtorch.quant import fixed_point_quantize, float_quantize  # noqa: E402

import kernels  # noqa: E402


def best_time(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=22)
    ap.add_argument("--avx2", action="store_true",
                    help="run with AVX-512 / VNNI hidden from CPUID: the AVX2 code of every library (bench/_machine.py)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: numba's)")
    args = ap.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)

    n = 1 << args.log2n
    x = (np.random.default_rng(0).standard_normal(n) * 4).astype(np.float32)
    xt = torch.from_numpy(x)
    e4m3, bf16 = ml_dtypes.float8_e4m3fn, ml_dtypes.bfloat16

    cases = [
        ("e4m3 nearest", lambda: kernels.quantize(x, "float8_e4m3fn"),
         [("ml_dtypes astype", lambda: x.astype(e4m3).astype(np.float32)),
          ("qtorch float nearest", lambda: float_quantize(xt, 4, 3, rounding="nearest"))]),
        ("e4m3 stochastic", lambda: kernels.quantize(x, "float8_e4m3fn", rounding="stochastic", seed=1),
         [("qtorch float stochastic", lambda: float_quantize(xt, 4, 3, rounding="stochastic"))]),
        ("bf16 nearest", lambda: kernels.quantize(x, "bf16"),
         [("ml_dtypes astype", lambda: x.astype(bf16).astype(np.float32)),
          ("qtorch float nearest", lambda: float_quantize(xt, 8, 7, rounding="nearest"))]),
        ("int8 nearest", lambda: kernels.quantize(x, "int8"),
         [("qtorch fixed nearest", lambda: fixed_point_quantize(xt, 8, 0, rounding="nearest"))]),
        ("fixed16.8 nearest", lambda: kernels.quantize(x, "fixed16.8"),
         [("qtorch fixed nearest", lambda: fixed_point_quantize(xt, 16, 8, rounding="nearest"))]),
    ]

    print(f"n = 2**{args.log2n} float32 elements, best of {args.repeats}; numba threads {numba.get_num_threads()}, "
          f"torch threads {torch.get_num_threads()}\n{_machine.describe()}")
    print(f"{'case':20s} {'hwsim Mel/s':>12s}   {'reference':26s} {'ref Mel/s':>10s} {'hwsim/ref':>10s}")
    for name, hw, refs in cases:
        t = best_time(hw, args.repeats)
        for i, (rname, rf) in enumerate(refs):
            tr = best_time(rf, args.repeats)
            head = f"{name:20s} {n / t / 1e6:12.1f}" if i == 0 else f"{'':20s} {'':12s}"
            print(f"{head}   {rname:26s} {n / tr / 1e6:10.1f} {tr / t:9.1f}x")


if __name__ == "__main__":
    main()
