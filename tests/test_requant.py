"""quant.requant: TF-Lite's fixed-point requantization and XNNPACK's fp32 requantization.

Expected values are worked out by hand from the C formulas (the comments show the arithmetic);
then the same cases go through the real TF 2.21 interpreter on a crafted one-op model whose
per-channel scales make exactly these multipliers, which also establishes which rounding variant
each kernel uses (reference CONV_2D: double rounding; reference FULLY_CONNECTED: one exact rounding,
ties away from zero; XNNPACK, the default: fp32 with ties to even).
"""

from __future__ import annotations

import numpy as np
import pytest

from quant import requant as rq

M03 = 1288490189  # round(0.6 * 2**31): 0.3 = 0.6 * 2**-1


# ------------------------------------------------------------------------------------------------
# QuantizeMultiplier
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("real, want", [
    (0.5, (1 << 30, 0)),              # frexp(0.5) = (0.5, 0); 0.5 * 2**31 = 2**30
    (2.0 ** -10, (1 << 30, -9)),      # frexp = (0.5, -9)
    (0.3, (M03, -1)),                 # frexp = (0.6, -1); 0.6 * 2**31 = 1288490188.8 -> 1288490189
    (1.0, (1 << 30, 1)),
    (3.0, (3 << 29, 2)),              # 0.75 * 2**31
    (1 - 2.0 ** -40, (1 << 30, 1)),   # q * 2**31 rounds to 2**31 -> halved, shift + 1
    (2.0 ** -40, (0, 0)),             # shift -39 < -31: flushed to zero
    (0.0, (0, 0)),
])
def test_quantize_multiplier_hand(real, want):
    assert rq.quantize_multiplier(real) == want


def test_quantize_multiplier_rounds_half_away_and_vectorises():
    # 0.5 + 2**-32: q * 2**31 = 2**30 + 0.5 exactly -> std::round goes up
    assert rq.quantize_multiplier(0.5 + 2.0 ** -32) == ((1 << 30) + 1, 0)
    m, s = rq.quantize_multiplier(np.array([0.5, 0.3, 2.0 ** -10]))
    assert m.tolist() == [1 << 30, M03, 1 << 30] and s.tolist() == [0, -1, -9]


def test_quantize_multiplier_single_rounding_saturates_large_shifts():
    assert rq.quantize_multiplier(2.0 ** 31, single_rounding=True) == ((1 << 31) - 1, 30)
    assert rq.quantize_multiplier(2.0 ** 31) == (1 << 30, 32)


# ------------------------------------------------------------------------------------------------
# gemmlowp primitives and MultiplyByQuantizedMultiplier
# ------------------------------------------------------------------------------------------------

def test_srdhm_hand():
    a = [1 << 15, -(1 << 15), -3 << 15, 1 << 30, rq.INT32_MIN, rq.INT32_MIN]
    b = [1 << 15, 1 << 15, 1 << 15, 1 << 30, rq.INT32_MIN, rq.INT32_MAX]
    # 0.5 -> 1, -0.5 -> 0, -1.5 -> -1 (ties upward); 2**60 / 2**31 = 2**29; the overflow case;
    # INT32_MIN * INT32_MAX / 2**31 = -(2**31 - 1) exactly
    want = [1, 0, -1, 1 << 29, rq.INT32_MAX, -rq.INT32_MAX]
    assert rq.saturating_rounding_doubling_high_mul(a, b).tolist() == want


def _srdhm_literal(a: int, b: int) -> int:
    """gemmlowp's C code transcribed with Python ints (C division truncates toward zero)."""
    if a == b == rq.INT32_MIN:
        return rq.INT32_MAX
    ab = a * b
    num = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(num) // (1 << 31)
    return q if num >= 0 else -q


