"""Stochastic rounding into a float or fixed-point accumulator in float32 lanes (``kernels.ops.Path.STOCH32``).

The lane (:func:`kernels.ops._lane_stoch32`) adds the word's top bits to the float32 sum's bits below
the quantum and clears them, where the float64 lanes compare fractions. These tests hold: the lane against the
exact-integer statement of stochastic rounding (``floor(f * 2**r) + W >= 2**r``) on random pairs,
including which lanes it must hand back to the scalar core; the counter shortcut the lane uses for
its random words; the gate; and the kernels against the literal reference on problems built to hit
the lane's edges (overflow to inf, saturation and wrap, cancellation to signed zeros, sums in
binary16's subnormal range, few and many random bits), with the event counters.
"""

import numpy as np
import pytest
from numba import njit

import kernels
from kernels import ops
from kernels.ops import Path
from kernels import reference as R
from kernels.formats import FixedFormat, FloatFormat, parse_format
from kernels.mac import MacSpec, as_spec
from kernels.rng import fill_streams, make_key, rand32, rand32_py, step, word

from _macedges import assert_convs_equal_reference, edge_problems, fp8_grid
from conftest import same_values


@njit(cache=False)  # Numba's cache would not see a change in the inlined lane (another module)
def _run_lane(x, y, w, L, out, ok):
    for i in range(x.size):
        r, g = ops._lane_stoch32(x[i], y[i], w[i], L, L[6])
        out[i] = r
        ok[i] = g


def _exact(t, fmt, w, r):
    """Stochastic rounding of the exact float64 values ``t`` into ``fmt`` (no overflow handling), as
    the module docstring of kernels.quantize states it: with quantum q of t's binade, ``v = |t| / q``,
    n = floor(v), f = v - n, round up when ``floor(f * 2**r) + (w >> (32 - r)) >= 2**r``."""
    if isinstance(fmt, FixedFormat):
        qe = np.full(t.shape, -fmt.frac)
    else:
        _, ex = np.frexp(np.abs(t))
        qe = np.maximum(ex - 1, fmt.emin) - fmt.man
    v = np.ldexp(np.abs(t), -qe)
    n = np.floor(v)
    F = np.floor(np.ldexp(v - n, r)).astype(np.uint64)
    up = F + (w >> np.uint64(32 - r)) >= np.uint64(1 << r)
    res = np.copysign(np.ldexp(n + up, qe), t)
    if isinstance(fmt, FixedFormat) or not fmt.has_negative_zero:
        res = res + 0.0
    return res, qe, v - n


def _lo(fmt):
    return fmt.min if isinstance(fmt, FixedFormat) else -fmt.max


def _format_values(rng, fmt, n):
    """Values of ``fmt`` over its binades, subnormals and zeros included, both signs."""
    if isinstance(fmt, FixedFormat):
        codes = np.round(np.ldexp(rng.random(n), rng.integers(0, fmt.bits, n))) * rng.choice([-1, 1], n)
        v = np.ldexp(np.clip(codes, fmt.qmin, fmt.qmax), -fmt.frac)
        v[rng.random(n) < 0.02] = 0.0
        return v
    mag = np.ldexp(rng.random(n) + 0.5, rng.integers(fmt.emin - fmt.man - 2, fmt.emax + 1, n))
    v = kernels.quantize(np.copysign(mag, rng.standard_normal(n)), fmt, overflow="saturate").astype(np.float64)
    v[rng.random(n) < 0.02] = 0.0
    v[rng.random(n) < 0.01] = -0.0
    return v


_FLOAT_ACCS = ["fp16", "bf16", "fp8_e5m2", "e6m9", "float8_e5m2fnuz", "fp8_e4m3", "e3m2"]
_FIXED_ACCS = ["fixed16.6", "fixed12.11", "int8", "fixed16.-3"]


@pytest.mark.parametrize("acc,kind", [(a, "own") for a in _FLOAT_ACCS + _FIXED_ACCS]
                         + [(a, "float") for a in _FLOAT_ACCS])
