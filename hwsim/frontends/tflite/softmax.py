"""Exact int8 -> int8 arithmetic of TF-Lite SOFTMAX (TF 2.21), over the last axis (the record is
:class:`hwsim.frontends.tflite.records.SoftmaxOp`).

Sources (facts only, re-implemented here in numpy):
  [A]  tensorflow/lite/kernels/activations.cc: SoftmaxPrepare<kernel_type>, SoftmaxEval<kernel_type>,
       SoftmaxQuantized<int8_t, int8_t>, Register_SOFTMAX (kGenericOptimized) / Register_SOFTMAX_REF
       (kReference).
  [O]  tensorflow/lite/kernels/internal/optimized/optimized_ops.h: PopulateSoftmaxLookupTable,
       template Softmax<In, Out>(params, ..., const In*, ..., Out*), QuantizeSoftmaxOutput<T>.
  [R]  tensorflow/lite/kernels/internal/reference/softmax.h: template Softmax<InputT, OutputT>.
  [Q]  tensorflow/lite/kernels/internal/quantization_util.cc: PreprocessSoftmaxScaling,
       QuantizeMultiplier(GreaterThanOne), CalculateInputRadius.
  [C]  tensorflow/lite/kernels/internal/common.h: GetReciprocal,
       MultiplyByQuantizedMultiplierGreaterThanOne.
  [G]  gemmlowp fixedpoint/fixedpoint.h: SaturatingRoundingDoublingHighMul, RoundingDivideByPOT,
       SaturatingRoundingMultiplyByPOT, Rescale, RoundingHalfSum, exp_on_negative_values,
       exp_on_interval_between_negative_one_quarter_and_0_excl, one_over_one_plus_x_for_x_in_0_1.
  [X]  tensorflow/lite/delegates/xnnpack/xnnpack_delegate.cc: VisitSoftmaxNode.

Modes
-----
* "xnnpack": the default interpreter. XNNPACK's VisitSoftmaxNode [X] refuses SOFTMAX unless
  beta == 1.0f AND input and output are float tensors (CheckTensorFloat32Type / CheckTensorFloatType),
  so an int8 SOFTMAX is NEVER delegated: the default interpreter runs the optimized built-in kernel.
  "xnnpack" is therefore identical to "builtin" (measured: the op never appears in a DELEGATE node).
* "builtin": optimized built-in kernel (kGenericOptimized; on x86 TFLITE_SOFTMAX_USE_UINT16_LUT is not
  defined -- it is aarch64+clang only -- so optimized_ops::Softmax<int8_t,int8_t> runs) [A][O].
* "reference": BUILTIN_REF -> Register_SOFTMAX_REF -> reference_ops::Softmax<int8_t,int8_t> [A][R].

Output quantization (both kernels): SoftmaxPrepare [A] requires, for int8 in / int8 out,
``zero_point_out == -128`` and ``|f32(s_out) - f32(1/256)| <= f32(0.001/256)`` (TF_LITE_ENSURE_NEAR,
float32); otherwise Prepare fails (allocate_tensors raises). Inside that tolerance the builtin kernel
uses the actual ``s_out`` (``params.scale``), while the reference kernel ignores ``s_out`` entirely
(it always produces 2**-8 steps offset by -128).  ``softmax`` raises ValueError outside the tolerance
or for zero_point_out != -128 (for every mode).

The input zero point never matters: both kernels only use differences ``q - max(q_row)``.

Everything is numpy except one thing: the builtin kernel's 256-entry table calls the C library's
``expf`` (:func:`.tables.expf`, the function the TF-Lite binary imports, ``expf@GLIBC_2.27``), because
the float64 exp rounded to float32 differs from it in ~0.05 % of entries, which changes some outputs.
"""

from __future__ import annotations

import numpy as np

from quant import requant as rq

from .tables import expf

__all__ = ["softmax", "builtin_table", "reference_params", "check_output_quant"]

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------------
# common checks
# ---------------------------------------------------------------------------------------------------

