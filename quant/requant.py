"""TF-Lite's integer requantization arithmetic, vectorised over numpy int64 arrays.

An int8 layer accumulates ``acc = sum((x - zp_x) * w) + bias`` in int32 and rescales it to the output
grid with the *real* multiplier ``M = s_x * s_w / s_y`` (per output channel for per-channel weights).
TF-Lite never multiplies by ``M`` in floating point: it stores ``M`` as a 31-bit fixed-point
significand and a power-of-two exponent (:func:`quantize_multiplier`) and applies them with integer
operations only (:func:`multiply_by_quantized_multiplier`); then ``y = clamp(result + zp_y, lo, hi)``.

Sources, all in ``tensorflow/lite/kernels/internal/``: ``quantization_util.cc``
(``QuantizeMultiplier``), ``common.h`` (``MultiplyByQuantizedMultiplier``,
``MultiplyByQuantizedMultiplierSmallerThanOneExp``, ``MultiplyByQuantizedMultiplierGreaterThanOne``)
and gemmlowp's ``fixedpoint/fixedpoint.h`` (``SaturatingRoundingDoublingHighMul``,
``RoundingDivideByPOT``), which ``common.h`` uses.

Two variants exist, chosen at TF-Lite build time by ``TFLITE_SINGLE_ROUNDING``:

* **double rounding** (``single_rounding=False``, TF-Lite's default build and what the TF 2.21 pip
  wheel's reference CONV_2D / DEPTHWISE_CONV_2D / ADD / MEAN kernels do, established by experiment in
  ``tests/test_requant.py``):
  ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left, m), right)`` -- the 64-bit
  product is first rounded to its high 32 bits (``floor((x m + 2**30) / 2**31)``: ties upward),
  then shifted right with a second rounding (ties away from zero). E.g. ``x = 8`` times 0.3
  (``m = 1288490189``, ``shift = -1``) gives 3, not round(2.4) = 2;
* **single rounding** (``single_rounding=True``): ``(x * m + 2**(30 - shift)) >> (31 - shift)`` --
  one rounding, half up (towards +inf).

The TF 2.21 interpreter's reference FULLY_CONNECTED int8 kernel uses neither: it rounds the exact
product ``x * m * 2**(shift - 31)`` to nearest with ties away from zero
(:func:`multiply_by_quantized_multiplier_round_away`). XNNPACK, the interpreter's default delegate,
requantizes in float32 instead (:func:`fp32_requantize`).

Every function takes and returns int64 arrays (values in int32 range where TF-Lite's are int32)
and broadcasts its arguments, so per-channel multipliers/shifts are arrays over the last axis.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "accumulator_input",
    "saturate_output",
    "round_half_away",
    "wrap_int32",
    "quantize_multiplier",
    "quantize_multiplier_smaller_than_one",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "multiply_by_quantized_multiplier_smaller_than_one_exp",
    "multiply_by_quantized_multiplier_round_away",
    "requantize",
    "fp32_requantize",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def round_half_away(v) -> np.ndarray:
    """C ``round`` / ``std::round`` / TfLiteRound: to the nearest integer, ties away from zero, in ``v``'s
    float dtype and exact (``|v| - floor(|v|)`` is exact, where ``floor(|v| + 0.5)`` rounds 0.49999997f up to
    1); inf and NaN pass through."""
    v = np.asarray(v)
    a = np.abs(v)
    f = np.floor(a)
    with np.errstate(invalid="ignore"):
        r = f + (a - f >= v.dtype.type(0.5))
    return np.copysign(np.where(np.isfinite(v), r, v), v).astype(v.dtype, copy=False)


def accumulator_input(sums, correction, lo: int, hi: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The integer input of a requantizer from an emulated *float* MAC result (``sums``, e.g. an fp16
    accumulator's): ``(acc, over)``. ``acc`` (int64) is ``rint(sums) + correction`` (round to nearest even;
    ``correction`` the int64 zero-point and bias terms) where that lies in [``lo``, ``hi``], the range the
    requantizer is defined on, and 0 elsewhere; ``over`` (int8) is +1 / -1 where it lies above / below the
    range (a sum that overflowed to +-inf included), else 0.

    The caller gives an ``over`` element the end of the output range of its sign (the requantizers' multipliers
    are positive): a saturating conversion, hwsim's choice (TF-Lite's and ONNX Runtime's own accumulators are
    integers and wrap). Requantizing the saturated value instead would not do: TF-Lite's int16x8 requantizers
    wrap their result to int32, and the int8 ones with a multiplier above 1 shift their input left and refuse
    what overflows int32. (numpy's cast of +inf to int64 gives int64's minimum: the wrong end, silently.) NaN
    (inf - inf after an overflow) has no integer value: ``ValueError`` naming ``where``."""
    y = np.asarray(sums, dtype=np.float64)
    nan = np.isnan(y)
    if nan.any():
        raise ValueError(f"{where}: the accumulator gave NaN in {int(nan.sum())} of {y.size} sums (an overflow to "
                         "inf, then inf - inf); an integer requantization has no value for NaN: give the MAC spec "
                         "overflow='saturate' or a wider accumulator")
    # clipped to +-2**62 first, so that the cast is defined and adding the correction cannot wrap int64
    acc = np.rint(np.clip(y, -2.0 ** 62, 2.0 ** 62)).astype(np.int64) + np.asarray(correction, dtype=np.int64)
    over = (acc > hi).astype(np.int8) - (acc < lo).astype(np.int8)
    return np.where(over != 0, 0, acc), over