@pytest.mark.parametrize("r", [1, 8, 24, 25, 32])
def test_lane_equals_the_exact_statement(rng, acc, kind, r):
    """The lane with the kind the kernels give the format (``own``: WIDE for floats with emin <= -14, else
    SMALL) and with the FLOAT kind (STOCH32_PRODUCT's, and the redo's after a WIDE block)."""
    fmt = parse_format(acc)
    n = 200_000
    x = _format_values(rng, fmt, n)
    # products of fp8 e4m3 pairs at scales around x's (exact in float32), a few exact negations of x
    scale = np.where(x != 0, np.abs(x), 1.0) * np.ldexp(1.0, rng.integers(-30, 4, n))
    y = (kernels.quantize(rng.standard_normal(n), "fp8_e4m3").astype(np.float64)
         * kernels.quantize(rng.standard_normal(n), "fp8_e4m3").astype(np.float64)
         * np.ldexp(1.0, np.round(np.log2(scale)).astype(np.int64)))
    with np.errstate(over="ignore"):
        y = y.astype(np.float32).astype(np.float64)
    neg = rng.random(n) < 0.02
    y[neg] = -x[neg]
    # full 24-bit significands (inexact float32 sums), some added to zero far below the smallest
    # subnormal (fractions of a quantum with bits below 2**-24)
    full = rng.random(n) < 0.1
    y[full] = np.ldexp(rng.random(full.sum()) + 1.0, rng.integers(-60, 0, full.sum())).astype(np.float32)
    x[full & (rng.random(n) < 0.5)] = 0.0
    keep = np.isfinite(y)  # products above float32's range are no float32 operands
    x, y = x[keep], y[keep]
    n = x.size
    w = rng.integers(0, 2 ** 32, n, dtype=np.uint64)
    # a third of the words sit on the decision boundary: W = 2**r - floor(f * 2**r) rounds up, one less
    # rounds down (for r > 24: the top 24 bits, the rest random)
    t = x + y
    _, _, f = _exact(t, fmt, w, r)
    rb = min(r, 24)
    edge = (rng.random(n) < 0.33) & np.isfinite(f)
    W = (2 ** rb - np.floor(np.ldexp(np.where(edge, f, 0.0), rb))).astype(np.int64) - (rng.random(n) < 0.5)
    W = np.clip(W, 0, 2 ** rb - 1).astype(np.uint64)
    w = np.where(edge, (W << np.uint64(32 - rb)) | (w & np.uint64((1 << (32 - rb)) - 1)), w)
    out = np.empty(n, np.float32)
    ok = np.empty(n, np.bool_)
    with np.errstate(over="ignore"):
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ip, fp, *_ = ops._stage_params(fmt, "stochastic", None, r)
    L = ops._stoch32_consts(ip, fp, r)
    fixed = isinstance(fmt, FixedFormat)
    wide = not fixed and fmt.emin <= -14
    assert L[6] == (ops._SR_SMALL if fixed or not wide else ops._SR_WIDE)
    if kind == "float":
        L = L[:6] + (ops._SR_FLOAT,)
    _run_lane(x32, y32, w, L, out, ok)

    t = x + y
    bb = t - x
    exact = ((x - (t - bb)) + (y - bb)) == 0  # TwoSum in float64: t is the exact sum
    with np.errstate(over="ignore"):
        t32 = (x32 + y32).astype(np.float64)
    want, qe, f = _exact(t, fmt, w, r)
    # the lane decides exactly these; every other lane goes to the scalar core: an inexact or non-finite
    # sum, one beyond the smaller of the largest magnitudes (even where it rounds back into range), and a
    # nonzero one below a bound: WIDE, the smallest normal; FLOAT, the smallest quantum; SMALL, 2**-8
    # quanta; for the last two, unless that bound is a float32 subnormal (the sum is then a subnormal
    # too, and its bits hold the rounding: every format here has emin >= -126, as the gate requires)
    amax = min(fmt.max, -_lo(fmt))
    if kind == "own" and wide:
        lower = 2.0 ** fmt.emin
        small = (np.abs(t) < lower) & (t != 0)
    else:
        lower = 2.0 ** (-fmt.frac - 8 if fixed else fmt.emin - fmt.man - (8 if kind == "own" else 0))
        small = (np.abs(t) < lower) & (t != 0) & ~((lower <= 2.0 ** -126) & (np.abs(t) < 2.0 ** -126))
    decides = exact & (t32 == t) & np.isfinite(t32) & (np.abs(t) <= amax) & ~small
    assert np.array_equal(ok, decides), np.flatnonzero(ok != decides)[:5]
    assert (decides | small).mean() > 0.5  # the data reach the lane's common case, not only its exits
    # ... and each of its exits
    assert (exact & (t32 != t)).any() and (~exact).any() and (np.abs(t) > amax).any()
    if lower > 2.0 ** -126:  # else every sum below it is a float32 subnormal, which the lane rounds
        assert (small & exact & (t32 == t)).any()
    if kind == "own" and not wide:  # SMALL: sums below the quantum that the lane rounds to 0 or the quantum
        q = 2.0 ** (-fmt.frac if fixed else fmt.emin - fmt.man)
        assert (decides & (np.abs(t) < q) & (t != 0)).any()
    if not (kind == "own" and wide):  # sums in the format's subnormal range, which WIDE hands back
        assert (decides & (np.abs(t) < 2.0 ** (-fmt.frac if fixed else fmt.emin)) & (t != 0)).any()
    if kind == "float" and fmt.emin - fmt.man < -126:  # quanta below float32's normal range
        assert ((qe < -126) & decides).any()
    wrong = ok & ~same_values(out, want)
    assert not wrong.any(), [(x[i], y[i], w[i], out[i], want[i]) for i in np.flatnonzero(wrong)[:4]]
    if isinstance(fmt, FixedFormat) or not fmt.has_negative_zero:
        assert not np.signbit(out[ok & (out == 0)]).any()


