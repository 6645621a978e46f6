"""Exact arithmetic of TF-Lite "int16x8" models (TF 2.21 interpreter): int16 activations (zero point 0),
int8 weights, int64 biases, as ``converter.target_spec.supported_ops =
[EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]`` writes them. The records are
:class:`hwsim.frontends.tflite.records.Mac16Op`, ``Quantize16Op`` and ``Add16Op``; MEAN, the pools,
DEQUANTIZE and the reshapes share the int8 records (with the int16 range).

XNNPACK takes no operator of an int16x8 model (it has no int16 activation type; measured: the default
interpreter makes no delegate), so the default interpreter ("xnnpack" mode) runs TF-Lite's optimized
built-in kernels ("builtin" below) and ``BUILTIN_REF`` the reference kernels.

Sources (TF 2.21's ``tensorflow/lite/kernels``): conv.cc ``EvalQuantizedPerChannel16x8``, depthwise_conv.cc
``EvalQuantizedPerChannel16x8``, fully_connected.cc ``EvalQuantized`` (int16 case), add.cc ``Prepare`` /
``EvalAddQuantized``, quantize.cc ``Eval``, kernel_util.cc ``PopulateConvolutionQuantizationParams``,
internal/common.cc ``MultiplyByQuantizedMultiplier`` (int64 overload), internal/optimized/optimized_ops.h
``AffineQuantize<int16>``, internal/optimized/integer_ops/add.h ``AddElementwiseInt16``. On x86 the wheel's
optimized kernels run their NEON code through NEON_2_SSE, which decides QUANTIZE's and ADD's rounding for
the vector part of a tensor (its first 8 or 16 elements per block) against the scalar tail. Every rule
here was checked bit for bit against the interpreter (tests/test_tflite_ops.py).
"""

from __future__ import annotations

import numpy as np

from quant import requant as rq
from quant.requant import quantize_multiplier

I16_MIN, I16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
MODES = ("xnnpack", "builtin", "reference")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")


_wrap32 = rq.wrap_int32


_round_away = rq.round_half_away


def _f2i32(v):
    """``static_cast<int32_t>(floating)`` as x86 (cvtt*2si) does: truncation; NaN and
    out-of-range give INT32_MIN."""
    v = np.asarray(v, dtype=np.float64)
    ok = np.isfinite(v) & (v > -2147483649.0) & (v < 2147483648.0)
    out = np.full(v.shape, INT32_MIN, dtype=np.int64)
    out[ok] = np.trunc(v[ok]).astype(np.int64)
    return out


# ----------------------------------------------------------------------------------------------
# QUANTIZE float32 -> int16 (DEQUANTIZE is the int8 record's f32((q - 0) * s))
# ----------------------------------------------------------------------------------------------

