"""Exact 256-entry tables of TF-Lite's (TF 2.21) 8-bit elementwise unary ops: LOGISTIC, TANH, HARD_SWISH,
LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1 and QUANTIZE between 8-bit types.

Any 8-bit -> 8-bit elementwise op is a function of the input code alone, so the importer evaluates it
once per code with the kernel's own arithmetic, and :class:`hwsim.frontends.tflite.records.LutOp`
indexes the table. ``unary_lut(op, s_in, zp_in, s_out, zp_out, mode, alpha=, in_dtype=, out_dtype=)``
returns the int64 table ``T`` with ``T[q - in_min]`` = the output code for input code ``q`` (``in_min``
= -128 for int8, 0 for uint8), for ``mode``:

* ``"xnnpack"``  -- the op inside the XNNPACK delegate (the default interpreter, where
  :func:`xnnpack_takes` is true; otherwise it runs the ``"builtin"`` table);
* ``"builtin"``  -- TF-Lite's optimized built-in kernel (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
* ``"reference"`` -- TF-Lite's reference kernels (``OpResolverType.BUILTIN_REF``).

Notation: ``f32(.)`` = one IEEE float32 operation (round to nearest even), ``s`` scales are float32,
``MBQM(x, m, sh)`` = ``quant.requant.multiply_by_quantized_multiplier`` (gemmlowp double rounding:
SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, ties away), ``QM(r)`` =
``quant.requant.quantize_multiplier`` (TF-Lite ``QuantizeMultiplier`` on a double), ``round_away`` = C
``std::round`` (half away from zero), ``clamp`` = to the output type's range. Sources are
``tensorflow/lite/kernels/...`` (TF 2.21) or ``src/...`` (the 2025 XNNPACK TF 2.21 pins).

LOGISTIC (int8)
  builtin = reference (activations.cc ``SigmoidPrepare<kGenericOptimized|kReference>`` ->
  ``PopulateLookupTable``, Eval ``EvalUsingLookupTable``): Prepare *requires* ``s_out == 1/256`` (any
  zero point; the converter always emits 1/256, -128) else the model fails to load.
  ``x = f32(s_in * float(q - zp_in))``; ``y = f32(1 / f32(1 + expf(-x)))`` (C float ``expf``);
  ``T = clamp(int(f32(round_away(f32(y * f32(1 / s_out))) + zp_out)))``.
  xnnpack (src/operators/unary-elementwise-nc.c ``init_lut_op_with_config``: qs8 sigmoid has no
  native kernel, the table is the reference op run on the 256 codes; src/reference/unary-elementwise.cc
  ``unary_ukernel_quantized`` + ``SigmoidOp``; src/xnnpack/reference-utils.h ``dequantize``/``quantize``/
  ``round_float_to_int``): ``x = f32(f32(float(q) - float(zp_in)) * s_in)``; ``y = 1`` if ``x > 100``,
  ``0`` if ``x < -100``, else ``e = exp((double)x)``, ``y = (float)(e / (1 + e))`` (double);
  ``T = clamp(round_away(f32(f32(y * f32(1 / s_out)) + float(zp_out))))`` -- *any* output scale.
  (TF 2.21's XNNPACK rounds with ``std::round``; XNNPACK switched to ``nearbyint`` in 2026-01;
  measured: exact ties such as sigmoid(0) need half-away; tests/test_tflite_ops.py.)
TANH (int8)
  builtin = reference: same table code as LOGISTIC with ``y = tanhf(x)`` and *no* output-scale check
  (converter emits 1/128, 0). xnnpack: same as LOGISTIC's xnnpack with ``y = tanhf(x)`` (``TanHOp``,
  ``std::tanh(float)``).
HARD_SWISH (int8): never delegated. builtin = reference (activations.cc ``HardSwishPrepare``;
  reference/hard_swish.h ``HardSwish`` -- the optimized kernel gives identical results, measured):
  ``hires = f32(f32(1/128) * s_in)``; ``(m_o, e_o) = QM(f32(hires / s_out))`` and
  ``(m_r, e_r) = QM(f32(hires / f32(3/32768)))``, each 31-bit multiplier reduced to int16 by
  ``DownScaleInt32ToInt16Multiplier`` (``(m + 2**15) >> 16``, 32767 when ``m >= 2**31-1-2**15``);
  Prepare fails unless ``e_o <= 0`` (i.e. ``s_in / 128 < s_out`` after rounding). Per code, int16
  arithmetic: ``v = (q - zp_in) * 128``; ``o = SRDHM16(v, m_o16)``; ``r = v``, if ``e_r > 0``
  ``r = sat16(r * 2**(e_r-1))``, ``r = SRDHM16(r, m_r16)``, if ``e_r > 0`` ``r = sat16(2r)``, if
  ``e_r < 0`` ``r = RoundingDivideByPOT(r, -e_r)``; ``r = (r + 32768) >> 1``;
  ``p = trunc(r * o / 2**15)`` (SaturatingDoublingHighMul, C division); ``T = clamp(
  RoundingDivideByPOT(p, -e_o) + zp_out)``. SRDHM16 = gemmlowp 16-bit SaturatingRoundingDoublingHighMul
  (``(a*b + (ab >= 0 ? 2**14 : 1 - 2**14)) / 2**15`` truncated).
LEAKY_RELU (int8)
  builtin = reference (activations.cc ``LeakyReluPrepare``/``LeakyReluEval`` ->
  reference_ops ``QuantizeLeakyRelu``, both resolvers): ``(m_a, e_a) = QM(f32(f32(s_in * alpha) / s_out))``,
  ``(m_i, e_i) = QM(f32(s_in / s_out))`` (float32 expressions converted to double);
  ``x = q - zp_in``; ``T = clamp(zp_out + MBQM(x, m_i, e_i) if x >= 0 else zp_out + MBQM(x, m_a, e_a))``.
  xnnpack (native qs8-vlrelu kernel; src/microparams-init.c ``xnn_init_qs8_lrelu_scalar_params``,
  src/qs8-vlrelu/*-scalar-select*.c; SSE/AVX variants give the same): ``pos = f32(s_in / s_out)``,
  ``neg = f32(pos * alpha)``, ``P = lrintf(f32(256 * pos))``, ``N = lrintf(f32(256 * neg))`` (half even);
  ``x = q - zp_in``; ``T = clamp((zp_out * 256 + 128 + x * (P if x >= 0 else N)) >> 8)`` (arithmetic
  shift = floor).
RELU / RELU6 / RELU_N1_TO_1 (int8): never delegated (XNNPACK takes them for float only).
  builtin = reference (activations.cc ``ReluPrepare`` + ``QuantizedReluX`` -> ``ReluX``, same kernel for
  both resolvers): ``(m, e) = QM(f32(s_in / s_out))``; ``lo = max(-128, zp_out + round_away(f32(a_min /
  s_out)))``, ``hi = min(127, zp_out + round_away(f32(a_max / s_out)))`` (no upper bound for RELU),
  ``(a_min, a_max) = (0, inf) / (0, 6) / (-1, 1)``; ``T = min(max(zp_out + MBQM(q - zp_in, m, e), lo), hi)``.
QUANTIZE (requantization, int8/uint8 in and out)
  reference (quantize.cc ``Prepare``/``Eval<kReference>`` -> reference_ops ``Requantize``):
  ``(m, e) = QM(double(s_in) / double(s_out))``; ``T = clamp(MBQM(q - zp_in, m, e) + zp_out)``.
  builtin, int8->uint8 / uint8->int8: the same as reference (measured).
  builtin, int8->int8 (optimized_ops ``Requantize``, NEON ``MultiplyByQuantizedMultiplier4Rows`` run
  through NEON_2_SSE on x86): ``v = SRDHM32(x << max(e, 0), m)`` then a *rounding shift*
  ``(v + 2**(n-1)) >> n`` with ``n = max(-e, 0)`` (ties toward +inf, not away from zero), ``+ zp_out``,
  clamp. This holds only for the first ``16 * floor(N / 16)`` elements of an N-element tensor; the
  ``N % 16`` tail elements use the scalar reference rounding -- see
  :class:`hwsim.frontends.tflite.records.LutOp`'s ``tail_table`` (measured on tensors of 7 to 1000 elements).
  xnnpack, int8->int8 only (qs8-vcvt kernel; src/microparams-init.c ``xnn_init_qs8_cvt_scalar_params``,
  src/qs8-vcvt/*-scalar*.c): ``M = lrintf(f32(256 * f32(s_in / s_out)))``;
  ``T = clamp((zp_out * 256 - M * zp_in + 128 + q * M) >> 8)``.

Float library: ``expf``/``tanhf``/``exp`` are glibc's, called through ctypes (the same functions the TF
wheel calls at run time; glibc 2.36 here). Pure numpy float32/float64 models of them differ by 1-2 ulp at
some points and measurably change a few TANH table entries (about 5 in 30,000 random quantizations), so they
are not used. Everything else is numpy integer/float32 arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from quant import requant as rq

F32 = np.float32
OPS = ("LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "RELU", "RELU6", "RELU_N1_TO_1", "QUANTIZE")
MODES = ("xnnpack", "builtin", "reference")
_RANGE = {"int8": (-128, 127), "uint8": (0, 255)}

# ----------------------------------------------------------------------------------------------
# float helpers
# ----------------------------------------------------------------------------------------------

def _f32(x):
    return np.asarray(x, dtype=np.float32)


_LIBM = None


def _libm():
    """glibc's libm through ctypes: the very expf/tanhf/exp the TF-Lite wheel calls at run time."""
    global _LIBM
    if _LIBM is None:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        for name, t in (("expf", ctypes.c_float), ("tanhf", ctypes.c_float), ("exp", ctypes.c_double)):
            f = getattr(lib, name)
            f.restype = t
            f.argtypes = [t]
        _LIBM = lib
    return _LIBM


