"""The kernel paths (:class:`kernels.ops.Path`): each spec compiles only the path it takes.

A cold process (empty Numba cache) that runs one fp8_e4m3_fp16 matmul, conv2d and depthwise conv must
compile exactly one row function (the binary16 lane) and one kernel per operand layout; the other
row functions (the generic per-stage loop above all, which took most of the 75 s of a cold
``hwsim run`` when every path was compiled into one function) must stay uncompiled.
"""

import json
import os
import subprocess
import sys
from pathlib import Path as FsPath

import numpy as np
import pytest
from _macedges import edge_problems
from conftest import same_values

import kernels
from kernels import ops
from kernels import reference as R
from kernels.mac import MacSpec, as_spec
from kernels.ops import Path

ROOT = FsPath(__file__).resolve().parents[1]

_PROBE = r"""
import json, numpy as np
import kernels
import importlib
from kernels import ops
Q = importlib.import_module("kernels.quantize")
rng = np.random.default_rng(0)
a = kernels.quantize(rng.standard_normal((5, 40)), "fp8_e4m3")
b = kernels.quantize(rng.standard_normal((40, 6)), "fp8_e4m3")
x = kernels.quantize(rng.standard_normal((1, 6, 6, 3)).astype(np.float32), "fp8_e4m3")
kernels.matmul(a, b, "fp8_e4m3_fp16")
kernels.conv2d(x, rng.standard_normal((3, 3, 3, 4)), "fp8_e4m3_fp16", padding="same")
kernels.depthwise_conv2d(x, rng.standard_normal((3, 3, 3, 2)), "fp8_e4m3_fp16", padding="same")
rows = {n: len(getattr(ops, n).signatures) for n in dir(ops) if n.startswith(("_row_", "_tile_"))}
print(json.dumps({"rows": rows, "kernels": sorted(ops._KERNELS), "q_f32": sorted(Q._Q_F32_FLOAT),
                  "q_nearest": len(Q._q_f32_nearest.signatures),
                  "path": int(ops._paths(kernels.mac.as_spec("fp8_e4m3_fp16"), a, b))}))
"""


