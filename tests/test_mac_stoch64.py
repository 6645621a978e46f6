"""Stochastic rounding into a float accumulator in float64 lanes on the sum's bits (``kernels.ops.Path.STOCH64``).

The lane (:func:`kernels.ops._lane_stoch64`) decides inexact float64 sums too, from the sum's dropped bits
alone, except near the decision boundary. These tests hold: the lane against the statement of
stochastic rounding evaluated in exact integer arithmetic on random pairs (products of 48, 16 and 8
bits, exact negations, addends far below the running sum), with a third of the words on the decision
boundary of the exact sum, and which lanes it must hand back to the scalar core; the gate; and the
kernels against the literal reference on problems built to hit the lane's edges, with the event
counters.
"""

import math

import numpy as np
import pytest
from numba import njit

import kernels
from kernels import ops
from kernels import reference as R
from kernels.formats import FloatFormat, parse_format
from kernels.mac import MacSpec, as_spec
from kernels.ops import Path

from _macedges import assert_convs_equal_reference, edge_problems, fp8_grid
from conftest import same_values
from test_mac_stoch32 import _format_values

_SH = 1200  # every float64 is an integer multiple of 2**-1074, so of 2**-_SH


@njit(cache=False)  # Numba's cache would not see a change in the inlined lane (another module)
def _run_lane(x, y, w, ip, fp, rbits, out, ok):
    L = ops._stoch64_consts(ip, fp, rbits)
    for i in range(x.size):
        r, g = ops._lane_stoch64(x[i], y[i], w[i], L)
        out[i] = r
        ok[i] = g


def _int(v):
    """The float64 ``v`` as an exact integer multiple of 2**-_SH."""
    m, e = math.frexp(v)
    n = int(m * 2.0 ** 53)
    return n << (e - 53 + _SH)


def _exact(x, y, fmt, W, r):
    """Stochastic rounding of the exact sum x + y (integers, no float arithmetic) into ``fmt``, no overflow
    handling, as kernels.quantize's module docstring states it: q the quantum of the exact sum's binade,
    v = |x + y| / q, n = floor(v), F = floor((v - n) * 2**r); up when F + W >= 2**r (W the word's top r
    bits). Returns (value, F)."""
    X = _int(x) + _int(y)
    if X == 0:
        return x + y, 0  # IEEE's sign of an exact zero sum (round to nearest)
    a = abs(X)
    qe = max(a.bit_length() - 1 - _SH, fmt.emin) - fmt.man
    sh = qe + _SH
    n = a >> sh
    F = ((a - (n << sh)) << r) >> sh
    up = F + W >= 1 << r
    res = math.copysign(math.ldexp(n + up, qe), -1.0 if X < 0 else 1.0)
    return (res + 0.0 if not fmt.has_negative_zero else res), F


def _addends(rng, fmt, n):
    """(x, y): x values of ``fmt``; y products of float32 (48 bits), bfloat16 and fp8 e4m3 pairs at scales
    around x's, exact negations of x, and addends far below x (sums that are inexact in float64 with t on
    the grid: the lane must hand those back)."""
    x = _format_values(rng, fmt, n)
    ex = np.frexp(np.where(x != 0, x, 1.0))[1] + rng.integers(-40, 4, n)  # scales around |x|
    kind = rng.integers(0, 3, n)
    fmts = np.array(["fp32", "bf16", "fp8_e4m3"])[kind]
    y = np.empty(n)
    for f in ("fp32", "bf16", "fp8_e4m3"):
        m = fmts == f
        y[m] = (kernels.quantize(rng.standard_normal(m.sum()), f).astype(np.float64)
                * kernels.quantize(rng.standard_normal(m.sum()), f).astype(np.float64))
    with np.errstate(over="ignore"):
        y = np.ldexp(y, ex)
    neg = rng.random(n) < 0.02
    y[neg] = -x[neg]
    far = rng.random(n) < 0.05
    # of either sign, down to below x's last float64 bit: t = x on the grid with the exact sum just above
    # or just below it (the lane must hand the latter back: its binade or quantum interval differs)
    y[far] = (np.where(x[far] != 0, x[far], 1.0) * rng.choice([-1.0, 1.0], far.sum())
              * np.ldexp(rng.random(far.sum()) + 1.0, rng.integers(-80, -53, far.sum())))
    keep = np.isfinite(y) & (np.abs(y) < 2.0 ** 1000)
    return x[keep], y[keep]