def saturate_output(y, over, lo, hi) -> np.ndarray:
    """``y`` (the requantized codes) with ``hi`` where ``over`` > 0 and ``lo`` where ``over`` < 0
    (:func:`accumulator_input`)."""
    if over is None or not over.any():
        return y
    return np.where(over > 0, hi, np.where(over < 0, lo, y)).astype(np.asarray(y).dtype, copy=False)


def wrap_int32(x) -> np.ndarray:
    """int64 values converted to int32 as C does on two's-complement machines (wrapping), as int64."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _i64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if not np.all(a == np.floor(a)):
            raise ValueError("expected integer values")
    return a.astype(np.int64)


def _quantize_multiplier_scalar(m: float, single_rounding: bool) -> tuple[int, int]:
    if m == 0.0:
        return 0, 0
    if not math.isfinite(m):
        raise ValueError(f"cannot quantize a non-finite multiplier {m!r}")
    q, shift = math.frexp(m)  # m = q * 2**shift, 0.5 <= |q| < 1 (std::frexp)
    # TfLiteRound = std::round: half away from zero. q * 2**31 is exact in double.
    qf = q * (1 << 31)
    q_fixed = int(math.floor(abs(qf) + 0.5))
    q_fixed = q_fixed if qf >= 0 else -q_fixed
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # TF-Lite flushes tiny multipliers to zero
        shift = 0
        q_fixed = 0
    if single_rounding and shift > 30:
        shift = 30
        q_fixed = (1 << 31) - 1
    return int(q_fixed), int(shift)


def quantize_multiplier(real, single_rounding: bool = False):
    """TF-Lite ``QuantizeMultiplier(double, int32_t*, int*)`` (``quantization_util.cc``).

    ``real = q * 2**shift`` with ``0.5 <= q < 1`` (``std::frexp``); ``multiplier = round(q * 2**31)``
    with ``std::round`` (half away from zero); a multiplier of exactly ``2**31`` becomes ``2**30`` with
    ``shift + 1``; ``shift < -31`` flushes to ``(0, 0)``; ``real == 0`` gives ``(0, 0)``. With
    ``single_rounding`` a ``shift > 30`` saturates to ``(2**31 - 1, 30)``.

    ``real`` is a float (taken as a C double) or an array of them; returns ``(multiplier, shift)`` as
    Python ints for a scalar, int64 arrays otherwise. So ``real ~= multiplier * 2**(shift - 31)``.
    """
    arr = np.asarray(real, dtype=np.float64)
    if arr.ndim == 0:
        return _quantize_multiplier_scalar(float(arr), single_rounding)
    pairs = [_quantize_multiplier_scalar(float(v), single_rounding) for v in arr.ravel()]
    m = np.array([p[0] for p in pairs], dtype=np.int64).reshape(arr.shape)
    s = np.array([p[1] for p in pairs], dtype=np.int64).reshape(arr.shape)
    return m, s


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    """TF-Lite ``QuantizeMultiplierSmallerThanOneExp``: :func:`quantize_multiplier` for ``0 < real < 1``
    (checked), returning the non-positive ``left_shift`` (= shift)."""
    if not (0.0 < real < 1.0):
        raise ValueError(f"multiplier must be in (0, 1), got {real!r}")
    m, s = _quantize_multiplier_scalar(float(real), False)
    if s > 0:  # pragma: no cover - impossible for real < 1
        raise ValueError(f"multiplier {real!r} gave shift {s} > 0")
    return m, s


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul(int32 a, int32 b)`` (``fixedpoint.h``).

    ``ab = a * b`` in int64; ``nudge = 2**30`` if ``ab >= 0`` else ``1 - 2**30``; result
    ``(ab + nudge) / 2**31`` with C division (truncation toward zero) -- which equals
    ``floor((a*b + 2**30) / 2**31)``, ``a*b / 2**31`` rounded to nearest with ties upward (toward
    +inf, as ARM's SQRDMULH); the single overflow case ``a == b == INT32_MIN`` gives ``INT32_MAX``.
    ``a`` and ``b`` must be in int32 range (checked).
    """
    a = _i64(a)
    b = _i64(b)
    for v, n in ((a, "a"), (b, "b")):
        if v.size and (v.min() < INT32_MIN or v.max() > INT32_MAX):
            raise ValueError(f"SaturatingRoundingDoublingHighMul: {n} out of int32 range")
    ab = a * b  # |ab| <= 2**62: exact in int64
    # trunc((ab + nudge) / 2**31) == floor((ab + 2**30) / 2**31) for every int64 ab (for ab < 0:
    # -floor((2**31 - 1 - N) / 2**31) with N = ab + 2**30, = ceil((N + 1) / 2**31) - 1 = floor(N / 2**31)),
    # so one add and an arithmetic shift
    res = (ab + np.int64(1 << 30)) >> np.int64(31)
    overflow = (a == b) & (a == INT32_MIN)
    if overflow.any():
        res = np.where(overflow, np.int64(INT32_MAX), res)
    return res


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT(x, exponent)`` (``fixedpoint.h``), ``0 <= exponent <= 31``.

    ``mask = 2**exponent - 1``; ``remainder = x & mask``; ``threshold = (mask >> 1) + (x < 0)``;
    result ``(x >> exponent) + (remainder > threshold)`` (arithmetic shift) -- i.e.
    ``round(x / 2**exponent)`` with ties away from zero.
    """
    x = _i64(x)
    e = _i64(exponent)
    if e.size and (e.min() < 0 or e.max() > 31):
        raise ValueError(f"RoundingDivideByPOT exponent must be in [0, 31], got {exponent!r}")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x, multiplier, shift, single_rounding: bool = False):
    """TF-Lite ``MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int shift)`` (``common.h``):
    ``x * multiplier * 2**(shift - 31)`` rounded to an integer, as the int32 kernels do.

    * double rounding (default): ``left = max(shift, 0)``, ``right = max(-shift, 0)``;
      ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left, multiplier), right)``.
      ``x * 2**left`` is the C int32 product (it must not overflow; checked).
    * single rounding: ``(x * multiplier + 2**(30 - shift)) >> (31 - shift)`` in int64, with
      ``-31 <= shift <= 30`` and ``multiplier >= 0``.

    ``x``: int array (int32 range, e.g. an int32 accumulator); ``multiplier``, ``shift``: scalars or
    arrays broadcasting against ``x`` (per-channel: the last axis). Returns int64.
    """
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(shift)
    if x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        raise ValueError("MultiplyByQuantizedMultiplier: x out of int32 range")
    if single_rounding:
        if s.size and (s.min() < -31 or s.max() > 30):
            raise ValueError("single-rounding MultiplyByQuantizedMultiplier needs -31 <= shift <= 30")
        if m.size and m.min() < 0:
            raise ValueError("single-rounding MultiplyByQuantizedMultiplier needs multiplier >= 0")
        total = 31 - s
        # |x * m| < 2**62; adding the rounding term stays below 2**63
        return (x * m + (np.int64(1) << (total - 1))) >> total
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    xl = x << left
    if xl.size and (xl.min() < INT32_MIN or xl.max() > INT32_MAX):
        raise ValueError("MultiplyByQuantizedMultiplier: x * 2**left_shift overflows int32")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xl, m), right)


def multiply_by_quantized_multiplier_round_away(x, multiplier, shift):
    """``x * multiplier * 2**(shift - 31)`` computed exactly (int64 product) and rounded to nearest with
    ties away from zero: ``sign(p) * ((|p| + 2**(t - 1)) >> t)`` with ``p = x * multiplier``,
    ``t = 31 - shift``. This is what the TF 2.21 interpreter's *reference* FULLY_CONNECTED int8 kernel
    (``OpResolverType.BUILTIN_REF``) computes -- established by experiment (``tests/test_requant.py``:
    crafted ties such as ``-1536 * 2**-10 -> -2`` rule out both single rounding, which gives -1, and
    double rounding, which turns ``1535 * 2**-10 = 1.499`` into 2); it equals rounding the exact real
    ``x * M`` whenever ``M`` is a float32 ratio (a 24-bit significand fits the 31-bit multiplier).
    Needs ``0 <= multiplier < 2**31``, ``shift <= 30`` and ``|x| < 2**31``. Returns int64."""
    x = _i64(x)
    m = _i64(multiplier)
    s = _i64(shift)
    if x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        raise ValueError("x out of int32 range")
    if (m.size and (m.min() < 0 or m.max() > INT32_MAX)) or (s.size and s.max() > 30):
        raise ValueError("needs 0 <= multiplier < 2**31 and shift <= 30")
    t = np.minimum(31 - s, 62)
    p = x * m
    q = (np.abs(p) + (np.int64(1) << (t - 1))) >> t
    return np.where(p < 0, -q, q)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift, single_rounding: bool = False):
    """TF-Lite ``MultiplyByQuantizedMultiplierSmallerThanOneExp(x, multiplier, left_shift)`` (``common.h``),
    used by ADD for its input and output rescaling: ``left_shift <= 0``;
    ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, multiplier), -left_shift)`` (double
    rounding), i.e. :func:`multiply_by_quantized_multiplier` with a non-positive shift; with single
    rounding TF-Lite defines it as :func:`multiply_by_quantized_multiplier`."""
    s = _i64(left_shift)
    if s.size and s.max() > 0:
        raise ValueError("MultiplyByQuantizedMultiplierSmallerThanOneExp needs left_shift <= 0")
    return multiply_by_quantized_multiplier(x, multiplier, s, single_rounding=single_rounding)


def requantize(acc, multiplier, shift, zero_point, qmin=-128, qmax=127, single_rounding: bool = False):
    """The int8 output stage of TF-Lite's CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED kernels
    (``reference_integer_ops/conv.h``...):
    ``clamp(MultiplyByQuantizedMultiplier(acc, multiplier, shift) + zero_point, qmin, qmax)``,
    where ``[qmin, qmax]`` is the int8 range intersected with the fused activation's range."""
    y = multiply_by_quantized_multiplier(acc, multiplier, shift, single_rounding=single_rounding)
    return np.clip(y + np.int64(zero_point), qmin, qmax)


