"""The MAC kernels (the literal reference and the fast Numba kernels) against external oracles.

* APyTypes (apytypes 0.5.1) accumulator contexts, through APyTypes' own matmul. What APyTypes computes
  (read from its source, ``FloatingPointInnerProduct`` / ``FixedPointInnerProduct``, and confirmed
  here): every product is rounded into the *accumulator* format with the context's quantization mode,
  then added sequentially from +0 with one rounding per addition into the accumulator format. So
  ``APyFloatAccumulatorContext(exp_bits=E, man_bits=M, quantization=q)`` on operands of format F is
  ``MacSpec(F, eEmM, product=eEmM, rounding=r(q))``; the only difference is the sign of an exactly
  zero sum in ``TO_NEG`` (APyTypes follows IEEE 754 section 6.3: -0; hwsim gives +0 there).
  ``APyFixedAccumulatorContext`` quantizes *and overflows* each product into the accumulator
  format but adds without any overflow handling (its results can lie outside their own format), so it
  equals ``MacSpec(F, acc, product=acc, ...)`` while the sums stay in range, and in general
  ``MacSpec(F, <exact accumulator>, product=acc, overflow=o)``.
* numpy float16 arithmetic (correctly rounded through float32) in a sequential loop.
* exact integer matmul in int64 (with two's complement wrap where the preset wraps).
* ``tf.nn.conv2d`` / ``tf.nn.depthwise_conv2d`` in float32, within a derived error bound; numpy
  float32 elementwise arithmetic for the ``fp32`` preset.
"""

import apytypes as apy
import numpy as np
import pytest
import tensorflow as tf

import kernels
from kernels import reference as R
from kernels.mac import MacSpec

from conftest import same_values



def assert_bits(got, want, *, zero_sign=True, what=""):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    eq = same_values(got, want, zero_sign=zero_sign)
    if not eq.all():
        idx = np.flatnonzero(~eq)[:6]
        g, w = got.ravel(), want.ravel()
        rows = ", ".join(f"[{i}] got {g[i]!r} want {w[i]!r}" for i in idx)
        raise AssertionError(f"{what}: {int((~eq).sum())} of {eq.size} differ: {rows}")


# ------------------------------------------------------------------------------------------------
# APyTypes
# ------------------------------------------------------------------------------------------------

Q = apy.QuantizationMode
FLOAT_MODES = [(Q.TIES_EVEN, "nearest"), (Q.TIES_AWAY, "nearest_away"), (Q.TO_ZERO, "toward_zero"),
               (Q.TO_POS, "up"), (Q.TO_NEG, "down")]
# (operand exp, man, our operand format) x (accumulator exp, man, our accumulator format)
FLOAT_CASES = [
    ((5, 10, "fp16"), (5, 10, "fp16")),
    ((8, 7, "bf16"), (8, 7, "bf16")),
    ((5, 10, "fp16"), (6, 15, "e6m15")),
    ((4, 3, "float8_e4m3"), (5, 10, "fp16")),
    ((5, 2, "float8_e5m2"), (8, 7, "bf16")),
    ((4, 3, "float8_e4m3"), (5, 6, "e5m6")),
]


def _apy_float_matmul(a, b, op, acc, q):
    A = apy.APyFloatArray.from_float(a, exp_bits=op[0], man_bits=op[1])
    B = apy.APyFloatArray.from_float(b, exp_bits=op[0], man_bits=op[1])
    with apy.APyFloatAccumulatorContext(exp_bits=acc[0], man_bits=acc[1], quantization=q):
        C = A @ B
    assert (C.exp_bits, C.man_bits) == acc[:2]
    return A.to_numpy(), B.to_numpy(), C.to_numpy()