def _rdbpot_literal(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def test_primitives_equal_literal_c(rng):
    a = rng.integers(rq.INT32_MIN, rq.INT32_MAX, 3000, endpoint=True)
    b = rng.integers(rq.INT32_MIN, rq.INT32_MAX, 3000, endpoint=True)
    a[:200] = rng.integers(-(1 << 16), 1 << 16, 200)  # small products: ties are common
    b[:200] = 1 << rng.integers(0, 31, 200)
    got = rq.saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [_srdhm_literal(int(x), int(y)) for x, y in zip(a, b)]
    e = rng.integers(0, 32, 3000)
    got = rq.rounding_divide_by_pot(a, e)
    assert got.tolist() == [_rdbpot_literal(int(x), int(k)) for x, k in zip(a, e)]


def test_rounding_divide_by_pot_hand():
    x = [5, -5, -3, -7, 7, 6, -6, 0]
    e = [1, 1, 1, 2, 2, 2, 2, 3]
    # 2.5 -> 3, -2.5 -> -3, -1.5 -> -2 (ties away from zero); -1.75 -> -2, 1.75 -> 2; 1.5 -> 2, -1.5 -> -2
    assert rq.rounding_divide_by_pot(x, e).tolist() == [3, -3, -2, -2, 2, 2, -2, 0]
    with pytest.raises(ValueError):
        rq.rounding_divide_by_pot(1, 32)


# (x, multiplier, shift) -> double rounding, single rounding
MBQM_CASES = [
    # M = 0.5 = (2**30, 0): only SRDHM rounds, ties upward: floor((x + 1) / 2)
    (-5, 1 << 30, 0, -2, -2), (-3, 1 << 30, 0, -1, -1), (-1, 1 << 30, 0, 0, 0),
    (1, 1 << 30, 0, 1, 1), (3, 1 << 30, 0, 2, 2), (5, 1 << 30, 0, 3, 3),
    # M = 2**-10 = (2**30, -9): SRDHM(x, 2**30) = x / 2 exact for even x, then RDBPOT by 9 rounds
    # ties away from zero; single rounding ((x * 2**30 + 2**39) >> 40) rounds ties upward
    (1536, 1 << 30, -9, 2, 2), (-1536, 1 << 30, -9, -2, -1), (512, 1 << 30, -9, 1, 1),
    (-512, 1 << 30, -9, -1, 0), (2560, 1 << 30, -9, 3, 3), (-2560, 1 << 30, -9, -3, -2),
    (1535, 1 << 30, -9, 1, 1),   # 1.499: SRDHM(1535, 2**30) = floor(768) = 768 -> 768 / 512 = 1.5 -> 2?
    # M = 0.3 = (M03, -1): 8 * 0.3 = 2.4, but SRDHM(8, M03) = round(4.8) = 5 and 5 / 2 = 2.5 -> 3
    (8, M03, -1, 3, 2), (10, M03, -1, 3, 3), (5, M03, -1, 2, 2), (-8, M03, -1, -3, -2),
    # M = 3 = (3 * 2**29, 2): left shift first: SRDHM(7 * 4, 0.75 * 2**31) = 21
    (7, 3 << 29, 2, 21, 21), (-7, 3 << 29, 2, -21, -21),
]
# fix the one case whose comment asks a question: SRDHM(1535, 2**30) = floor((1535 + 1) / 2) = 768,
# RDBPOT(768, 9) = 1.5 -> 2 (the first rounding made a tie); single rounding: 1535 / 1024 = 1.499 -> 1
MBQM_CASES[12] = (1535, 1 << 30, -9, 2, 1)


@pytest.mark.parametrize("x, m, s, double, single", MBQM_CASES)
def test_multiply_by_quantized_multiplier_hand(x, m, s, double, single):
    assert int(rq.multiply_by_quantized_multiplier(x, m, s)) == double
    assert int(rq.multiply_by_quantized_multiplier(x, m, s, single_rounding=True)) == single


def test_mbqm_per_channel_broadcast_and_range_checks():
    x = np.array([[1536, 8], [-1536, -8]])
    got = rq.multiply_by_quantized_multiplier(x, np.array([1 << 30, M03]), np.array([-9, -1]))
    assert got.tolist() == [[2, 3], [-2, -3]]
    with pytest.raises(ValueError, match="int32"):
        rq.multiply_by_quantized_multiplier(1 << 31, 1 << 30, 0)
    with pytest.raises(ValueError, match="overflows"):
        rq.multiply_by_quantized_multiplier(1 << 30, 1 << 30, 2)


def test_requantize_clamps_after_zero_point():
    y = rq.requantize(np.array([-1000000, 0, 1536, 1000000]), 1 << 30, -9, zero_point=-3, qmin=-128, qmax=127)
    assert y.tolist() == [-128, -3, -1, 127]


def test_fp32_requantize_hand():
    acc = np.array([1536, 2560, -1536, -2560, 3584, 7, -7])
    # scale 2**-10: 1.5 -> 2, 2.5 -> 2, -1.5 -> -2, -2.5 -> -2, 3.5 -> 4 (ties to even); 7/1024 -> 0
    assert rq.fp32_requantize(acc, np.float32(2.0 ** -10), 0).tolist() == [2, 2, -2, -2, 4, 0, 0]
    # clamp is applied to f - zp before rounding, then zp is added: [-128 - 5, 127 - 5] + 5
    assert rq.fp32_requantize(np.array([-1000, 1000]), np.float32(1.0), 5).tolist() == [-128, 127]
    # float32 product: 16777217 is not a float32 (rounds to 16777216), * 2**-24 = 1.0
    assert rq.fp32_requantize(np.array([16777217 + 8388608]), np.float32(2.0 ** -24), 0).tolist() == [2]


# ------------------------------------------------------------------------------------------------
# against the interpreter: a one-op model whose channel c computes acc = bias[c] (input 0, weight 1)
# with multiplier exactly M[c]
# ------------------------------------------------------------------------------------------------

ACCS = [1536, -1536, 512, -512, 2560, -2560, 1535, 3584, 8, -8, 10, 5, 100, -100]
REALS = [2.0 ** -10] * 8 + [0.3] * 4 + [0.5, 0.5]


@pytest.fixture(scope="module")
def crafted():
    pytest.importorskip("tensorflow")
    from tests._tflite_util import crafted_bias_model

    return {op: crafted_bias_model(op, ACCS, REALS) for op in ("CONV_2D", "FULLY_CONNECTED")}


def _real_as_tflite(r):
    """The multiplier TF-Lite derives: double(s_x=1) * double(f32(r)) / double(s_y=1)."""
    return float(np.float32(r))


def test_interpreter_conv_reference_is_double_rounding(crafted):
    from tests._tflite_util import run_crafted

    m, s = rq.quantize_multiplier(np.array([_real_as_tflite(r) for r in REALS]))
    want = rq.multiply_by_quantized_multiplier(np.array(ACCS), m, s)
    got = run_crafted(crafted["CONV_2D"], "reference")
    assert got.tolist() == want.tolist()
    # and it is not single rounding (the tie cases differ)
    single = rq.multiply_by_quantized_multiplier(np.array(ACCS), m, s, single_rounding=True)
    assert got.tolist() != single.tolist()
    # hand values for the exact multipliers 2**-10 and 0.5 (0.3 is f32(0.3) here, same results)
    assert got.tolist() == [2, -2, 1, -1, 3, -3, 2, 4, 3, -3, 3, 2, 50, -50]


def test_round_away_hand():
    # 1536 * 2**-10 = 1.5 -> 2, -1.5 -> -2, -0.5 -> -1, 1535 / 1024 = 1.499 -> 1, 8 * 0.3 = 2.4 -> 2
    x = [1536, -1536, -512, 1535, 8, -8, 0]
    m = [1 << 30, 1 << 30, 1 << 30, 1 << 30, M03, M03, M03]
    s = [-9, -9, -9, -9, -1, -1, -1]
    assert rq.multiply_by_quantized_multiplier_round_away(x, m, s).tolist() == [2, -2, -1, 1, 2, -2, 0]


def test_interpreter_fully_connected_reference_rounds_once_away_from_zero(crafted):
    from tests._tflite_util import run_crafted

    m, s = rq.quantize_multiplier(np.array([_real_as_tflite(r) for r in REALS]))
    want = rq.multiply_by_quantized_multiplier_round_away(np.array(ACCS), m, s)
    got = run_crafted(crafted["FULLY_CONNECTED"], "reference")
    assert got.tolist() == want.tolist() == [2, -2, 1, -1, 3, -3, 1, 4, 2, -2, 3, 2, 50, -50]
    # neither single rounding (-1536 -> -1) nor double rounding (1535 -> 2, 8 * 0.3 -> 3)
    for single in (False, True):
        other = rq.multiply_by_quantized_multiplier(np.array(ACCS), m, s, single_rounding=single)
        assert got.tolist() != other.tolist()


@pytest.mark.parametrize("op", ["CONV_2D", "FULLY_CONNECTED"])
def test_interpreter_default_is_xnnpack_fp32(crafted, op):
    from tests._tflite_util import run_crafted

    scale = np.array([np.float32(r) for r in REALS], dtype=np.float32)  # f32(f32(1 * s_w) / 1)
    want = rq.fp32_requantize(np.array(ACCS), scale, 0)
    got = run_crafted(crafted[op], "xnnpack")
    assert got.tolist() == want.tolist()
    # by hand: ties to even (1.5 -> 2, 2.5 -> 2, -0.5 -> 0, 3.5 -> 4, 8 * f32(0.3) = 2.4000001 -> 2)
    assert got.tolist() == [2, -2, 0, 0, 2, -2, 1, 4, 2, -2, 3, 2, 50, -50]


def test_round_half_away_equals_c_round():
    """quant.requant.round_half_away against the C library's roundf / round (the functions TF-Lite calls),
    on ties, the float just below one half (where floor(|v| + 0.5) rounds up), large and special values."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    for name, ct, dt in (("roundf", ctypes.c_float, np.float32), ("round", ctypes.c_double, np.float64)):
        f = getattr(libm, name)
        f.restype, f.argtypes = ct, [ct]
        below_half = np.nextafter(dt(0.5), dt(0))
        v = np.concatenate([np.array([below_half, -below_half, 0.5, -0.5, 1.5, -2.5, 2.0 ** 23 + 1, -0.0,
                                      np.inf, -np.inf], dt),
                            np.random.default_rng(0).normal(0, 50, 2000).astype(dt),
                            (np.arange(-200, 200) + dt(0.5)).astype(dt)])
        want = np.array([f(float(x)) for x in v], dt)
        got = rq.round_half_away(v)
        assert got.dtype == dt
        np.testing.assert_array_equal(got, want)
        assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.isnan(rq.round_half_away(np.array([np.nan], np.float32)))[0]