def _round_half_even_f32(v: np.ndarray) -> np.ndarray:
    return np.rint(v)  # float32 rint: round half to even, like lrintf in the default rounding mode


def fp32_requantize(acc, scale, zero_point, qmin=-128, qmax=127):
    """XNNPACK's "fp32" requantization (the default delegate of ``tf.lite.Interpreter``; XNNPACK
    ``src/xnnpack/requantization.h``, ``xnn_qs8_requantize_fp32`` and the qs8 GEMM/IGEMM/DWCONV
    ``*_minmax_fp32`` microkernels): in float32, ``f = (float)acc * scale``; clamp ``f`` to
    ``[qmin - zero_point, qmax - zero_point]``; round to the nearest integer, ties to even
    (``lrintf`` / the magic-bias trick, which agree for these magnitudes); add ``zero_point``.

    ``scale`` is a float32 (per channel: an array over the last axis) -- XNNPACK computes it as
    ``input_scale * kernel_scale / output_scale`` in float32. Returns int64.
    """
    a = _i64(acc)
    f = a.astype(np.float32) * np.asarray(scale, dtype=np.float32)
    zp = np.float32(zero_point)
    f = np.minimum(np.maximum(f, np.float32(qmin) - zp), np.float32(qmax) - zp)
    return _round_half_even_f32(f).astype(np.int64) + np.int64(zero_point)