@njit(cache=False)
def _lane_words(key, e0, stage, n, ks):
    """The kernels' per-row shortcut: streams of outputs e0 .. e0 + n - 1 once, then one word per (j, k)."""
    S = np.empty(n, np.uint32)
    M = np.empty(n, np.uint32)
    fill_streams(key, e0 * 4 + stage, 4, n, S, M)
    out = np.empty((ks.size, n), np.uint64)
    for i in range(ks.size):
        c = step(ks[i])
        for j in range(n):
            out[i, j] = word(S[j], M[j], c)
    return out


def test_lane_words_are_rand32_of_the_mac_counters(rng):
    """The streams a row fills once and the words its lanes draw per k are rand32 (and the literal numpy
    statement rand32_py) of the counters (e0 + j, stage, k) (kernels.ops._counter), also where e0 * 4
    passes 2**32 (the counter keeps its low 64 bits)."""
    key = make_key(12345)
    for e0 in [0, 5, int(rng.integers(0, 2 ** 26)), 2 ** 30 - 3, 2 ** 31 + 7]:
        for stage in (0, 1, 3):
            ks = np.concatenate([[0, 1, 2 ** 32 - 1], rng.integers(0, 2 ** 20, 5)]).astype(np.int64)
            got = _lane_words(key, e0, stage, 9, ks)
            counters = np.array([[(((e0 + j) * 4 + stage) << 32) + int(k) for j in range(9)] for k in ks],
                                dtype=object) % 2 ** 64
            want = rand32_py(key, counters.astype(np.uint64))
            assert np.array_equal(got, want), (e0, stage)
            assert all(rand32(key, np.uint64(c)) == w for c, w in zip(counters.ravel()[:5], want.ravel()[:5]))