@pytest.mark.parametrize("op,acc", FLOAT_CASES, ids=[f"{o[2]}->{a[2]}" for o, a in FLOAT_CASES])
@pytest.mark.parametrize("q,rounding", FLOAT_MODES, ids=[r for _, r in FLOAT_MODES])
def test_apytypes_float_accumulator(impl, rng, op, acc, q, rounding):
    """APyFloatAccumulatorContext == MacSpec(op, acc, product=acc, rounding) bit for bit, at scales
    that give ordinary values, subnormal products/sums, and overflow to inf (and inf - inf = NaN)."""
    matmul = impl[0]
    spec = MacSpec(op[2], acc[2], product=acc[2], rounding=rounding)
    emax_acc = 2 ** (acc[0] - 1) - 1
    for scale in (1.0, 2.0 ** (-(emax_acc // 2) - 2), 2.0 ** (emax_acc // 2 - 1)):
        a = rng.standard_normal((9, 37)) * scale
        b = rng.standard_normal((37, 7)) * scale
        aq, bq, want = _apy_float_matmul(a, b, op, acc, q)
        got = matmul(aq, bq, spec)
        # the sign of zero included: an exactly zero sum is -0 under TO_NEG in both (IEEE 754 6.3)
        assert_bits(got, want, what=f"{spec.name} scale {scale}")


def test_apytypes_rounds_products(rng):
    """Negative control: the product rounding is visible (an fma spec does not match APyTypes)."""
    a = rng.standard_normal((9, 37))
    b = rng.standard_normal((37, 7))
    aq, bq, want = _apy_float_matmul(a, b, (5, 10), (5, 10), Q.TIES_EVEN)
    got = R.ref_matmul(aq, bq, MacSpec("fp16", "fp16", fma=True))
    assert not same_values(got, want).all()


@pytest.mark.parametrize("impl", [R.ref_matmul, kernels.matmul])
def test_apytypes_exact_zero_sum_sign_in_down_mode(impl):
    """1*1 + (-1)*1 in TO_NEG is -0 in APyTypes and in hwsim (IEEE 754 6.3), +0 in the other modes."""
    a, b = np.array([[1.0, -1.0]]), np.array([[1.0], [1.0]])
    _, _, want = _apy_float_matmul(a, b, (5, 10), (5, 10), Q.TO_NEG)
    got = impl(a, b, MacSpec("fp16", "fp16", product="fp16", rounding="down"))
    assert want[0, 0] == 0 and np.signbit(want[0, 0])
    assert got[0, 0] == 0 and np.signbit(got[0, 0])
    up = impl(a, b, MacSpec("fp16", "fp16", product="fp16", rounding="up"))
    assert up[0, 0] == 0 and not np.signbit(up[0, 0])


FIXED_MODES = [(Q.TRN, "down"), (Q.TRN_ZERO, "toward_zero"), (Q.TRN_INF, "up"), (Q.RND_CONV, "nearest"),
               (Q.RND_INF, "nearest_away")]
O = apy.OverflowMode


def _apy_fixed_matmul(a, b, opbits, opfrac, accbits, accfrac, q, ovf):
    A = apy.APyFixedArray.from_float(a, int_bits=opbits - opfrac, frac_bits=opfrac)
    B = apy.APyFixedArray.from_float(b, int_bits=opbits - opfrac, frac_bits=opfrac)
    with apy.APyFixedAccumulatorContext(int_bits=accbits - accfrac, frac_bits=accfrac, quantization=q, overflow=ovf):
        C = A @ B
    assert (C.bits, C.int_bits) == (accbits, accbits - accfrac)
    return A.to_numpy(), B.to_numpy(), C.to_numpy()


def _wrap(v, bits, frac):
    k = np.rint(np.asarray(v, dtype=np.float64) * 2.0 ** frac).astype(np.int64)
    k = (k + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))
    return k * 2.0 ** -frac


@pytest.mark.parametrize("q,rounding", FIXED_MODES, ids=[r for _, r in FIXED_MODES])
@pytest.mark.parametrize("ovf,overflow", [(O.WRAP, "wrap"), (O.SAT, "saturate")], ids=["wrap", "sat"])
def test_apytypes_fixed_accumulator(impl, rng, q, rounding, ovf, overflow):
    matmul = impl[0]
    a = rng.standard_normal((8, 40)) * 2
    b = rng.standard_normal((40, 9)) * 2
    op = "fixed8.4"
    # a wide accumulator: products (8 fractional bits) are rounded to 6, sums never overflow
    aq, bq, want = _apy_fixed_matmul(a, b, 8, 4, 20, 6, q, ovf)
    got, st = matmul(aq, bq, MacSpec(op, "fixed20.6", product="fixed20.6", rounding=rounding, overflow=overflow),
                     stats=True)
    assert_bits(got, want, what="wide accumulator")
    assert (st.saturated, st.wrapped) == (0, 0)
    # a narrow accumulator (range [-32, 32)): APyTypes overflows each product, never the sums
    aq, bq, want = _apy_fixed_matmul(a, b, 8, 4, 12, 6, q, ovf)
    assert np.abs(want).max() >= 32, "the narrow case must overflow the accumulator range"
    exact_acc = MacSpec(op, "fixed32.6", product="fixed12.6", rounding=rounding, overflow=overflow)
    assert_bits(matmul(aq, bq, exact_acc), want, what="narrow: products overflowed, sums exact")
    if overflow == "wrap":  # wrapping each addition == wrapping the exact sum once
        narrow = MacSpec(op, "fixed12.6", product="fixed12.6", rounding=rounding, overflow="wrap")
        got, st = matmul(aq, bq, narrow, stats=True)
        assert_bits(got, _wrap(want, 12, 6), what="narrow wrapping accumulator")
        assert st.wrapped > 0


# ------------------------------------------------------------------------------------------------
# numpy float16, exact integers
# ------------------------------------------------------------------------------------------------

def _numpy_f16_loop(a, b):
    """acc = float16(acc + float16(a*b)) for k = 0..K-1, from +0 (numpy rounds float16 arithmetic
    once, correctly: float32 is wide enough that its double rounding is innocuous)."""
    a = a.astype(np.float16)
    b = b.astype(np.float16)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(a.shape[1]):
            p = a[:, k, None] * b[None, k, :]  # float16 * float16 -> float16
            acc = acc + p
    assert acc.dtype == np.float16
    return acc


def test_numpy_float16_scalar_loop_is_the_vector_loop(rng):
    a = rng.standard_normal((2, 9)).astype(np.float16)
    b = rng.standard_normal((9, 3)).astype(np.float16)
    want = _numpy_f16_loop(a, b)
    for i in range(2):
        for j in range(3):
            acc = np.float16(0)
            for k in range(9):
                acc = np.float16(acc + np.float16(a[i, k] * b[k, j]))
            assert acc == want[i, j]


@pytest.mark.parametrize("spec", [MacSpec("fp16", "fp16", product="fp16"), "fp16_fp16"], ids=["spec", "preset"])
def test_numpy_float16_sequential(impl, rng, spec):
    matmul = impl[0]
    for scale in (1.0, 2.0 ** -9, 200.0):  # ordinary, subnormal, overflow to inf (and NaN)
        a = (rng.standard_normal((11, 50)) * scale).astype(np.float16)
        b = (rng.standard_normal((50, 6)) * scale).astype(np.float16)
        want = _numpy_f16_loop(a, b)
        got = matmul(a, b, spec)
        assert got.dtype == np.float32
        assert_bits(got, want, what=f"scale {scale}")
    assert np.isinf(want).any() and np.isnan(want).any()


def test_int8_int32_exact(impl, rng):
    matmul = impl[0]
    a = rng.integers(-128, 128, size=(13, 300))
    b = rng.integers(-128, 128, size=(300, 11))
    a[0, :] = -128
    b[:, 0] = -128
    want = a.astype(np.int64) @ b.astype(np.int64)
    got, st = matmul(a.astype(np.int8), b.astype(np.int8), "int8_int32", stats=True)
    assert got.dtype == np.float64  # int32 values do not all fit float32
    assert np.array_equal(got, want.astype(np.float64))
    assert st.wrapped == 0 and st.saturated == 0


@pytest.mark.parametrize("block_bytes", [1, 30_000, 2 ** 21])  # one image per block, uneven blocks, one block
@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid"), ((1, 2), "same")])
@pytest.mark.parametrize("cin", [5, 120])  # K * 128**2 below 2**24 (float32 GEMM) and above (float64)
def test_int8_int32_conv_exact_in_blocks(rng, monkeypatch, block_bytes, stride, padding, cin):
    """The exact BLAS conv path (im2col in blocks of images, buffers reused across blocks) against
    TensorFlow's float64 convolution of the same integers (exact: |sums| < 2**53)."""
    from kernels import ops
    monkeypatch.setattr(ops, "_IM2COL_BYTES", block_bytes)
    x = rng.integers(-128, 128, size=(5, 7, 6, cin))
    w = rng.integers(-128, 128, size=(3, 3, cin, 4))
    x[0] = -128
    w[..., 0] = -128
    want = tf.nn.conv2d(x.astype(np.float64), w.astype(np.float64), strides=stride, padding=padding.upper()).numpy()
    got = kernels.conv2d(x.astype(np.int8), w.astype(np.int8), "int8_int32", stride=stride, padding=padding)
    assert np.array_equal(got, want)
    assert (np.abs(want).max() >= 2 ** 24) == (cin == 120)


def _wrapping_loop(a, b, bits):
    """Sequential two's-complement accumulation in int64 with a wrap after every addition, and the
    number of additions that wrapped."""
    lo, span = -(1 << (bits - 1)), 1 << bits
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    n = 0
    for k in range(a.shape[1]):
        s = acc + a[:, k, None] * b[None, k, :]
        w = (s - lo) % span + lo
        n += int(np.count_nonzero(w != s))
        acc = w
    return acc, n


def test_int4_int16_wraps(impl, rng):
    """int4 x int4 -> int16 with wrap, on sums that do overflow, with the wrap count."""
    matmul = impl[0]
    a = rng.integers(-8, 8, size=(5, 1500)).astype(np.int64)
    b = rng.integers(-8, 8, size=(1500, 4)).astype(np.int64)
    a[:2, :] = -8
    b[:, :2] = -8  # 64 * 1500 = 96000 > 32767
    want, n_wrapped = _wrapping_loop(a, b, 16)
    assert n_wrapped > 0
    exact = a @ b
    assert np.array_equal(want, (exact + 2**15) % 2**16 - 2**15)
    got, st = matmul(a, b, "int4_int16", stats=True)
    assert np.array_equal(got, want.astype(np.float64))
    assert st.wrapped == n_wrapped and st.saturated == 0


def test_int8_int32_wraps_fast():
    """int8_int32 wraps like an int32 register (fast kernel; K = 2**17 + 3 is too long for the reference)."""
    K = 2**17 + 3
    a = np.full((2, K), -128, dtype=np.int8)
    a[1, ::2] = 127
    b = np.full((K, 3), -128, dtype=np.int8)
    b[::3, 2] = 5
    exact = a.astype(np.int64) @ b.astype(np.int64)
    want = (exact + 2**31) % 2**32 - 2**31
    assert not np.array_equal(want, exact)
    got = kernels.matmul(a, b, "int8_int32")
    assert np.array_equal(got, want.astype(np.float64))


# ------------------------------------------------------------------------------------------------
# TensorFlow convolutions, fp32 preset
# ------------------------------------------------------------------------------------------------

U32 = 2.0 ** -24  # unit roundoff of float32


def _gamma(n):
    return n * U32 / (1 - n * U32)


CONV_GEOMS = [(1, "valid"), (1, "same"), (2, "valid"), (2, "same"), ((2, 1), "valid"), ((2, 1), "same"),
              (3, "same")]
# the float32 presets and the number of roundings on each term's way into the sum: "fp32" rounds the
# product and each addition (error <= gamma(K) * S, Higham, Accuracy and Stability, eq. 3.5), "fp32_fma"
# only the additions (exact products: gamma(K - 1) * S); S = sum of |x * w| per output, in float64
FP32_PRESETS = [("fp32", 0), ("fp32_fma", -1)]


def _check_tf_bound(got, want, exact, S, K, extra):
    """|ours - exact| <= gamma(K + extra) * S and |ours - tf| <= (gamma(K + extra) + gamma(K)) * S
    (TF's float32 sum, in any order, with or without FMA, is within gamma(K) * S of the exact one)."""
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert np.all(np.abs(got - exact) <= _gamma(K + extra) * S)
    assert np.all(np.abs(got - want) <= (_gamma(K + extra) + _gamma(K)) * S)


@pytest.mark.parametrize("preset,extra", FP32_PRESETS, ids=[p for p, _ in FP32_PRESETS])
@pytest.mark.parametrize("stride,padding", CONV_GEOMS, ids=[f"{s}-{p}" for s, p in CONV_GEOMS])
def test_conv2d_fp32_vs_tensorflow(impl, rng, stride, padding, preset, extra):
    conv2d = impl[1]
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 4)).astype(np.float32)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    got = conv2d(x, w, preset, stride=stride, padding=padding)
    strides, tf_pad = [1, sh, sw, 1], padding.upper()
    want = tf.nn.conv2d(x, w, strides=strides, padding=tf_pad).numpy()
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = tf.nn.conv2d(x64, w64, strides=strides, padding=tf_pad).numpy()
    S = tf.nn.conv2d(np.abs(x64), np.abs(w64), strides=strides, padding=tf_pad).numpy()
    _check_tf_bound(got, want, exact, S, 3 * 2 * 3, extra)