def check_output_quant(s_out: float, zp_out: int) -> None:
    """SoftmaxPrepare [A], int8 -> int8: TF_LITE_ENSURE_EQ(zero_point, -128) and
    TF_LITE_ENSURE_NEAR(scale, 1.f / 256, 0.001f * 1.f / 256), evaluated in float32:
    fails when ``fabsf(f32(s_out) - f32(1/256)) > f32(f32(0.001) * f32(1/256))``."""
    if int(zp_out) != -128:
        raise ValueError(f"int8 SOFTMAX needs output zero point -128 (TF-Lite Prepare fails), got {zp_out}")
    s = np.float32(s_out)
    ref = np.float32(1.0) / np.float32(256.0)
    eps = np.float32(0.001) * np.float32(1.0) / np.float32(256.0)
    if np.abs(np.float32(s - ref)) > eps:
        raise ValueError(f"int8 SOFTMAX needs output scale within 0.1% of 1/256 (TF-Lite Prepare fails), got {s_out!r}")


def _row_max(q: np.ndarray) -> np.ndarray:
    return q.max(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------------
# builtin (optimized_ops::Softmax<int8_t, int8_t>)
# ---------------------------------------------------------------------------------------------------

_TABLES: dict[tuple[float, float], np.ndarray] = {}


def builtin_table(s_in: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxLookupTable [O]: ``scale = f32(-f32(s_in) * f32(beta))`` and for d = 0..255
    ``table[255 - d] = expf(f32(scale * (float)d))``. Returned indexed by d (``T[d] = table[255 - d]``).

    ``expf`` is the C library's (:func:`.tables.expf`): the float64 exp rounded to float32 differs from
    glibc's expf in about 0.05 % of entries by one float32 ulp, which changes some outputs (measured)."""
    key = (float(np.float32(s_in)), float(np.float32(beta)))
    t = _TABLES.get(key)
    if t is None:
        scale = np.float32(-np.float32(s_in) * np.float32(beta))
        t = _TABLES[key] = expf((scale * np.arange(256, dtype=np.float32)).astype(np.float32))
    return t


def _softmax_builtin(q: np.ndarray, s_in: float, s_out: float, zp_out: int, beta: float) -> np.ndarray:
    """optimized_ops::Softmax<int8_t,int8_t> [O], per row (last axis, length C):

      max = max_j q_j (int);  e_j = T[max - q_j]   (table_offset = &table[255 - max]; table_offset[q_j])
      sum = 0.0f; for j = 0..C-1 in order: sum = f32(sum + e_j)      (sequential float32 sum)
      inv = f32(1.0f / f32(sum * f32(s_out)))
      p_j = f32(e_j * inv)
      y_j = clamp(int(roundf(p_j)) + zp_out, -128, 127)   (roundf: half away from zero;
            QuantizeSoftmaxOutput<int8_t>, the add+0.5 truncation variant is uint8-only)
    """
    T = builtin_table(s_in, beta)
    d = _row_max(q) - q  # 0..255
    e = T[d]  # float32
    C = q.shape[-1]
    s = np.zeros(q.shape[:-1], dtype=np.float32)
    for j in range(C):
        s = (s + e[..., j]).astype(np.float32)
    inv = (np.float32(1.0) / (s * np.float32(s_out)).astype(np.float32)).astype(np.float32)
    p = (e * inv[..., None]).astype(np.float32)
    # roundf(p) for p >= 0 (always here): floor(p + 0.5) evaluated exactly in float64 (a float32
    # p + 0.5 could round up, e.g. p = 0.49999997)
    r = np.floor(p.astype(np.float64) + 0.5)
    return np.clip(r.astype(np.int64) + int(zp_out), -128, 127)


# ---------------------------------------------------------------------------------------------------
# reference (reference_ops::Softmax<int8_t, int8_t>): gemmlowp fixed point
# ---------------------------------------------------------------------------------------------------

_srdhm = rq.saturating_rounding_doubling_high_mul
_rdbypot = rq.rounding_divide_by_pot


def _sat_shl(x, k):
    """gemmlowp SaturatingRoundingMultiplyByPOT<+k> on int32 [G]: x * 2**k saturated to int32."""
    x = np.asarray(x, dtype=np.int64)
    thr = (1 << (31 - k)) - 1
    r = x << k
    r = np.where(x > thr, np.int64(_I32_MAX), r)
    return np.where(x < -thr, np.int64(_I32_MIN), r)


_wrap32 = rq.wrap_int32


def _exp_quarter(a):
    """gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl, FixedPoint<int32, 0> [G]."""
    c_term = 1895147668   # exp(-1/8) in Q0.31
    c_1_3 = 715827883     # 1/3 in Q0.31
    x = a + (1 << 28)     # a + 1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_4 = _rdbypot(x4, 2)
    t = _rdbypot(_srdhm(x4_4 + x3, c_1_3) + x2, 1)
    return c_term + _srdhm(c_term, x + t)


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
           (3, 720401), (4, 242))


def _exp_on_negative_values_q5_26(a):
    """gemmlowp exp_on_negative_values for FixedPoint<int32, 5> (Q5.26) input, Q0.31 result [G]:
    quarter = 2**24; r = (a & (quarter-1)) - quarter; result = exp_quarter(r << 5) (Rescale<0>,
    saturating shift, never saturates here); rem = r - a; for each barrel stage (exponent k, multiplier
    M_k) with bit (26 + k) of rem set: result = SRDHM(result, M_k); (integer bits 5: no -32 clamp);
    a == 0 -> INT32_MAX (One)."""
    a = np.asarray(a, dtype=np.int64)
    quarter = 1 << 24
    r = (a & (quarter - 1)) - quarter
    res = _exp_quarter(_sat_shl(r, 5))
    rem = r - a
    for k, m in _BARREL:
        bit = (rem >> (26 + k)) & 1
        res = np.where(bit != 0, _srdhm(res, m), res)
    return np.where(a == 0, np.int64(_I32_MAX), res)


def _one_over_one_plus_x(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1, Q0.31 in/out, Newton-Raphson in Q2.29 [G]:
    h = RoundingHalfSum(a, INT32_MAX); x = 48/17 + SRDHM(h, -32/17); 3 times:
    x = x + SatShl(SRDHM(x, 2**29 - SRDHM(h, x)), 2); result = SatShl(x, 1)."""
    a = np.asarray(a, dtype=np.int64)
    s = a + _I32_MAX
    h = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))  # (sum + sign) / 2, C truncation
    c48_17 = 1515870810
    cm32_17 = -1010580540
    x = c48_17 + _srdhm(h, cm32_17)
    one_f2 = 1 << 29
    for _ in range(3):
        hx = _srdhm(h, x)
        om = one_f2 - hx
        x = x + _sat_shl(_srdhm(x, om), 2)
    return _sat_shl(x, 1)


def _clz32(x):
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    # number of leading zeros of a uint32 (x > 0 here)
    bl = np.zeros(x.shape, dtype=np.int64)
    y = x.copy()
    for sh in (16, 8, 4, 2, 1):
        m = y >= (1 << sh)
        bl = bl + np.where(m, sh, 0)
        y = np.where(m, y >> sh, y)
    bl = bl + (y > 0)
    return 32 - bl


def reference_params(s_in: float, beta: float) -> tuple[int, int, int]:
    """SoftmaxPrepare<kReference> [A] + PreprocessSoftmaxScaling / CalculateInputRadius [Q]:
    ``real = min(double(beta) * double(s_in) * 2**26, 2**31 - 1.0)`` (beta, s_in are the float32
    values widened); ``(multiplier, left_shift) = QuantizeMultiplierGreaterThanOne(real)`` (frexp,
    round-half-away of q * 2**31, 2**31 -> 2**30 with shift + 1; CHECK real > 1 and shift >= 0);
    ``diff_min = -floor(31 * 2**26 / 2**left_shift)``. Returns (multiplier, left_shift, diff_min)."""
    import math

    real = min(float(np.float32(beta)) * float(np.float32(s_in)) * float(1 << 26), float((1 << 31) - 1))
    if not real > 1.0:
        raise ValueError("TF-Lite aborts (TFLITE_CHECK_GT in QuantizeMultiplierGreaterThanOne): "
                         f"beta * s_in * 2**26 = {real!r} <= 1")
    qf, shift = math.frexp(real)
    qfix = int(math.floor(qf * (1 << 31) + 0.5))  # std::round, q > 0
    if qfix == (1 << 31):
        qfix //= 2
        shift += 1
    radius = math.floor(1.0 * 31 * (1 << 26) / (1 << shift))
    return qfix, shift, -int(radius)


def _softmax_reference(q: np.ndarray, s_in: float, beta: float) -> np.ndarray:
    """reference_ops::Softmax<int8_t,int8_t> [R], per row:

      diff_j = q_j - max (int32). Entries with diff_j < diff_min are skipped (output -128).
      z_j = SRDHM(diff_j * 2**left_shift, multiplier)        (MultiplyByQuantizedMultiplierGreaterThanOne, Q5.26)
      E_j = exp_on_negative_values(z_j)                         (Q0.31)
      S = sum_j RoundingDivideByPOT(E_j, 12)                    (Rescale<12>, Q12.19, plain int32 adds)
      c = clz(uint32 S); nbits = 12 - c
      R = one_over_one_plus_x_for_x_in_0_1(int32((uint32 S << c) - 2**31))   (GetReciprocal [C])
      y_j = clamp(RoundingDivideByPOT(SRDHM(R, E_j), nbits + 31 - 8) - 128, -128, 127)
    """
    mult, lshift, diff_min = reference_params(s_in, beta)
    diff = q - _row_max(q)
    ok = diff >= diff_min
    xin = np.where(ok, diff, 0) * (1 << lshift)  # |diff * 2**shift| <= 31 * 2**26 for kept entries
    xin = _wrap32(xin)  # only diff == 0 reaches lshift == 31 (product 0)
    z = _srdhm(xin, mult)
    E = _exp_on_negative_values_q5_26(z)
    S = np.where(ok, _rdbypot(E, 12), 0).sum(axis=-1)
    if S.size and (S.max() > _I32_MAX):
        raise ValueError("sum of exps overflows int32 (C > 4095)")
    c = _clz32(S)
    nbits = 12 - c
    shifted = _wrap32(((S << c) & 0xFFFFFFFF) - (1 << 31))
    R = _one_over_one_plus_x(shifted)
    expo = nbits + 31 - 8
    if expo.size and (expo.min() < 0 or expo.max() > 31):
        raise ValueError("exponent out of range (TFLITE_CHECK fails)")
    y = _rdbypot(_srdhm(R[..., None], E), expo[..., None]) - 128
    y = np.clip(y, -128, 127)
    return np.where(ok, y, -128).astype(np.int64)


# ---------------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------------

def softmax(q: np.ndarray, s_in: float, zp_in: int, s_out: float, zp_out: int, beta: float, mode: str) -> np.ndarray:
    """TF-Lite int8 SOFTMAX over the last axis of ``q`` (int codes -128..127, any leading shape).

    mode "builtin" (= "xnnpack": never delegated, see module docstring): float32 LUT kernel
    (:func:`_softmax_builtin`); mode "reference": gemmlowp fixed-point kernel
    (:func:`_softmax_reference`). ``zp_in`` is irrelevant to both (only ``q - max`` is used);
    the reference kernel also ignores ``s_out``. Raises ValueError where TF-Lite's Prepare fails
    (zp_out != -128 or s_out not within 0.1 % of 1/256). Returns int64 codes."""
    if mode not in ("xnnpack", "builtin", "reference"):
        raise ValueError(f"unknown mode {mode!r}")
    check_output_quant(s_out, zp_out)
    q = np.asarray(q)
    if q.ndim < 1 or q.shape[-1] < 1:
        raise ValueError("need at least one element along the last axis")
    q = q.astype(np.int64)
    if q.size and (q.min() < -128 or q.max() > 127):
        raise ValueError("int8 codes expected")
    if mode == "reference":
        return _softmax_reference(q, s_in, beta)
    return _softmax_builtin(q, s_in, s_out, zp_out, beta)
