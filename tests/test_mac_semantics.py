"""The MAC semantics of :mod:`kernels.mac` checked directly:

* a tiny, independent statement of the semantics in exact rational arithmetic (``fractions``) with
  the random words drawn by :func:`kernels.rng.rand32_py` at the documented counters, for every
  rounding mode, order, product / fma / output stage: both the reference and the fast kernels must
  equal it (this pins the counter layout ``((e + offset) * 4 + stage) * 2**32 + t``);
* the bf16 accumulation trap: 10,000 U(0, 1) terms stick at exactly 256 with per-add bf16 rounding;
  stochastic rounding is unbiased (mean over 50 seeds within 5 derived standard errors);
* results do not depend on the number of Numba threads, and ``offset`` splits a batch exactly.
"""

import math
from fractions import Fraction

import numba
import numpy as np
import pytest

import kernels
from kernels import reference as R
from kernels.formats import FixedFormat
from kernels.mac import MacSpec
from kernels.rng import make_key, rand32_py

from conftest import same_values



def assert_bits(got, want, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    eq = same_values(got, want)
    if not eq.all():
        i = np.flatnonzero(~eq)[:6]
        raise AssertionError(f"{what}: {int((~eq).sum())} of {eq.size} differ at {i}: got {got.ravel()[i]} "
                             f"want {want.ravel()[i]}")


# ------------------------------------------------------------------------------------------------
# an independent exact statement of the semantics (finite values, IEEE-like floats and fixed point)
# ------------------------------------------------------------------------------------------------

class ExactMac:
    """Exact rational MAC for one output element; floats as Python floats (all values of the formats
    used here are), sums as Fractions. Counts saturate / wrap / inf events like ``stats``."""

    def __init__(self, spec, key, e):
        self.spec, self.key, self.e = spec, key, e
        self.events = {"saturated": 0, "wrapped": 0, "overflowed": 0}

    def word(self, stage, t):
        c = ((self.e * 4 + stage) << 32) + t
        return int(rand32_py(self.key, np.array([c], dtype=np.uint64))[0])

    def round(self, v: Fraction, fmt, mode, stage, t, neg_zero=False) -> float:
        """Round the exact value ``v`` into ``fmt``; ``neg_zero`` marks an exact -0."""
        rbits = self.spec.rand_bits or 32
        if v == 0:
            return -0.0 if (neg_zero and not isinstance(fmt, FixedFormat)) else 0.0
        neg = v < 0
        a = -v if neg else v
        if isinstance(fmt, FixedFormat):
            qe = -fmt.frac
        else:
            e = a.numerator.bit_length() - a.denominator.bit_length()
            if Fraction(2) ** e > a:
                e -= 1
            qe = max(e, fmt.emin) - fmt.man
        y = a / Fraction(2) ** qe
        n = math.floor(y)
        f = y - n
        if f == 0:
            up = False
        elif mode == "nearest":
            up = f > Fraction(1, 2) or (f == Fraction(1, 2) and n % 2 == 1)
        elif mode == "nearest_away":
            up = f >= Fraction(1, 2)
        elif mode == "toward_zero":
            up = False
        elif mode == "up":
            up = not neg
        elif mode == "down":
            up = neg
        else:  # stochastic: floor(f * 2**r) + U >= 2**r, U = top r bits of the word
            up = math.floor(f * 2**rbits) + (self.word(stage, t) >> (32 - rbits)) >= 2**rbits
        n += up
        ovf = self.spec.overflow_for(fmt)
        if isinstance(fmt, FixedFormat):
            k = -n if neg else n
            if k > fmt.qmax or k < fmt.qmin:
                if ovf == "wrap":
                    k = (k - fmt.qmin) % (1 << fmt.bits) + fmt.qmin
                    self.events["wrapped"] += 1
                else:
                    k = fmt.qmax if k > fmt.qmax else fmt.qmin
                    self.events["saturated"] += 1
            return float(k * Fraction(2) ** qe) + 0.0
        res = n * Fraction(2) ** qe
        if res > Fraction(fmt.max):
            away = mode in ("nearest", "nearest_away", "stochastic") or (mode == "up" and not neg) \
                or (mode == "down" and neg)
            if ovf == "ieee" and away:
                self.events["overflowed"] += 1
                return -math.inf if neg else math.inf
            self.events["saturated"] += 1
            return -fmt.max if neg else fmt.max
        r = float(res)
        return -r if neg else r  # a zero result keeps the sign of v

    def add(self, acc: float, p: float, t: int) -> float:
        if not (math.isfinite(acc) and math.isfinite(p)):
            return acc + p  # inf stays inf (no event), inf - inf is NaN
        s = Fraction(acc) + Fraction(p)
        both_neg_zero = acc == 0 and p == 0 and math.copysign(1, acc) < 0 and math.copysign(1, p) < 0
        both_pos_zero = acc == 0 and p == 0 and math.copysign(1, acc) > 0 and math.copysign(1, p) > 0
        # IEEE 754 6.3: an exact zero sum is -0 under roundTowardNegative unless both operands are +0
        down_zero = self.spec.accum_rounding == "down" and s == 0 and not both_pos_zero
        return self.round(s, self.spec.accum, self.spec.accum_rounding, 1, t, neg_zero=both_neg_zero or down_zero)

    def run(self, xs, ws) -> float:
        spec, K = self.spec, len(xs)
        p = []
        for k in range(K):
            v = Fraction(float(xs[k])) * Fraction(float(ws[k]))
            negz = v == 0 and (math.copysign(1, xs[k]) < 0) != (math.copysign(1, ws[k]) < 0)
            if spec.product is not None:
                p.append(self.round(v, spec.product, spec.product_rounding, 0, k, neg_zero=negz))
            else:
                p.append(-0.0 if negz else float(v))  # exact (the formats here keep it in float64)
                assert Fraction(p[-1]) == v
        if K == 0:
            acc = 0.0
        elif spec.order == "sequential":
            acc = 0.0
            for k in range(K):
                acc = self.add(acc, p[k], k)
        elif spec.order == "pairwise":
            if K == 1 and not math.isfinite(p[0]):
                acc = p[0]
            elif K == 1:
                acc = self.round(Fraction(p[0]), spec.accum, spec.accum_rounding, 1, 0,
                                 neg_zero=p[0] == 0 and math.copysign(1, p[0]) < 0)
            else:
                level, lev = p, 0
                while len(level) > 1:
                    nxt = [self.add(level[2 * i], level[2 * i + 1], lev * 2**24 + i) for i in range(len(level) // 2)]
                    if len(level) % 2:
                        nxt.append(level[-1])
                    level, lev = nxt, lev + 1
                acc = level[0]
        else:
            acc = 0.0
            for c in range(-(-K // spec.chunk)):
                part = 0.0
                for k in range(c * spec.chunk, min(K, (c + 1) * spec.chunk)):
                    part = self.add(part, p[k], k)
                acc = self.add(acc, part, K + c)
        if spec.out is not None and not math.isfinite(acc):
            assert spec.overflow_for(spec.out) == "ieee" and not isinstance(spec.out, FixedFormat)
        elif spec.out is not None:
            acc = self.round(Fraction(acc), spec.out, spec.accum_rounding, 2, 0,
                             neg_zero=acc == 0 and math.copysign(1, acc) < 0)
        return acc


def exact_matmul(a, b, spec, seed, offset=0):
    key = make_key(seed) if spec.is_stochastic else np.uint64(0)
    M, K = a.shape
    N = b.shape[1]
    out = np.zeros((M, N))
    ev = {"saturated": 0, "wrapped": 0, "overflowed": 0}
    for m in range(M):
        for n in range(N):
            mac = ExactMac(spec, key, m * N + n + offset)
            out[m, n] = mac.run(a[m], b[:, n])
            for k2 in ev:
                ev[k2] += mac.events[k2]
    return out, ev


ROUNDINGS = ["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic"]
ORDERS = [("sequential", None), ("pairwise", None), ("chunked", 1), ("chunked", 3), ("chunked", 4), ("chunked", 100)]
# (operand, accumulator, product, out, overflow, scale)
UNITS = [
    ("fp16", "bf16", None, None, None, 1.0),
    ("bf16", "fp16", "bf16", None, None, 1.0),
    ("fp16", "e5m6", None, None, None, 2.0 ** -9),  # subnormal region
    ("fp16", "fp16", "fp16", None, None, 200.0),  # overflow to inf, and inf - inf
    ("fp16", "fp16", None, None, "saturate", 60.0),
    ("fp16", "fp16", None, None, "saturate", 200.0),  # sums past 65504 saturate (fast nearest lane: overflow)
    ("fp16", "fp16", None, None, None, 200.0),  # ... or overflow to inf
    ("float8_e4m3", "fp32", None, "bf16", None, 1.0),
    ("fixed8.4", "fixed10.3", None, None, "saturate", 2.0),
    ("fixed8.4", "fixed10.3", "fixed10.5", None, "wrap", 2.0),
    ("int4", "int8", None, "int6", "wrap", 3.0),
]


@pytest.mark.parametrize("unit", UNITS, ids=[f"{u[0]}-{u[1]}-{u[2]}-{u[3]}-{u[4]}" for u in UNITS])
def test_exact_statement(impl, unit):
    """Every rounding mode x order x K in {1, 2, 5, 9}: the kernel equals the exact statement, values
    and event counts."""
    matmul = impl[0]
    op, acc, prod, out, ovf, scale = unit
    rng = np.random.default_rng(UNITS.index(unit))
    n = 0
    for rounding in ROUNDINGS:
        for order, chunk in ORDERS:
            K = [1, 2, 5, 9][n % 4]
            n += 1
            spec = MacSpec(op, acc, product=prod, out=out, rounding=rounding, order=order, chunk=chunk,
                           overflow=ovf, rand_bits=[None, 3][n % 2] if rounding == "stochastic" else None)
            a = np.asarray(kernels.quantize(rng.standard_normal((3, K)) * scale, op), dtype=np.float64)
            b = np.asarray(kernels.quantize(rng.standard_normal((K, 4)) * scale, op), dtype=np.float64)
            want, ev = exact_matmul(a, b, spec, seed=n, offset=5)
            got, st = matmul(a, b, spec, seed=n, offset=5, stats=True)
            assert_bits(got, want, what=spec.name)
            assert (st.saturated, st.wrapped, st.overflowed) == (ev["saturated"], ev["wrapped"], ev["overflowed"]), spec.name


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("tiny", [1.0, -1.0])
def test_midpoint_hidden_below_float64_precision(impl, sign, tiny):
    """fl64(x + y) can land exactly on a midpoint of the accumulator's grid while the exact sum is
    not (x = 2**-80 is lost in float64): the rounding must follow the exact sum. Accumulator e8m20
    (quantum 2**-20 at 1): 2**-80 + (1 + 2**-21) is above the midpoint -> 1 + 2**-20;
    -2**-80 + (1 + 2**-21) is below it -> 1."""
    matmul = impl[0]
    a = np.array([[tiny * 2.0 ** -40, sign * (1 + 2.0 ** -21)]])
    b = np.array([[2.0 ** -40], [1.0]])
    spec = MacSpec("fp32", "e8m20")
    want = sign * (1 + 2.0 ** -20) if tiny * sign > 0 else sign * 1.0
    got = matmul(a, b, spec)
    assert float(got[0, 0]) == want
    assert float(exact_matmul(a, b, spec, seed=None)[0][0, 0]) == want


@pytest.mark.parametrize("rounding,sign,want", [("down", -1, 1 - 2.0 ** -8), ("toward_zero", -1, 1 - 2.0 ** -8),
                                                 ("up", 1, 1 + 2.0 ** -8), ("down", 1, 1.0), ("up", -1, 1.0)])
def test_fixed_accumulator_residual_below_float64(impl, rounding, sign, want):
    """1 + sign * 2**-60 is 1.0 in float64, but a directed rounding into fixed16.8 must see the exact
    sum: just below 1 rounds down to 1 - 2**-8, just above rounds up to 1 + 2**-8."""
    matmul = impl[0]
    a = np.array([[1.0, sign * 2.0 ** -30]])
    b = np.array([[1.0], [2.0 ** -30]])
    spec = MacSpec("fp32", "fixed16.8", rounding=rounding)
    assert float(matmul(a, b, spec)[0, 0]) == want
    assert float(exact_matmul(a, b, spec, seed=None)[0][0, 0]) == want


def test_exact_statement_is_discriminating():
    """Negative controls for the statement: another counter stage or t gives other results."""
    rng = np.random.default_rng(3)
    a = np.asarray(kernels.quantize(rng.standard_normal((4, 9)), "fp16"), dtype=np.float64)
    b = np.asarray(kernels.quantize(rng.standard_normal((9, 4)), "fp16"), dtype=np.float64)
    spec = MacSpec("fp16", "bf16", rounding="stochastic")
    want, _ = exact_matmul(a, b, spec, seed=1)
    assert_bits(R.ref_matmul(a, b, spec, seed=1), want)
    assert not same_values(R.ref_matmul(a, b, spec, seed=1, offset=1), want).all()
    assert not same_values(R.ref_matmul(a, b, spec, seed=2), want).all()


# ------------------------------------------------------------------------------------------------
# the bf16 accumulation trap
# ------------------------------------------------------------------------------------------------

BF16_TRAP_K = 10_000


def _uniform_terms():
    rng = np.random.default_rng(12345)
    return rng.random(BF16_TRAP_K).astype(np.float32)


def test_bf16_trap_sticks_at_256(impl):
    """Round-to-nearest bf16 accumulation of U(0,1) terms: at 256 the bf16 quantum is 2, every term
    < 1 is below half a quantum (and a term of exactly 1 ties to the even 256), so the sum stays 256."""
    matmul = impl[0]
    x = _uniform_terms()
    assert x.max() < 1
    got = matmul(x[None, :], np.ones((BF16_TRAP_K, 1), dtype=np.float32), MacSpec("fp32", "bf16"))
    assert got.shape == (1, 1) and got[0, 0] == 256.0
    assert math.fsum(x.astype(np.float64)) > 4900


def _bf16_quantum(s):
    return 2.0 ** (math.floor(math.log2(s)) - 7)


def _stochastic_sd_bound(x):
    """Standard deviation bound of the stochastic-rounding sum. Each addition's rounding error
    delta_k has mean 0 (up to the 2**-32 truncation of the probability) and variance
    f(1-f) q_k**2 <= q_k**2 / 4, with q_k the bf16 quantum at the running sum; the errors are
    martingale differences, so Var(sum) = sum_k E[delta_k**2] <= sum_k q_k**2 / 4. q_k is taken at
    the exact running sum (the stochastic path stays within a few hundred of it)."""
    s = np.cumsum(x.astype(np.float64))
    return math.sqrt(sum(_bf16_quantum(v) ** 2 / 4 for v in s))


def test_bf16_stochastic_is_unbiased_over_seeds():
    x = _uniform_terms()
    exact = math.fsum(x.astype(np.float64))
    spec = MacSpec("fp32", "bf16", rounding="stochastic")
    ones = np.ones((BF16_TRAP_K, 1), dtype=np.float32)
    sums = np.array([kernels.matmul(x[None, :], ones, spec, seed=s)[0, 0] for s in range(50)], dtype=np.float64)
    assert len(set(sums.tolist())) > 10  # independent seeds give different sums (on a grid of 32)
    se = _stochastic_sd_bound(x) / math.sqrt(len(sums))
    assert abs(sums.mean() - exact) <= 5 * se, (sums.mean(), exact, se)
    # the bound is meaningful: it excludes the round-to-nearest result by a wide margin
    assert abs(256 - exact) > 20 * se


def test_bf16_stochastic_is_unbiased_reference():
    """The same through the reference: 50 output rows of one matmul are 50 independent streams."""
    x = _uniform_terms()
    exact = math.fsum(x.astype(np.float64))
    spec = MacSpec("fp32", "bf16", rounding="stochastic")
    sums = R.ref_matmul(np.tile(x, (50, 1)), np.ones((BF16_TRAP_K, 1), dtype=np.float32), spec, seed=7)
    sums = sums[:, 0].astype(np.float64)
    se = _stochastic_sd_bound(x) / math.sqrt(len(sums))
    assert abs(sums.mean() - exact) <= 5 * se, (sums.mean(), exact, se)


# ------------------------------------------------------------------------------------------------
# threads and offset
# ------------------------------------------------------------------------------------------------

STOCHASTIC_SPECS = [
    MacSpec("fp8_e4m3", "fp16", fma=True, rounding="stochastic"),
    MacSpec("bf16", "bf16", product="bf16", rounding="stochastic", order="pairwise"),
    MacSpec("fp16", "fp16", rounding="stochastic", order="chunked", chunk=5, out="fp8_e5m2"),
    MacSpec("int8", "fixed16.4", product="fixed12.2", rounding="stochastic", overflow="saturate"),
]


@pytest.mark.parametrize("spec", STOCHASTIC_SPECS, ids=lambda s: s.name)
def test_threads_do_not_change_results(spec):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((67, 41)) * 4
    b = rng.standard_normal((41, 19)) * 4
    x = rng.standard_normal((3, 11, 10, 6)) * 4
    w = rng.standard_normal((3, 3, 6, 5)) * 4
    wd = rng.standard_normal((3, 3, 6, 2)) * 4
    before = numba.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            numba.set_num_threads(nt)
            results.append((kernels.matmul(a, b, spec, seed=9, stats=True),
                            kernels.conv2d(x, w, spec, stride=(2, 1), padding="same", seed=9, stats=True),
                            kernels.depthwise_conv2d(x, wd, spec, padding="same", seed=9, stats=True)))
    finally:
        numba.set_num_threads(before)
    for (r1, s1), (r2, s2) in zip(*results):
        assert_bits(r1, r2)
        assert s1 == s2


@pytest.mark.parametrize("spec", STOCHASTIC_SPECS[:3], ids=lambda s: s.name)
def test_offset_splits_batches(impl, spec):
    matmul, conv2d, dw = impl
    rng = np.random.default_rng(6)
    a = rng.standard_normal((6, 13)) * 4
    b = rng.standard_normal((13, 5)) * 4
    whole = matmul(a, b, spec, seed=3)
    parts = [matmul(a[:2], b, spec, seed=3), matmul(a[2:], b, spec, seed=3, offset=2 * 5)]
    assert_bits(np.concatenate(parts), whole, what="matmul rows 0..1 + 2..5 (offset = 2 * N)")
    assert not same_values(matmul(a[2:], b, spec, seed=3), whole[2:]).all(), "offset must matter"

    x = rng.standard_normal((4, 7, 6, 3)) * 4
    w = rng.standard_normal((3, 2, 3, 4)) * 4
    whole = conv2d(x, w, spec, stride=2, padding="same", seed=3)
    oh, ow, co = whole.shape[1:]
    parts = [conv2d(x[:2], w, spec, stride=2, padding="same", seed=3),
             conv2d(x[2:], w, spec, stride=2, padding="same", seed=3, offset=2 * oh * ow * co)]
    assert_bits(np.concatenate(parts), whole, what="conv2d images 0..1 + 2..3 (offset = 2 * OH*OW*Cout)")

    wd = rng.standard_normal((2, 3, 3, 2)) * 4
    whole = dw(x, wd, spec, padding="same", seed=3)
    oh, ow, co = whole.shape[1:]
    parts = [dw(x[:2], wd, spec, padding="same", seed=3), dw(x[2:], wd, spec, padding="same", seed=3,
                                                            offset=2 * oh * ow * co)]
    assert_bits(np.concatenate(parts), whole, what="depthwise images 0..1 + 2..3")


def test_stochastic_seed_none_draws_fresh_streams():
    x = _uniform_terms()[:2000]
    spec = MacSpec("fp32", "bf16", rounding="stochastic")
    r = [R.ref_matmul(x[None, :], np.ones((2000, 1)), spec)[0, 0] for _ in range(4)]
    assert len(set(r)) > 1


@pytest.mark.parametrize("preset,want", [(None, "4"), ("9", "9")])
def test_openblas_threads_sleep_unless_user_chose(preset, want):
    """Importing kernels (or hwsim) first makes OpenBLAS's idle threads sleep at once (their
    busy-waiting cost the Numba kernels about a third of their throughput); a user's value wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    for mod in ("kernels", "hwsim"):
        out = subprocess.run([sys.executable, "-c", f"import {mod}, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert out == want, (mod, out)


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp32", "e5m6", "float8_e4m3fn"])
@pytest.mark.parametrize("rounding", ["nearest", "down", "stochastic"])
def test_add_rounded_is_one_exact_rounding(fmt, rounding):
    """kernels.ops.add_rounded (the bias stage of a quantized layer) rounds the exact sum acc + bias
    once: equal to the scalar core on (TwoSum value, residual), with the documented counters; ties,
    sums hidden below float64 precision, overflow, inf and NaN included."""
    from kernels.ops import add_rounded
    from kernels.quantize import _round_array
    from kernels.rng import make_key

    rng = np.random.default_rng(5)
    q = lambda v: np.asarray(kernels.quantize(v, fmt), dtype=np.float64)  # noqa: E731
    acc = q(rng.standard_normal((7, 6)) * 30)
    b = q(rng.standard_normal(6) * 30)
    acc[0, :3] = [np.inf, np.nan, q(np.array([2.0 ** 100]))[0]]  # inf, NaN, far beyond fp16/bf16 range
    acc[1, :] = q(np.array([1.0]))[0]
    b[:3] = [q(np.array([2.0 ** -40]))[0], 3.0, -3.0]  # 2**100 - 3: below float64 precision
    s = acc + b
    with np.errstate(invalid="ignore"):
        bp = s - acc
        err = (acc - (s - bp)) + (b - bp)
    err[~np.isfinite(s)] = 0.0
    offset = 13
    e = np.arange(acc.size, dtype=np.uint64) + np.uint64(offset)
    counters = ((e * np.uint64(4) + np.uint64(3)) << np.uint64(32)).reshape(acc.shape)
    key = make_key(9) if rounding == "stochastic" else np.uint64(0)
    want, _ = _round_array(s, err, fmt, rounding, None, key, None, counters)
    got = add_rounded(acc, b, fmt, rounding, seed=9, offset=offset)
    assert same_values(got, want).all()


def test_add_rounded_errors():
    from kernels.ops import add_rounded

    with pytest.raises(ValueError, match=r"bias of 3 values .* shape \(2, 4\)"):
        add_rounded(np.zeros((2, 4)), np.zeros(3), "fp16")
    with pytest.raises(ValueError, match="float format"):
        add_rounded(np.zeros((2, 4)), np.zeros(4), "int8")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_rounded_fp32_is_float32_addition(dtype, monkeypatch):
    """fp32 / nearest / IEEE overflow takes float32 hardware addition (the kernel is not called) and
    equals the scalar core's single rounding of the exact sum: ties, subnormal sums, overflow to inf,
    x + (-x) = +0, -0 + -0 = -0, inf and NaN. Values that are not float32 values take the kernel."""
    from kernels import ops
    from kernels.ops import add_rounded
    from kernels.quantize import _round_array

    f32 = np.float32
    acc = np.array([[1.0, 2.0 ** 24, 3.0e38, 1e-45, 5.0, -0.0],
                    [np.inf, np.nan, -2.5, 1.5e-45, 2.0 ** -126, 7.0]], dtype=f32)
    b = np.array([2.0 ** -30, 1.0, 3.0e38, -1e-45, -5.0, -0.0], dtype=f32).astype(np.float64)
    s64, a64 = acc.astype(np.float64) + b, acc.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bp = s64 - a64
        err = (a64 - (s64 - bp)) + (b - bp)
    err[~np.isfinite(s64)] = 0.0
    want, _ = _round_array(s64, err, "fp32", "nearest", None, np.uint64(0), None, np.zeros(acc.shape, np.uint64))
    real_kernel = ops._add_rounded_kernel

    def no_kernel(*args):
        raise AssertionError("the float32 path should have been taken")

    monkeypatch.setattr(ops, "_add_rounded_kernel", no_kernel)
    got = add_rounded(acc.astype(dtype), b, "fp32")
    assert got.dtype == np.float64
    assert same_values(got, want).all(), (got, want)
    assert np.signbit(got[0, 5]) and not np.signbit(got[0, 4])  # -0 + -0 = -0; 5 + -5 = +0
    assert np.isinf(got[0, 2]) and got[1, 3] == 0.0 and got[0, 3] == 0.0
    monkeypatch.setattr(ops, "_add_rounded_kernel", real_kernel)
    b2 = b.copy()
    b2[0] = 1.0 + 2.0 ** -40  # not a float32 value: the kernel rounds the exact sum
    s2 = a64 + b2
    with np.errstate(invalid="ignore"):
        bp = s2 - a64
        err2 = (a64 - (s2 - bp)) + (b2 - bp)
    err2[~np.isfinite(s2)] = 0.0
    want2, _ = _round_array(s2, err2, "fp32", "nearest", None, np.uint64(0), None, np.zeros(acc.shape, np.uint64))
    assert same_values(add_rounded(acc.astype(dtype), b2, "fp32"), want2).all()


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp32", "float8_e4m3fn", "e3m2"])
@pytest.mark.parametrize("rand_bits", [None, 3, 13])
def test_add_rounded_stochastic_lanes_equal_scalar_core(fmt, rand_bits):
    """The branch-free stochastic lane of add_rounded (every lane, not only the edge cases above):
    20,000 random sums over a wide range of magnitudes, with residuals below float64 precision, equal
    the scalar core with the same counters."""
    from kernels.ops import add_rounded
    from kernels.quantize import _round_array
    from kernels.rng import make_key

    rng = np.random.default_rng(17)
    q = lambda v: np.asarray(kernels.quantize(v, fmt), dtype=np.float64)  # noqa: E731
    acc = q(np.ldexp(rng.standard_normal((400, 50)), rng.integers(-30, 30, (400, 50))))
    b = q(np.ldexp(rng.standard_normal(50), rng.integers(-30, 30, 50)))  # overflows to inf in narrow formats
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN, rounded as NaN by both
        s = acc + b
        bp = s - acc
        err = (acc - (s - bp)) + (b - bp)
    err[~np.isfinite(s)] = 0.0
    e = np.arange(acc.size, dtype=np.uint64) + np.uint64(5)
    counters = ((e * np.uint64(4) + np.uint64(3)) << np.uint64(32)).reshape(acc.shape)
    want, _ = _round_array(s, err, fmt, "stochastic", None, make_key(21), rand_bits, counters)
    got = add_rounded(acc, b, fmt, "stochastic", rand_bits=rand_bits, seed=21, offset=5)
    assert same_values(got, want).all()