DW_GEOMS = [(1, "valid"), (1, "same"), (2, "valid"), (2, "same"), (3, "same")]


@pytest.mark.parametrize("preset,extra", FP32_PRESETS, ids=[p for p, _ in FP32_PRESETS])
@pytest.mark.parametrize("stride,padding", DW_GEOMS, ids=[f"{s}-{p}" for s, p in DW_GEOMS])
def test_depthwise_fp32_vs_tensorflow(impl, rng, stride, padding, preset, extra):
    """As above for depthwise (multiplier 2; output channel c * m + j). TF's depthwise kernel
    supports equal strides only."""
    dw = impl[2]
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 2)).astype(np.float32)
    got = dw(x, w, preset, stride=stride, padding=padding)
    strides, tf_pad = [1, stride, stride, 1], padding.upper()
    want = tf.nn.depthwise_conv2d(x, w, strides=strides, padding=tf_pad).numpy()
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    exact = tf.nn.depthwise_conv2d(x64, w64, strides=strides, padding=tf_pad).numpy()
    S = tf.nn.depthwise_conv2d(np.abs(x64), np.abs(w64), strides=strides, padding=tf_pad).numpy()
    _check_tf_bound(got, want, exact, S, 3 * 2, extra)


def test_fp32_preset_is_numpy_float32_loop(impl, rng):
    """"fp32" is plain float32 arithmetic: acc = float32(acc + float32(a * b)), sequentially."""
    a = rng.standard_normal((7, 40)).astype(np.float32)
    b = rng.standard_normal((40, 5)).astype(np.float32)
    acc = np.zeros((7, 5), dtype=np.float32)
    for k in range(40):
        acc = acc + a[:, k, None] * b[None, k, :]
    assert_bits(impl[0](a, b, "fp32"), acc)


def test_conv2d_tf_geometry_detects_misplaced_padding(rng):
    """Negative control: the bound above is tight enough to see 'same' padding misplaced by one pixel
    (TF puts the odd padding pixel after: (1, 2) for a 4-wide kernel, not (2, 1))."""
    x = rng.standard_normal((1, 8, 8, 2)).astype(np.float32)
    w = rng.standard_normal((4, 4, 2, 3)).astype(np.float32)
    got = R.ref_conv2d(x, w, "fp32", padding="same")
    wrong = tf.nn.conv2d(np.pad(x, ((0, 0), (2, 1), (2, 1), (0, 0))), w, strides=1, padding="VALID").numpy()
    S = tf.nn.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), strides=1, padding="SAME").numpy()
    K = 4 * 4 * 2
    assert not np.all(np.abs(got - wrong) <= 2 * _gamma(K) * S)