@pytest.mark.parametrize("spec,data,want", [
    (MacSpec("fp8_e4m3", "fp16", fma=True, rounding="stochastic"), "normal", Path.STOCH32),
    (MacSpec("fp8_e4m3", "bf16", rounding="stochastic"), "normal", Path.STOCH32),
    (MacSpec("bf16", "bf16", rounding="stochastic", rand_bits=7), "normal", Path.STOCH32),
    (MacSpec("fp8_e5m2", "e5m6", rounding="stochastic"), "normal", Path.STOCH32),
    (MacSpec("bf16", "fp32", rounding="stochastic"), "normal", Path.STOCH64),       # float32 sums: mostly inexact
    (MacSpec("fp16", "fp16", rounding="stochastic"), "normal", Path.STOCH64),       # 22 product bits: likewise
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic", overflow="saturate"), "normal", Path.STOCH32),
    (MacSpec("mxfp8_e4m3", "bf16", rounding="stochastic"), "normal", Path.STOCH32),
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), "nan", Path.FIXED_STOCH),
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), "inf", Path.FIXED_STOCH),
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), "huge", Path.FIXED_STOCH),     # products not exact in float32
    (MacSpec("bf16", "fp16", b="fp8_e4m3", rounding="stochastic"), "normal", Path.STOCH32),  # 8 + 4 product bits
    (MacSpec("bf16", "fp16", b="fp16", rounding="stochastic"), "normal", Path.STOCH64),       # 8 + 11
    (MacSpec("fp8_e4m3", "e5m17", rounding="stochastic"), "normal", Path.STOCH64),           # 18 accumulator bits
    (MacSpec("fp32", "fp32", rounding="stochastic"), "normal", Path.STOCH64),       # 48 product bits
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic", order="pairwise"), "normal", Path.GENERIC),
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic", product="fp16"), "normal", Path.STOCH32_PRODUCT),  # rounded products
    (MacSpec("fp8_e4m3", "e8m0", rounding="stochastic"), "normal", Path.GENERIC),   # no mantissa bit, no subnormals
    (MacSpec("fp8_e4m3", "e9m10", rounding="stochastic"), "normal", Path.STOCH64),  # not a float32 format
    (MacSpec("fp8_e4m3", "fixed16.8", rounding="stochastic"), "normal", Path.STOCH32),
    (MacSpec("fp8_e4m3", "fixed16.4", rounding="stochastic", overflow="wrap"), "normal", Path.STOCH32),
    (MacSpec("fp8_e4m3", "fixed32.16", rounding="stochastic"), "normal", Path.FIXED_STOCH),   # 31 accumulator bits
    (MacSpec("fp8_e4m3", "fp16", rounding="nearest"), "normal", Path.HALF_F16),
    # normal values below float32's: the float32 lane would read a float32-subnormal sum's quantum wrongly
    (MacSpec("bf16", FloatFormat(8, 7, bias=130), b="bf16", rounding="stochastic"), "normal", Path.STOCH64),
])
def test_gate(rng, spec, data, want):
    spec = as_spec(spec)
    a, b = rng.standard_normal((4, 40)), rng.standard_normal((40, 3))
    if data in ("nan", "inf"):
        a[1, 2] = np.nan if data == "nan" else -np.inf
    elif data == "huge":
        a[0, 0] = 2.0 ** 70
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    if data == "huge":
        A[0, 0] = 2.0 ** 70  # a value the gate must refuse whatever the format did to it
    assert ops._paths(spec, A, B) == want


@pytest.mark.parametrize("acc,overflow,rbits", [("fp16", None, None), ("fp16", "saturate", 5), ("bf16", None, 25),
                                                ("fp16", None, 24), ("fp8_e5m2", None, None), ("fixed16.6", None, None),
                                                ("fixed16.4", "wrap", 9), ("fixed12.11", None, 32)])