def test_a_cold_process_compiles_only_its_path(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    half = int(Path.HALF_F16) if ops.HAVE_F16C else int(Path.NEAREST)
    assert got["path"] == half
    # matmul and conv2d: the float32 paths' tiles of rows, dense and sparse (one kernel holds both: which one runs
    # depends on the data); depthwise: its own row function, binary16 only
    want_rows = {"_tile_f16", "_tile_sparse_f16", "_row_dw_f16"} if ops.HAVE_F16C else {"_row_nearest"}
    kinds = ("native32", "f16", "bf16", "product_f16", "product_bf16", "product_exact_f16", "product_exact_bf16")
    assert set(got["rows"]) == {"_row_stoch32", "_row_nearest", "_row_lane", "_row_fixed_stoch", "_row_product",
                                "_row_generic", "_row_stoch64", "_row_stoch32_product",
                                *(f"_tile_{k}" for k in kinds), *(f"_tile_sparse_{k}" for k in kinds),
                                *(f"_row_dw_{k}" for k in kinds)}
    assert {n for n, c in got["rows"].items() if c} == want_rows, got["rows"]
    # one kernel per operand layout (matmul runs on the convolution kernel), no output stage
    assert [tuple(k) for k in got["kernels"]] == [(ops._CONV, half, 0), (ops._DEPTHWISE, half, 0)]
    # float32 -> fp8, round to nearest even: one quantize loop, the adder's, and none of _f32_round's
    assert (got["q_f32"], got["q_nearest"]) == ([], 1)


_TILE_PROBE = r"""
import json, numpy as np
from kernels import ops
out = {}
for kind, rows in zip(ops._KIND_NAMES, ops._TILE_ROWS):  # every tile: register-blocked blocks (kernels._vec)
    tile = getattr(ops, "_tile_" + kind)
    a = np.ones((rows, 3), np.float32)
    rows_at = (a.ctypes.data + a.strides[0] * np.arange(rows, dtype=np.int64)).reshape(1, rows)
    tile(np.int64(1), np.int64(3), np.int64(24), rows_at, np.ones((3, 24), np.float32), np.empty((rows, 24), np.float32),
         np.int64(1))
    out[kind] = [sum(tile.stats.cache_hits.values()), sum(tile.stats.cache_misses.values())]
print(json.dumps(out))
"""


def test_vector_tiles_load_from_the_disk_cache(tmp_path):
    """The tiles call their blocks as module globals: held in a closure variable, an intrinsic went into
    the tile's cache key with a per-process id, and no later process ever loaded the tile (review)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    runs = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", _TILE_PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert runs[0] == {k: [0, 1] for k in ops._KIND_NAMES}
    assert runs[1] == {k: [1, 0] for k in ops._KIND_NAMES}


def test_path_names_are_the_kernel_constants():
    """The ints the kernels branch on are the enum's values (the branches are pruned on them)."""
    assert [ops._GENERIC, ops._LANE, ops._NEAREST, ops._FIXED_STOCH, ops._HALF_F16, ops._HALF_BF16, ops._STOCH32,
            ops._NATIVE32, ops._PRODUCT, ops._HALF_PRODUCT_F16, ops._HALF_PRODUCT_BF16, ops._STOCH64,
            ops._STOCH32_PRODUCT, ops._HALF_PRODUCT_EXACT_F16, ops._HALF_PRODUCT_EXACT_BF16] == [int(p) for p in Path]
    assert len(set(Path)) == 15


def test_product_rounded_specs_take_the_product_path():
    """Sequential product-rounded float MACs (the fp16_fp16 preset, the sweep's fp32 / bf16 operands into
    an fp16 accumulator, stochastic ones too) take Path.PRODUCT, or HALF_PRODUCT_EXACT_F16 where they can; what it
    cannot round stays GENERIC."""
    a = np.ones((2, 3))
    take = [as_spec("fp16_fp16"), MacSpec("fp32", "fp16", product="fp16"), MacSpec("bf16", "fp16", product="fp16"),
            MacSpec("fp32", "fp32", product="fp32", rounding="stochastic"),
            MacSpec("fp16", "fp16", product="fp16", product_rounding="stochastic", accum_rounding="nearest")]
    for spec in take:  # with event counters (the float32 lanes count nothing)
        assert ops._paths(spec, a, a.T, stats=True) == Path.PRODUCT, spec.name
    assert ops._paths(as_spec("fp16_fp16"), a, a.T) == (Path.HALF_PRODUCT_EXACT_F16 if ops.HAVE_F16C else Path.PRODUCT)
    stay = [MacSpec("fp16", "fp16", product="fp16", order="pairwise"),
            MacSpec("fp16", "fp16", product="fp16", rounding="toward_zero"),
            MacSpec("int8", "fixed32.8", product="fixed16.4"), MacSpec("fp16", "e8m0", product="fp16")]
    for spec in stay:
        assert ops._paths(spec, a, a.T) == Path.GENERIC, spec.name


@pytest.mark.parametrize("spec", [
    "fp16_fp16",
    MacSpec("fp32", "fp16", product="fp16"),
    MacSpec("fp32", "fp16", product="fp16", rounding="stochastic", rand_bits=5),  # (bf16: Path.STOCH32_PRODUCT)
    MacSpec("fp16", "fp16", product="fp16", product_rounding="stochastic", accum_rounding="nearest", out="fp8_e4m3"),
    MacSpec("fp32", "fp32", product="fp32", rounding="stochastic", overflow="saturate"),
], ids=str)
@pytest.mark.parametrize("K", [1, 2, 7, 64, 301])
def test_product_path_equals_reference_on_edge_problems(spec, K):
    """Overflow to inf / saturation, subnormal sums, exact cancellation (signed zeros), ties, NaN and inf
    operands, and products in the product format's subnormal range: values and event counts equal the
    literal reference."""
    spec = as_spec(spec)
    rng = np.random.default_rng(K)
    problems = edge_problems(rng, K)
    a, b = rng.standard_normal((3, K)) * 1e3, rng.standard_normal((K, 5)) * 1e3
    a[0, 0], a[1, -1], b[-1, 2] = np.nan, np.inf, -np.inf
    problems.append(("nonfinite", a, b))
    tiny = np.sqrt(spec.product.min_normal) / 8  # products below the product format's smallest normal
    problems.append(("product subnormals", rng.standard_normal((4, K)) * tiny, rng.standard_normal((K, 6)) * tiny))
    for name, a, b in problems:
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        assert ops._paths(spec, A, B, stats=True) == Path.PRODUCT
        got, gs = kernels.matmul(a, b, spec, seed=9, offset=2, stats=True)
        want, ws = R.ref_matmul(a, b, spec, seed=9, offset=2, stats=True)
        assert got.dtype == want.dtype and same_values(got, want).all(), (name, got, want)
        assert [getattr(gs, f) for f in ("saturated", "wrapped", "overflowed", "invalid")] == \
            [getattr(ws, f) for f in ("saturated", "wrapped", "overflowed", "invalid")], name


def test_every_factory_made_kernel_has_its_own_cache_name():
    """Numba names its disk cache after a function's qualified name: closures of one factory that shared one
    could swap compiled code when two processes compiled them at once (``ops._cached``; a warm sweep gave
    NATIVE32 matmuls another path's code). Every tile, depthwise row and kernel has its own name."""
    fns = [getattr(ops, f"_{kind}_{k}") for kind in ("tile", "row_dw") for k in ops._KIND_NAMES]
    fns += [ops._make_kernel(lay, int(p), h) for lay in (ops._CONV, ops._DEPTHWISE) for p in Path for h in (0, 1)]
    names = [f.py_func.__qualname__ for f in fns]
    assert len(set(names)) == len(names) == 14 + 2 * len(Path) * 2