def expf(x):
    """C ``expf`` (what ``std::exp(float)`` calls): glibc's, via ctypes. glibc's expf is not always the
    correctly rounded value (measured: 13 of 20001 points in [-8, 8] differ by 1 ulp from exp in double
    rounded to float), so a pure-numpy model would be off by an ulp there."""
    x = np.asarray(x, dtype=np.float32)
    f = _libm().expf
    return np.array([f(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)


def _tanhf(x):
    """C ``tanhf`` (what ``std::tanh(float)`` calls): glibc's, via ctypes. glibc 2.36's tanhf is off by
    up to 2 ulp from the correctly rounded value, and that changes TANH tables (measured on the
    interpreter: tables built from numpy's tanh miss one code in some cases; glibc's match)."""
    x = np.asarray(x, dtype=np.float32)
    f = _libm().tanhf
    return np.array([f(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)


def _exp_double(x):
    """C ``exp`` on doubles (glibc's, via ctypes)."""
    x = np.asarray(x, dtype=np.float64)
    f = _libm().exp
    return np.array([f(float(v)) for v in x.ravel()], dtype=np.float64).reshape(x.shape)


def _codes(dtype):
    lo, hi = _RANGE[dtype]
    return np.arange(lo, hi + 1, dtype=np.int64)


def _clamp(v, dtype):
    lo, hi = _RANGE[dtype]
    return np.clip(np.asarray(v, dtype=np.int64), lo, hi)


# ----------------------------------------------------------------------------------------------
# TF-Lite built-in LUT (activations.cc PopulateLookupTable)
# ----------------------------------------------------------------------------------------------

def _tflite_lut(fn, q, s_in, zp_in, s_out, zp_out, out_dtype):
    """activations.cc PopulateLookupTable: float32 dequantize, transform, std::round, + zp, int cast, clamp."""
    inv = F32(F32(1.0) / F32(s_out))                               # const float inverse_scale = 1 / scale
    deq = (F32(s_in) * (q - zp_in).astype(np.float32)).astype(np.float32)
    t = fn(deq)
    r = _round_away_f32((t * inv).astype(np.float32))
    quant = np.trunc((r + F32(zp_out)).astype(np.float32)).astype(np.float64)  # static_cast<int32_t>
    return _clamp(np.clip(quant, -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int64), out_dtype)


def _round_away_f32(v):
    return rq.round_half_away(np.asarray(v, dtype=np.float32))


def _tfl_sigmoid(x):
    x = _f32(x)
    e = expf(-x)
    return (F32(1.0) / (F32(1.0) + e)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# XNNPACK reference-op LUT (src/operators/unary-elementwise-nc.c init_lut_op_with_config +
# src/reference/unary-elementwise.cc unary_ukernel_quantized, reference-utils.h quantize/dequantize)
# ----------------------------------------------------------------------------------------------

def _xnn_lut(fn, q, s_in, zp_in, s_out, zp_out, out_dtype):
    x = ((q.astype(np.float32) - F32(zp_in)) * F32(s_in)).astype(np.float32)
    y = fn(x).astype(np.float32)
    inv = F32(1.0) / F32(s_out)
    v = (y * inv + F32(zp_out)).astype(np.float32)  # two roundings (a fused form gave the same tables)
    v = np.where(np.isnan(v), F32(0), v)
    v = _round_away_f32(v)                           # std::round: half away from zero (TF 2.21's XNNPACK)
    lo, hi = _RANGE[out_dtype]
    v = np.minimum(np.maximum(v, lo), hi)
    return v.astype(np.int64)


def _xnn_sigmoid(x):
    x = _f32(x)
    xd = x.astype(np.float64)
    e = _exp_double(np.clip(xd, -100.0, 100.0))
    r = (e / (1.0 + e)).astype(np.float32)
    r = np.where(x > 100, F32(1), np.where(x < -100, F32(0), r))
    return r.astype(np.float32)



# ----------------------------------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------------------------------

def _mbqm(x, m, s):
    return rq.multiply_by_quantized_multiplier(x, m, s)


def _srdhm16(a, b):
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    r = (ab + nudge)
    r = np.where(r >= 0, r >> 15, -((-r) >> 15))      # C division by 2**15 (toward zero)
    ovf = (a == b) & (a == -32768)
    return np.where(ovf, 32767, r)


def _sat16(v):
    return np.clip(v, -32768, 32767)


def _downscale16(m32):
    if m32 >= (2 ** 31 - 1) - (1 << 15):
        return 32767
    return (m32 + (1 << 15)) >> 16


def _hardswish_tfl(q, s_in, zp_in, s_out, zp_out, out_dtype):
    s_in = F32(s_in)
    hires_scale = F32(F32(1.0) / F32(128.0)) * s_in
    reluish_scale = F32(3.0) / F32(32768.0)
    out_mult = F32(hires_scale / F32(s_out))
    m32, out_exp = rq.quantize_multiplier(float(out_mult))
    out_m16 = _downscale16(m32)
    if out_exp > 0:
        raise ValueError("HARD_SWISH: output multiplier exponent > 0 (TF-Lite Prepare fails)")
    rel_mult = F32(hires_scale / reluish_scale)
    r32, rel_exp = rq.quantize_multiplier(float(rel_mult))
    rel_m16 = _downscale16(r32)

    iv = _sat16(q - zp_in)  # int16_t input_value (wraps in C for out-of-range, impossible here)
    hires = iv * 128
    pre_out = _srdhm16(hires, out_m16)
    rel = hires
    if rel_exp > 0:
        rel = _sat16(rel * (1 << (rel_exp - 1)))
    rel = _srdhm16(rel, rel_m16)
    if rel_exp > 0:
        rel = _sat16(rel * 2)
    if rel_exp < 0:
        rel = rq.rounding_divide_by_pot(rel, -rel_exp)
    rel = (rel + (1 << 15)) >> 1
    prod = rel * pre_out
    pso = np.where(prod >= 0, prod >> 15, -((-prod) >> 15))
    ovf = (rel == pre_out) & (rel == -32768)
    pso = np.where(ovf, 32767, pso)
    out = rq.rounding_divide_by_pot(pso, -out_exp)
    out = out + zp_out
    return _clamp(out, out_dtype)


def _relu_bounds_tfl(op, s_out, zp_out, out_dtype):
    lo, hi = _RANGE[out_dtype]
    amin, amax = {"RELU": (0.0, math.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}[op]
    def rnd(a):
        v = F32(F32(a) / F32(s_out))
        return int(_round_away_f32(v))
    qmin = max(lo, zp_out + rnd(amin))
    qmax = hi if amax == math.inf else min(hi, zp_out + rnd(amax))
    return qmin, qmax


def unary_lut(op: str, s_in: float, zp_in: int, s_out: float, zp_out: int, mode: str, *, alpha: float = 0.0,
              in_dtype="int8", out_dtype="int8") -> np.ndarray:
    """Output codes (int64, 256 entries) for every input code ``in_min..in_max`` of ``in_dtype`` of the
    quantized unary ``op`` in kernel ``mode`` (semantics and sources: module docstring).

    ``op``: LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU (``alpha`` = its option), RELU, RELU6, RELU_N1_TO_1,
    QUANTIZE (int8->int8, uint8->int8, int8->uint8 via ``in_dtype``/``out_dtype``). Scales are taken as
    float32 (as stored in the .tflite file). Raises ``ValueError`` where TF-Lite's kernel refuses the
    parameters at Prepare (LOGISTIC builtin/reference with ``s_out != 1/256``; HARD_SWISH with an output
    multiplier >= 1) and for "xnnpack" with an op XNNPACK never takes (check :func:`xnnpack_takes`: the
    default interpreter runs the "builtin" table where it declines).
    For QUANTIZE int8->int8 "builtin", only the first ``16 * (N // 16)`` elements of an N-element tensor
    follow this table; the rest follow "reference" (:class:`.records.LutOp`).
    """
    if mode not in MODES:
        raise ValueError(mode)
    q = _codes(in_dtype)
    s_in = F32(s_in)
    s_out = F32(s_out)
    if op in ("LOGISTIC", "TANH"):
        if mode == "xnnpack":
            fn = _xnn_sigmoid if op == "LOGISTIC" else _tanhf
            return _xnn_lut(fn, q, s_in, zp_in, s_out, zp_out, out_dtype)
        if op == "LOGISTIC" and float(s_out) != 1.0 / 256:
            raise ValueError("LOGISTIC: TF-Lite requires output scale 1/256")
        fn = _tfl_sigmoid if op == "LOGISTIC" else _tanhf
        return _tflite_lut(fn, q, s_in, zp_in, s_out, zp_out, out_dtype)
    if op in ("HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1") and mode == "xnnpack":
        raise ValueError(f"XNNPACK does not take an 8-bit {op} (xnnpack_takes); its table is the built-in kernel's")
    if op == "HARD_SWISH":
        return _hardswish_tfl(q, s_in, zp_in, s_out, zp_out, out_dtype)
    if op == "LEAKY_RELU":
        a = F32(alpha)
        if mode == "xnnpack":
            pos = F32(s_in / s_out)
            neg = F32(pos * a)
            pm = int(np.rint(F32(256.0) * pos))
            nm = int(np.rint(F32(256.0) * neg))
            x = q - zp_in
            m = np.where(x >= 0, pm, nm)
            acc = (zp_out << 8) + 0x80 + x * m
            return _clamp(acc >> 8, out_dtype)
        am, ash = rq.quantize_multiplier(float(F32(F32(s_in * a) / s_out)))
        im, ish = rq.quantize_multiplier(float(F32(s_in / s_out)))
        x = q - zp_in
        y = np.where(x >= 0, _mbqm(x, im, ish), _mbqm(x, am, ash)) + zp_out
        return _clamp(y, out_dtype)
    if op in ("RELU", "RELU6", "RELU_N1_TO_1"):
        m, sh = rq.quantize_multiplier(float(F32(s_in / s_out)))
        qmin, qmax = _relu_bounds_tfl(op, s_out, zp_out, out_dtype)
        y = _mbqm(q - zp_in, m, sh) + zp_out
        return np.minimum(np.maximum(y, qmin), qmax).astype(np.int64)
    if op == "QUANTIZE":
        if mode == "xnnpack":
            if in_dtype == out_dtype:
                ratio = F32(s_in / s_out)
                m = int(np.rint(F32(256.0) * ratio))
                bias = (zp_out << 8) - m * zp_in + 0x80
                return _clamp((bias + q * m) >> 8, out_dtype)
            return _xnn_lut(lambda x: x, q, s_in, zp_in, s_out, zp_out, out_dtype)
        m, sh = rq.quantize_multiplier(float(np.float64(s_in) / np.float64(s_out)))
        x = q - zp_in
        if mode == "builtin" and in_dtype == "int8" and out_dtype == "int8":
            # optimized_ops::Requantize<int8,int8>: NEON MultiplyByQuantizedMultiplier4Rows (run through
            # NEON_2_SSE on x86): x << max(shift, 0), SQRDMULH, then a rounding shift right (VRSHL:
            # add 2**(n-1), arithmetic shift -- ties toward +inf, not away from zero)
            left = max(sh, 0)
            right = max(-sh, 0)
            v = rq.saturating_rounding_doubling_high_mul(x << left, m)
            y = ((v + ((1 << right) >> 1)) >> right) + zp_out
        else:
            y = _mbqm(x, m, sh) + zp_out
        return _clamp(y, out_dtype)
    raise ValueError(f"unknown op {op!r}")



def xnnpack_takes(op, s_in, zp_in, s_out, zp_out, *, alpha=0.0, in_dtype="int8", out_dtype="int8") -> bool:
    """Whether TF 2.21's XNNPACK delegate takes this quantized unary op (tensorflow/lite/delegates/xnnpack/
    xnnpack_delegate.cc, VisitUnaryNode + GetXNNPackDatatype / CheckAffineQuantization):

    * every quantized tensor: per-tensor scale that is a normal, positive float32, zero point inside the
      type's range (int8: -128..127, uint8: 0..255);
    * HARD_SWISH, RELU, RELU6, RELU_N1_TO_1: float tensors only -> never for int8/uint8;
    * LOGISTIC, TANH: int8 (or uint8) in and out, same type; no condition on the scales;
    * LEAKY_RELU: alpha a normal float32 (not 0, not subnormal; negative allowed);
      ``pos = f32(s_in / s_out)`` in [1/256, 128]; ``neg = f32(pos * alpha)`` in [-127.99609375, 128]
      and ``|neg| >= 1/256``;
    * QUANTIZE (requantization): input and output of the *same* type (int8->int8 or uint8->uint8) with
      ``f32(s_in / s_out)`` in [1/256, 128]; int8<->uint8 is refused ("unsupported combination").
    """
    def qok(s, zp, dt):
        s = F32(s)
        lo, hi = _RANGE[dt]
        return bool(np.isfinite(s) and s > 0 and s >= np.finfo(np.float32).tiny) and lo <= zp <= hi
    if not (qok(s_in, zp_in, in_dtype) and qok(s_out, zp_out, out_dtype)):
        return False
    if op in ("HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1"):
        return False
    if in_dtype != out_dtype:
        return False
    ratio = F32(F32(s_in) / F32(s_out))
    if op in ("LOGISTIC", "TANH"):
        return True
    if op == "LEAKY_RELU":
        a = F32(alpha)
        if a == 0 or not np.isfinite(a) or abs(a) < np.finfo(np.float32).tiny:
            return False
        if ratio < F32(1.0 / 256.0) or ratio > F32(128.0):
            return False
        neg = F32(ratio * a)
        return bool(F32(-127.99609375) <= neg <= F32(128.0) and abs(neg) >= F32(1.0 / 256.0))
    if op == "QUANTIZE":
        return bool(F32(1.0 / 256.0) <= ratio <= F32(128.0))
    raise ValueError(f"unknown op {op!r}")