@pytest.mark.parametrize("K", [1, 2, 7, 64, 301])
def test_matmul_lane_equals_reference(rng, acc, overflow, rbits, K):
    spec = MacSpec("fp8_e4m3", acc, fma=True, rounding="stochastic", overflow=overflow, rand_bits=rbits)
    for name, a, b in edge_problems(rng, K):
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        assert ops._paths(spec, A, B) == Path.STOCH32, name
        got, gs = kernels.matmul(a, b, spec, seed=7, offset=3, stats=True)
        want, ws = R.ref_matmul(a, b, spec, seed=7, offset=3, stats=True)
        assert got.dtype == want.dtype
        assert same_values(got, want).all(), (name, got, want)
        assert [getattr(gs, f) for f in ("saturated", "wrapped", "overflowed", "invalid")] == \
            [getattr(ws, f) for f in ("saturated", "wrapped", "overflowed", "invalid")], name
        if name == "overflow" and acc in ("fp16", "fixed16.6", "fixed16.4") and K > 1:
            assert (gs.wrapped if overflow == "wrap" else gs.overflowed if acc == "fp16" and overflow is None
                    else gs.saturated) > 0


def test_convolutions_on_the_lane_equal_reference(rng):
    spec = MacSpec("fp8_e4m3", "fp16", fma=True, rounding="stochastic", out="fp8_e4m3")
    x = fp8_grid(rng, (2, 9, 8, 5), 4.0)
    w = fp8_grid(rng, (3, 3, 5, 7), 2.0)
    wd = fp8_grid(rng, (3, 2, 5, 2), 2.0)
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == Path.STOCH32
    assert_convs_equal_reference(spec, x, w, wd)