@pytest.mark.parametrize("acc", ["fp32", "fp16", "bf16", "e5m9", "fp8_e5m2", "float8_e5m2fnuz", "e11m20", "bias130"])
@pytest.mark.parametrize("r", [1, 8, 29, 32])
def test_lane_equals_the_exact_statement(rng, acc, r):
    fmt = FloatFormat(8, 7, bias=130) if acc == "bias130" else parse_format(acc)
    x, y = _addends(rng, fmt, 30_000)
    n = x.size
    w = rng.integers(0, 2 ** 32, n, dtype=np.uint64)
    W = w >> np.uint64(32 - r)
    # a third of the words on the exact sum's decision boundary: W = 2**r - F rounds up, one less down
    F = np.array([_exact(x[i], y[i], fmt, 0, r)[1] for i in range(n)], dtype=object)
    edge = rng.random(n) < 0.33
    Wb = np.array([min(max((1 << r) - int(f) - int(d), 0), (1 << r) - 1) for f, d in zip(F, rng.random(n) < 0.5)],
                  dtype=np.uint64)
    W = np.where(edge, Wb, W)
    w = (W << np.uint64(32 - r)) | (w & np.uint64((1 << (32 - r)) - 1))
    want = np.array([_exact(x[i], y[i], fmt, int(W[i]), r)[0] for i in range(n)])

    ip, fp, *_ = ops._stage_params(fmt, "stochastic", None, r)
    out = np.empty(n)
    ok = np.empty(n, np.bool_)
    _run_lane(x, y, w.astype(np.uint32), ip, fp, r, out, ok)

    with np.errstate(over="ignore", invalid="ignore"):
        t = x + y
        bb = t - x
        e = (x - (t - bb)) + (y - bb)
    inexact = e != 0
    amax = fmt.max
    # nonzero sums below the smallest quantum, unless that is a float64 subnormal (the sum is then one
    # too, and its bits hold the rounding)
    lower = 2.0 ** (fmt.emin - fmt.man)
    small = (np.abs(t) < lower) & (t != 0) & ~((lower < 2.0 ** -1022) & (np.abs(t) < 2.0 ** -1022))
    must_fail = ~np.isfinite(t) | (np.abs(t) > amax) | small
    assert not (ok & must_fail).any(), np.flatnonzero(ok & must_fail)[:5]
    assert ok[~inexact & ~must_fail].all()   # every exact in-range sum is decided in the lane ...
    settled = ok[inexact & ~must_fail & ~edge].mean()
    assert settled > 0.75, settled           # ... and most inexact ones (not those near the boundary)
    assert (inexact & ~must_fail & ~ok).any()
    # the data reach the lane's exits and its hard cases
    assert (ok & inexact & edge).sum() > 100
    assert (np.abs(t) > amax).any() or fmt.max > 2.0 ** 1000  # (addends stay below 2**1000)
    wrong = ok & ~same_values(out, want)
    assert not wrong.any(), [(x[i], y[i], int(w[i]), out[i], want[i]) for i in np.flatnonzero(wrong)[:4]]
    if not fmt.has_negative_zero:
        assert not np.signbit(out[ok & (out == 0)]).any()