def quantize_f32_to_i16(x, s, mode):
    """QUANTIZE float32 -> int16 (zero point 0); ``x`` holds one invocation's whole input tensor per
    entry of its first axis (each one's flat C order decides which of its elements take the vector path
    of the optimized kernel).

    * reference (``reference_ops::AffineQuantize``): ``q = clamp(int32(round_away(f32(x / f32(s)))),
      -32768, 32767)`` -- one float32 division, ``std::round(float)`` half away from zero.
    * builtin / xnnpack (``optimized_ops::AffineQuantize`` int16 specialisation, USE_NEON via
      NEON_2_SSE on x86): the first ``8 * floor(n / 8)`` flat elements: ``v = f32(x * r)`` with
      ``r = f32(1.0 / double(s))`` (``vdupq_n_f32(1.0f / scale)`` where ``scale`` is a double), rounded
      by ``vcvtnq_s32_f32`` = ``_mm_cvtps_epi32``: round half to EVEN, out of int32 range/NaN ->
      INT32_MIN; then clamp.  The remaining ``n % 8`` tail elements: ``round_away(double(x) /
      double(s))`` (double division, ``TfLiteRound`` on a double), int32 cast, clamp.
    """
    _check_mode(mode)
    x = np.asarray(x, dtype=np.float32)
    flat = x.reshape(len(x), -1)
    if mode == "reference":
        q = _f2i32(_round_away((flat / np.float32(s)).astype(np.float64)))  # float32 division
    else:
        nv = 8 * (flat.shape[1] // 8)
        q = np.empty(flat.shape, dtype=np.int64)
        vv = (flat[:, :nv] * np.float32(1.0 / float(np.float32(s)))).astype(np.float32).astype(np.float64)
        ok = np.isfinite(vv) & (vv >= -2147483648.0) & (vv < 2147483648.0)
        q[:, :nv] = np.where(ok, np.rint(np.where(ok, vv, 0)), INT32_MIN)  # round half to even
        q[:, nv:] = _f2i32(_round_away(flat[:, nv:].astype(np.float64) / float(np.float32(s))))
    return np.clip(q, I16_MIN, I16_MAX).reshape(x.shape)


# ----------------------------------------------------------------------------------------------
# CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED requantization
# ----------------------------------------------------------------------------------------------

def mbqm_int64(acc, multiplier, shift):
    """TF-Lite ``MultiplyByQuantizedMultiplier(int64_t x, int32_t m, int shift)`` (internal/common.cc,
    the same in the single- and double-rounding builds): the 31-bit multiplier is reduced to 15 bits,
    ``rm = (m + 2**15) >> 16`` (``0x7FFF`` if ``m >= 0x7FFF0000``); ``t = 15 - shift``;
    ``result = int32((x * rm + 2**(t-1)) >> t)`` -- one rounding, ties toward +inf, the int64 -> int32
    conversion wrapping.  Valid for ``-31 <= shift <= 7`` and ``|x| < 2**47`` (asserted in the source)."""
    x = np.asarray(acc, dtype=np.int64)
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    rm = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    t = 15 - s
    if np.any(t < 1) or np.any(t > 62):
        raise ValueError("shift out of the kernel's range (-31..7)")
    r = (x * rm + (np.int64(1) << (t - 1))) >> t
    return _wrap32(r)


def _effective_scales(s_in, w_scales, s_out):
    """``double(s_in) * double(s_w[c]) / double(s_out)`` (kernel_util.cc
    ``PopulateConvolutionQuantizationParams``; fully_connected.h float-requant overloads): the
    float32 scales widened to double, multiply then divide, in double."""
    w = np.atleast_1d(np.asarray(w_scales, dtype=np.float32)).astype(np.float64)
    return (float(np.float32(s_in)) * w) / float(np.float32(s_out))


def mac_requant(acc, s_in, w_scales, s_out, op, mode, lo, hi, bias_bits=64):
    """Requantization of int16x8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (``op`` one of
    "conv", "dw"/"depthwise", "fc"), identical in all modes (with int64 bias every mode runs the
    reference kernel: conv.cc ``EvalQuantizedPerChannel16x8`` takes ``reference_integer_ops::
    ConvPerChannel<int64>`` when ``quantized_bias_type == INT64``; depthwise_conv.cc always
    ``reference_integer_ops::DepthwiseConvPerChannel`` (int64 bias); fully_connected.cc takes
    ``FullyConnectedPerChannelInt16`` / ``FullyConnectedInt16`` -> reference when the bias or
    ``quantized_bias_type`` is int64, and also for ``kReference``).

    ``acc``: int64, the exact ``sum(x * w) + bias`` (zero points are 0; int64 accumulator: no
    wrap, no saturation), last axis = output channel.  ``w_scales``: per output channel (or one).

    * conv / dw: ``(m, shift) = QuantizeMultiplier(double(s_in) * double(s_w[c]) / double(s_out))``
      (std::frexp, ``round_away(q * 2**31)``), ``y = MultiplyByQuantizedMultiplier(int64 acc, m,
      shift)`` (:func:`mbqm_int64`: 15-bit multiplier, one round-half-up), ``clamp(y, lo, hi)``.
    * fc (fully_connected.h, the overloads taking float scales): ``y = int32(round_away(double(acc)
      * (double(s_in) * double(s_w[c]) / double(s_out))))`` -- double arithmetic, C ``round``;
      per-tensor weights use ``s_w`` for every channel.  Then ``clamp(y, lo, hi)``.

    ``bias_bits``: 64 (default; the converter's int64 bias) or ``"none"`` (a FULLY_CONNECTED without
    bias tensor -- the converter DROPS an all-zero Dense bias, e.g. ``use_bias=False`` or an untrained
    zero bias; CONV_2D always keeps one). int32 biases (only with a private converter flag) are refused
    by the importer.

    * reference, bias "none": FULLY_CONNECTED = the fc formula above.
    * builtin / xnnpack, bias "none" (FC): the optimized int16 kernels
      (``optimized_integer_ops::ConvPerChannel`` / ``FullyConnected[PerChannel]`` ->
      cpu_backend_gemm -> ruy; TF 2.21's fully_connected.cc sends a bias-less int16 FC there because
      its test is only ``bias && bias->type == kTfLiteInt64`` -- the LiteRT head also checks
      ``quantized_bias_type``).  Measured (100 %): int32 ``acc``, ``hm = (acc * 2**max(sh,0) * m +
      2**30) >> 31`` (rounding high multiply, ties up), ``y = (hm + 2**(r-1)) >> r`` with
      ``r = max(-sh, 0)`` (rounding right shift, ties UP, also for negatives), clamp.  Per-channel
      multipliers as above; a per-TENSOR FC's multiplier is ``QuantizeMultiplier(double(f32(s_in *
      s_w)) / double(s_out))`` (TF 2.21 ``GetQuantizedConvolutionMultipler`` forms the input-product
      scale as a float32 product).  The ruy code path that does this was not located (ruy's
      apply_multiplier.cc versions stored are single-rounding or ties-away); the rule is measured
      on this x86 machine (AVX-512 CPU) and might differ on other CPUs.
    """
    _check_mode(mode)
    acc = np.asarray(acc, dtype=np.int64)
    C = acc.shape[-1]
    eff = _effective_scales(s_in, w_scales, s_out)
    if eff.size == 1:
        eff = np.full(C, eff[0])
    if bias_bits == "none" and op == "fc" and mode != "reference":
        # a bias-less FC takes the optimized path in TF 2.21 (measured; see the docstring)
        bias_bits = 32
        if np.atleast_1d(np.asarray(w_scales)).size == 1:
            # per-tensor: the multiplier from GetQuantizedConvolutionMultipler, whose
            # input_product_scale is a float32 product widened to double (TF 2.21)
            sw = np.float32(np.atleast_1d(np.asarray(w_scales, dtype=np.float32))[0])
            e1 = float(np.float32(np.float32(s_in) * sw)) / float(np.float32(s_out))
            eff = np.full(C, e1)
    if bias_bits == 32:
        if mode != "reference":
            m, sh = quantize_multiplier(eff)
            a32 = _wrap32(acc)
            left = np.maximum(sh, 0)
            right = np.maximum(-sh, 0)
            hm = (_wrap32(a32 << left) * m + (1 << 30)) >> 31  # rounding high mul (half up)
            y = (hm + ((np.int64(1) << right) >> 1)) >> right    # rounding right shift, half up
            return np.clip(y, lo, hi)
    if op in ("conv", "dw", "depthwise"):
        m, sh = quantize_multiplier(eff)
        y = mbqm_int64(acc, m, sh)
    elif op == "fc":
        y = _f2i32(_round_away(acc.astype(np.float64) * eff))
    else:
        raise ValueError(f"op {op!r}")
    return np.clip(y, lo, hi)


# ----------------------------------------------------------------------------------------------
# ADD (same shapes)
# ----------------------------------------------------------------------------------------------

def _qm_smaller_than_one(real):
    m, sh = quantize_multiplier(real)
    return int(m), int(sh)


def add_params(qa, qb, qy):
    """add.cc ``Prepare`` (general-scale int16 path, ``pot_scale_int16 = false`` as the converter
    writes it): ``left_shift = 15``; ``twice = double(f32(2 * max(s_a, s_b)))`` (int * float is a
    float product, exact); input multipliers ``QuantizeMultiplierSmallerThanOneExp(s_a / twice)``,
    ``(s_b / twice)``; output ``QuantizeMultiplierSmallerThanOneExp(twice / double(f32(2**15 *
    s_y)))``."""
    sa, sb, sy = (np.float32(v) for v in (qa, qb, qy))
    twice = float(np.float32(2) * max(sa, sb))
    ma, sha = _qm_smaller_than_one(float(sa) / twice)
    mb, shb = _qm_smaller_than_one(float(sb) / twice)
    my, shy = _qm_smaller_than_one(twice / float(np.float32(np.float32(1 << 15) * sy)))
    return 15, (ma, sha), (mb, shb), (my, shy)


_srdhm = rq.saturating_rounding_doubling_high_mul
_rdbpot = rq.rounding_divide_by_pot


def _add_ref(a, b, P, lo, hi):
    ls, (ma, sha), (mb, shb), (my, shy) = P
    a2 = _rdbpot(_srdhm(_wrap32(a << ls), ma), -sha)
    b2 = _rdbpot(_srdhm(_wrap32(b << ls), mb), -shb)
    s = _wrap32(a2 + b2)
    y = _rdbpot(_srdhm(s, my), -shy)
    return np.clip(y, lo, hi)


def _add_neon(a, b, P, lo, hi):
    """optimized_integer_ops::AddElementwiseInt16, the USE_NEON (NEON_2_SSE) 16-lane loop:
    ``x << (15 + shift_x)`` with ``vshlq_s32`` (a negative count shifts right, truncating),
    ``vqrdmulhq_n_s32`` (= SaturatingRoundingDoublingHighMul) -- no rounding divide for the inputs --;
    sum; ``vqrdmulhq_n_s32`` by the output multiplier, ``RoundingDivideByPOT(-out_shift)`` (ties
    away); clamp; ``vqmovn``."""
    ls, (ma, sha), (mb, shb), (my, shy) = P

    def sh(x, n):
        return _wrap32(x << n) if n >= 0 else (x >> (-n))

    a2 = _srdhm(sh(a, ls + sha), ma)
    b2 = _srdhm(sh(b, ls + shb), mb)
    s = _wrap32(a2 + b2)
    y = _rdbpot(_srdhm(s, my), -shy)
    return np.clip(y, lo, hi)


def add(a, b, qa, qb, qy, mode, lo, hi):
    """ADD of two same-shape int16 tensors (one invocation's whole tensors per entry of the first axis;
    zero points 0), general-scale path (``pot_scale_int16 = false``, what the converter writes).

    * reference (``reference_ops::Add(int16, pot_scale=false)`` -> ``AddElementwise``):
      ``a' = MBQMSmallerThanOneExp(a * 2**15, m_a, sh_a)``, ``b'`` alike,
      ``y = clamp(MBQMSmallerThanOneExp(a' + b', m_y, sh_y), lo, hi)``, each MBQM the double-rounding
      int32 one (SRDHM then RoundingDivideByPOT).
    * builtin / xnnpack (``optimized_integer_ops::Add`` -> ``AddElementwiseInt16``): the first
      ``16 * floor(n / 16)`` flat elements run the NEON loop (:func:`_add_neon`; the AVX2 loop was
      measured not to be the one the x86 wheel runs), the tail the reference formula.
    """
    _check_mode(mode)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    P = add_params(qa, qb, qy)
    if mode == "reference":
        return _add_ref(a, b, P, lo, hi)
    fa, fb = a.reshape(len(a), -1), b.reshape(len(b), -1)
    nv = 16 * (fa.shape[1] // 16)
    out = np.empty(fa.shape, dtype=np.int64)
    out[:, :nv] = _add_neon(fa[:, :nv], fb[:, :nv], P, lo, hi)
    out[:, nv:] = _add_ref(fa[:, nv:], fb[:, nv:], P, lo, hi)
    return out.reshape(a.shape)