@pytest.mark.parametrize("acc", ["fp16", "fp8_e5m2"])
@pytest.mark.parametrize("K", [63, 64, 301, 1000])
def test_wide_blocks_hand_back_runs_of_subnormal_sums(rng, acc, K):
    """WIDE blocks (fp16, e5m2: sums below 2**-14 leave the lane) on rows whose sums stay in the subnormal
    range (every block falls back, the back-off grows to its cap), leave it after a while (the lane comes
    back), enter it late, or go in and out; and on an ordinary row: every output equals the reference."""
    spec = MacSpec("fp8_e4m3", acc, fma=True, rounding="stochastic")
    small, big = fp8_grid(rng, (5, K), 2.0 ** -7), fp8_grid(rng, (5, K), 1.0)
    k = np.arange(K)
    a = np.where(np.stack([k < K, k < K // 2, k < K // 3, k % 97 < 40, k < 0]), small, big)
    b = fp8_grid(rng, (K, 37), 2.0 ** -7)
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    assert ops._paths(spec, A, B) == Path.STOCH32
    # the exact partial sums of row 0: at most k some lane's is in the subnormal range, so most WIDE blocks
    # of the row fall back
    part = np.abs(np.cumsum(a[0][:, None] * b, axis=0))
    assert ((part > 0) & (part < 2.0 ** -14)).any(axis=1).mean() > 0.6
    for seed in (0, 1):
        got = kernels.matmul(a, b, spec, seed=seed)
        want = R.ref_matmul(a, b, spec, seed=seed)
        assert same_values(got, want).all(), np.argwhere(~same_values(got, want))[:5]


def test_a_format_with_normals_below_float32s_equals_reference():
    """e8m7 with bias 130 (emin -129): 2**-127 * (1 + 2**-7) is on its grid, a float32 subnormal; the
    float32 lane would round it on the grid of its smallest quantum (found by review, 2026-12)."""
    spec = MacSpec("bf16", FloatFormat(8, 7, bias=130), b="bf16", rounding="stochastic")
    a = np.array([[2.0 ** -60, 2.0 ** -60 * (1 + 2.0 ** -7)]])
    b = np.array([[-2.0 ** -60 * (1 + 2.0 ** -7)], [2.0 ** -60 * (1 + 2.0 ** -7)]])
    for seed in range(6):
        got = ops.matmul(a, b, spec, seed=seed)
        assert got[0, 0] == 2.0 ** -127 * (1 + 2.0 ** -7)
        assert same_values(got, R.ref_matmul(a, b, spec, seed=seed)).all()


# --- Path.STOCH32_PRODUCT: product-rounded MACs with both stages stochastic, in float32 lanes ---------------

@pytest.mark.parametrize("spec,data,want", [
    (MacSpec("bf16", "fp16", product="fp16", rounding="stochastic"), "normal", Path.STOCH32_PRODUCT),  # the sweep's
    (MacSpec("bf16", "fp16", product="bf16", rounding="stochastic", rand_bits=3), "normal", Path.STOCH32_PRODUCT),
    (MacSpec("fp8_e4m3", "bf16", product="bf16", rounding="stochastic"), "normal", Path.STOCH32_PRODUCT),
    (MacSpec("fp32", "fp16", product="fp16", rounding="stochastic"), "normal", Path.PRODUCT),  # 48-bit products
    (MacSpec("bf16", "fp16", product="fp16", product_rounding="stochastic", accum_rounding="nearest"), "normal",
     Path.PRODUCT),
    (MacSpec("bf16", "e5m17", product="fp16", rounding="stochastic"), "normal", Path.PRODUCT),  # 18 accumulator bits
    (MacSpec("bf16", "fp16", product="fp16", rounding="stochastic"), "nan", Path.PRODUCT),
    (MacSpec("bf16", "fp16", product="fp16", rounding="stochastic"), "huge", Path.PRODUCT),
    (MacSpec("bf16", "fp16", product="fp16", rounding="stochastic", order="pairwise"), "normal", Path.GENERIC),
])
def test_product_gate(rng, spec, data, want):
    test_gate(rng, spec, data, want)


def _product_problems(rng, K):
    """edge_problems, bfloat16 operands whose products overflow fp16 and fall below its subnormals, and
    a big first product then small ones (sums inexact in float32)."""
    out = edge_problems(rng, K)
    out.append(("wide", rng.standard_normal((3, K)) * 2.0 ** rng.integers(-14, 9, (3, K)),
                rng.standard_normal((K, 5)) * 2.0 ** rng.integers(-14, 9, (K, 5))))
    a = rng.standard_normal((3, K)) * 2.0 ** -12
    a[:, 0] = 300.0
    out.append(("drift", a, rng.standard_normal((K, 4))))
    return out


@pytest.mark.parametrize("spec", [
    MacSpec("bf16", "fp16", product="fp16", rounding="stochastic"),
    MacSpec("bf16", "fp16", product="fp16", rounding="stochastic", overflow="saturate", rand_bits=3),
    MacSpec("bf16", "fp16", product="bf16", rounding="stochastic", rand_bits=25),
    MacSpec("fp8_e4m3", "float8_e5m2fnuz", product="fp16", rounding="stochastic"),
    MacSpec("fp8_e5m2", "bf16", product="e5m6", rounding="stochastic", out="fp8_e4m3"),
], ids=str)
@pytest.mark.parametrize("K", [1, 2, 7, 64, 301])
def test_product_lane_equals_reference(rng, spec, K):
    """Values and event counts equal the literal reference on problems that overflow (to inf, saturating),
    round below the subnormals, cancel exactly and drift far below the running sum."""
    hit = 0
    for name, a, b in _product_problems(rng, K):
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        hit += ops._paths(spec, A, B, stats=True) == Path.STOCH32_PRODUCT
        got, gs = kernels.matmul(a, b, spec, seed=5, offset=9, stats=True)
        want, ws = R.ref_matmul(a, b, spec, seed=5, offset=9, stats=True)
        assert got.dtype == want.dtype
        assert same_values(got, want).all(), (name, got, want)
        assert [getattr(gs, f) for f in ("saturated", "wrapped", "overflowed", "invalid")] == \
            [getattr(ws, f) for f in ("saturated", "wrapped", "overflowed", "invalid")], name
    assert hit >= 5


def test_product_convolutions_on_the_lane_equal_reference(rng):
    spec = MacSpec("bf16", "fp16", product="fp16", rounding="stochastic")
    x = rng.standard_normal((2, 9, 8, 5))
    w = rng.standard_normal((3, 3, 5, 7))
    wd = rng.standard_normal((3, 2, 5, 2))
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == Path.STOCH32_PRODUCT
    assert_convs_equal_reference(spec, x, w, wd)