@pytest.mark.parametrize("spec,data,want", [
    (MacSpec("fp32", "fp32", rounding="stochastic"), "normal", Path.STOCH64),        # 48 product bits
    (MacSpec("bf16", "fp32", rounding="stochastic"), "normal", Path.STOCH64),
    (MacSpec("fp8_e4m3", "fp32", rounding="stochastic", rand_bits=5), "normal", Path.STOCH64),
    (MacSpec("fp32", "fp16", b="fp32", rounding="stochastic"), "normal", Path.STOCH64),
    (MacSpec("fp16", "fp16", rounding="stochastic"), "normal", Path.STOCH64),        # 22 product bits
    (MacSpec("fp8_e4m3", "e10m20", rounding="stochastic"), "normal", Path.STOCH64),
    (MacSpec("fp8_e4m3", FloatFormat(10, 40, bias=1000), rounding="stochastic"), "normal", Path.GENERIC),  # 2**-1039
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), "normal", Path.STOCH32),    # float32 lanes first
    (MacSpec("fp32", "fp32", rounding="stochastic"), "nan", Path.FIXED_STOCH),
    (MacSpec("fp32", "fp32", rounding="stochastic"), "inf", Path.FIXED_STOCH),
    (MacSpec("fp32", "fp32", rounding="stochastic"), "huge", Path.FIXED_STOCH),       # beyond [2**-60, 2**60]
    (MacSpec("fp32", "fp32", rounding="stochastic", order="pairwise"), "normal", Path.GENERIC),
    (MacSpec("fp32", "fp32", rounding="stochastic", product="fp32"), "normal", Path.PRODUCT),
    (MacSpec("fp8_e4m3", "fixed32.16", rounding="stochastic"), "normal", Path.FIXED_STOCH),  # fixed point
    (MacSpec("fp32", "fp32", rounding="nearest"), "normal", Path.NEAREST),
])
def test_gate(rng, spec, data, want):
    spec = as_spec(spec)
    a, b = rng.standard_normal((4, 40)), rng.standard_normal((40, 3))
    if data in ("nan", "inf"):
        a[1, 2] = np.nan if data == "nan" else -np.inf
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    if data == "huge":
        A[0, 0] = 2.0 ** 70
    assert ops._paths(spec, A, B) == want


def _wide_problems(rng, K):
    """edge_problems plus float32 operands: random ones (48-bit products) and a big first product then
    small ones (most additions inexact in float64 too), and products near float32's largest value."""
    out = edge_problems(rng, K)
    out.append(("fp32", rng.standard_normal((4, K)), rng.standard_normal((K, 7))))
    a = rng.standard_normal((3, K)) * 2.0 ** -20
    a[:, 0] = 3.0
    out.append(("drift", a, rng.standard_normal((K, 5))))
    out.append(("big", np.full((2, K), 2.0 ** 59), np.full((K, 3), 2.0 ** 59) * rng.choice([-1, 1], (K, 3))))
    return out


@pytest.mark.parametrize("a,acc,overflow,rbits", [
    ("fp32", "fp32", None, None), ("fp32", "fp32", "saturate", 7), ("bf16", "fp32", None, 32),
    ("fp32", "fp16", None, None), ("fp16", "fp16", "saturate", 3), ("fp16", "e5m9", None, 30),
    ("fp16", "float8_e5m2fnuz", None, None), ("bf16", "bias130", None, None),
])
@pytest.mark.parametrize("K", [1, 2, 7, 64, 301])
def test_matmul_lane_equals_reference(rng, a, acc, overflow, rbits, K):
    acc = FloatFormat(8, 7, bias=130) if acc == "bias130" else acc
    spec = MacSpec(a, acc, rounding="stochastic", overflow=overflow, rand_bits=rbits)
    hit = False
    for name, x, w in _wide_problems(rng, K):
        X, W = ops._prepare(x, spec.a, 1), ops._prepare(w, spec.b, 0)
        path = ops._paths(spec, X, W)
        hit |= path == Path.STOCH64
        got, gs = kernels.matmul(x, w, spec, seed=7, offset=3, stats=True)
        want, ws = R.ref_matmul(x, w, spec, seed=7, offset=3, stats=True)
        assert got.dtype == want.dtype
        assert same_values(got, want).all(), (name, path, got, want)
        assert [getattr(gs, f) for f in ("saturated", "wrapped", "overflowed", "invalid")] == \
            [getattr(ws, f) for f in ("saturated", "wrapped", "overflowed", "invalid")], name
    assert hit


def test_convolutions_on_the_lane_equal_reference(rng):
    spec = MacSpec("bf16", "fp32", rounding="stochastic", out="bf16")
    x = rng.standard_normal((2, 9, 8, 5))
    w = rng.standard_normal((3, 3, 5, 7))
    wd = fp8_grid(rng, (3, 2, 5, 2), 2.0)
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == Path.STOCH64
    assert_convs_equal_reference(spec, x, w, wd)
