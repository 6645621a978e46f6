"""Exact int8 arithmetic of TF-Lite's elementwise binary ops MUL, SUB, ADD, MAXIMUM, MINIMUM (TF 2.21,
x86-64 pip wheel), with numpy broadcasting, in three kernel modes (the record is
:class:`hwsim.frontends.tflite.records.BinaryOp`):

* ``"xnnpack"``  -- the op inside the XNNPACK delegate (the default ``tf.lite.Interpreter``), for the
  cases where :func:`xnnpack_takes` says the delegate takes it (otherwise the default interpreter runs
  the ``"builtin"`` arithmetic);
* ``"builtin"``  -- TF-Lite's optimized built-in kernel (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``);
* ``"reference"`` -- TF-Lite's reference kernel (``BUILTIN_REF``).

Every function works on int64 numpy arrays of int8 codes; the result is the int8 output code.
``lo``/``hi`` are the fused activation's clamp bounds in output codes (the same rule as the MAC ops',
:func:`hwsim.frontends.tflite.records.act_bounds`).

Notation: ``zp_a, zp_b, zp_y`` zero points, ``s_a, s_b, s_y`` the float32 scales, ``f32(.)`` one
IEEE float32 operation, ``SRDHM`` = gemmlowp ``SaturatingRoundingDoublingHighMul`` (``floor((x*m +
2**30) / 2**31)``), ``RDBPOT(x, e)`` = gemmlowp ``RoundingDivideByPOT`` (round half away from zero),
``MBQM(x, m, shift)`` = TF-Lite ``MultiplyByQuantizedMultiplier`` in its double-rounding form
(``RDBPOT(SRDHM(x * 2**max(shift, 0), m), max(-shift, 0))``, the TF 2.21 wheel is built without
``TFLITE_SINGLE_ROUNDING``), ``QM(r)`` = ``QuantizeMultiplier(double r)`` (``quantization_util.cc``).
These primitives are reused from :mod:`quant.requant`.

Sources (read at google-ai-edge/LiteRT f67457790c9c, the code TF 2.21's ``tensorflow/lite`` is synced
from, and google/XNNPACK 75db3c093b6d; the TF 2.21 wheel bundles a 2025 XNNPACK -- the probe confirms
that the formulas below hold for it):

MUL
  xnnpack: ``xnn_init_qs8_mul_minmax_scalar_params`` (``src/microparams-init.c``):
  ``scale = f32(f32(s_a * s_b) / s_y)``; microkernel ``xnn_qs8_vmul_minmax_fp32_ukernel__avx_mul16_ld64_u16``
  (x86 with AVX; the SSE4.1/SSE2/scalar variants compute the same): ``p = (a - zp_a) * (b - zp_b)`` (exact
  int16 x int16 -> int32), ``f = f32(float(p) * scale)``, ``q = lrintf(f)`` (``_mm_cvtps_epi32``, round
  half to even), ``y = sat8(sat16(sat16(q) + zp_y))`` then ``max(lo)``, ``min(hi)`` -- for int8 operands
  identical to ``clamp(q + zp_y, lo, hi)``. ``vmulc`` (one operand a single element, e.g. a constant or
  a (1,1,1,1) tensor) computes the same with ``b`` fixed.
  reference: ``mul.cc`` Prepare: ``real = double(f32(f32(s_a * s_b) / s_y))`` (the product and quotient
  are float expressions), ``(m, shift) = QM(real)``; ``reference_integer_ops::MulElementwise`` /
  ``BroadcastMul6DSlow``: ``y = clamp(zp_y + MBQM((a - zp_a) * (b - zp_b), m, shift), lo, hi)``.
  builtin: ``optimized_integer_ops::Mul`` / ``BroadcastMulDispatch`` (``optimized/integer_ops/mul.h``),
  compiled with ``USE_NEON`` on x86 (``neon_check.h``: SSE4.1 -> ``NEON_2_SSE.h``). Elements computed by
  the 16-wide NEON loop: ``p = MBQM(prod, m, shift)`` as in the reference (``vshlq_s32``,
  ``vqrdmulhq_n_s32`` = SRDHM, gemmlowp ``RoundingDivideByPOT``), then ``vqmovn_s32`` (saturate to int16),
  ``vaddq_s16`` with ``zp_y`` (WRAPS modulo 2**16), ``vqmovn_s16`` (saturate to int8), clamp. The
  remaining elements of each call (``size % 16``) use the scalar reference formula. The two differ only
  when ``|p|`` approaches 2**15 (multipliers >~ 0.5 with large products): e.g. ``p = 32760, zp_y = 10``
  gives -128 in the vector loop and 127 in the scalar one. Which elements are vectorised follows the
  call structure of ``BinaryBroadcastFiveFold`` (:func:`_builtin_blocks`).

ADD
  xnnpack: ``xnn_init_qs8_add_minmax_scalar_params``: ``r_a = f32(s_a / s_y)``, ``r_b = f32(s_b / s_y)``,
  ``shift = 20 - (exponent of max(|r_a|, |r_b|))`` (in [12, 30]), ``m_x = lrintf(|r_x| * 2**shift)``
  (exact exponent add, round half even), negated if ``r_x < 0``; ``bias = 2**(shift-1) - m_a zp_a -
  m_b zp_b``; microkernels ``qs8-vadd``/``qs8-vaddc`` (``avx2-mul32-ld64``, ``avx512skx-mul32-ld128``,
  ``sse41``, scalar): ``acc = bias + m_a a + m_b b`` (int32, exact), ``y = clamp((acc >> shift) + zp_y,
  lo, hi)`` (arithmetic shift = floor; the int16/int8 saturating packs cannot change a clamped result).
  reference: ``add.cc`` Prepare + ``reference_integer_ops::AddFunc``: ``twice = 2 * max(s_a, s_b)``
  (float, exact), ``(m_a, sh_a) = QM(double(s_a) / twice)``, ``(m_b, sh_b)`` alike, ``(m_o, sh_o) =
  QM(twice / f32(2**20 * s_y))``; ``A = RDBPOT(SRDHM((a - zp_a) * 2**20, m_a), -sh_a)``, ``B`` alike,
  ``y = clamp(RDBPOT(SRDHM(A + B, m_o), -sh_o) + zp_y, lo, hi)``.
  builtin: ``optimized_integer_ops::Add`` / ``BroadcastAddDispatch`` (``optimized/integer_ops/add.h``):
  * ``AddElementwiseInt8``, 16-wide NEON loop: ``A = SRDHM(shl((a - zp_a), 20 + sh_a), m_a)`` (ONE
    rounding: the input shift is folded into the left shift; ``shl`` by a negative amount is an
    arithmetic right shift, ``vshlq_s32``), ``B`` alike, ``O = RDBPOT(SRDHM(A + B, m_o), -sh_o)``,
    then ``vmovn_s32`` (TRUNCATES to int16), ``vaddq_s16`` with ``zp_y`` (wraps), ``vqmovn_s16``
    (saturates), clamp; the ``size % 16`` tail uses the reference formula.
  * ``AddScalarBroadcast`` (one operand broadcast element by element: scalar or (1,1,1,1) operand),
    8-wide loop: ``A = SRDHM((a - zp_a) * 2**20, m_a) >> -sh_a`` (``vshlq_s32`` by the negative shift:
    FLOOR, not rounding), ``B`` alike, output as in the 16-wide loop; the ``size % 8`` tail uses the
    reference formula.

SUB
  xnnpack: ``binary-elementwise-nd.c`` ``init_config``: qs8 subtract = the qs8 ``vadd`` microkernels with
  ``b``'s scale negated (``sign_b = -1``), i.e. the ADD formula with ``m_b = -lrintf(|r_b| 2**shift)``.
  reference and builtin: ``sub.cc`` ``EvalQuantized`` calls ``reference_ops::Sub`` /
  ``BroadcastQuantSubSlow`` for int8 in BOTH kernel types (no NEON path), the ADD reference formula with
  ``A - B``: ``y = clamp(RDBPOT(SRDHM(A - B, m_o), -sh_o) + zp_y, lo, hi)`` (multipliers as in ADD;
  ``PrepareGeneralSubOp``).

MAXIMUM, MINIMUM
  Not delegated for int8 (``VisitBinaryNode`` only accepts float tensors for them). Both TF-Lite kernels
  (``maximum_minimum.cc``: ``reference_ops::MaximumMinimumBroadcastSlow`` or
  ``optimized_ops::BroadcastMaximumDispatch``) compare the raw int8 codes and ignore the quantization
  (the converter gives both inputs and the output the same scale and zero point); there is no fused
  activation. ``y = max(a, b)`` / ``min(a, b)`` on codes, in every mode.
"""

from __future__ import annotations

import math

import numpy as np

from quant import requant as rq

__all__ = ["binary", "xnnpack_takes", "OPS", "MODES"]

OPS = ("MUL", "SUB", "ADD", "MAXIMUM", "MINIMUM")
MODES = ("xnnpack", "builtin", "reference")

_F = np.float32


def _i64(x) -> np.ndarray:
    return np.asarray(x).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# XNNPACK acceptance
# ------------------------------------------------------------------------------------------------

def xnnpack_takes(op, qa, qb, qy, a_shape, b_shape, b_is_constant: bool) -> bool:
    """Whether the TF 2.21 XNNPACK delegate takes this int8 binary op (``xnnpack_delegate.cc``
    ``VisitBinaryNode``); if not, the default interpreter runs it on the builtin kernel.

    * MAXIMUM, MINIMUM: never for int8 (``CheckTensorFloatType`` on all tensors).
    * ADD, SUB: ``CheckTensorsInputOutputScale`` for each input: ``1/1024 <= f32(s_in / s_y) < 256``.
    * MUL: ``CheckTensorsInputProductOutputScale``: ``1/65536 <= f32(f32(s_a * s_b) / s_y) < 256``.
    * all: per-tensor int8 quantization, at most ``XNN_MAX_TENSOR_DIMS`` (6) dimensions, positive
      normal scales (``init_binary_elementwise_nd``). A constant (static) operand does not matter:
      it becomes a static XNNPACK value (``vmulc``/``vaddc`` when it has one element).
    """
    op = op.upper()
    if op in ("MAXIMUM", "MINIMUM"):
        return False
    if len(a_shape) > 6 or len(b_shape) > 6:
        return False
    sa, sb, sy = _F(qa[0]), _F(qb[0]), _F(qy[0])
    for s in (sa, sb, sy):
        if not (s > 0 and np.isfinite(s) and s >= np.finfo(np.float32).tiny):
            return False
    if op == "MUL":
        r = _F(_F(sa * sb) / sy)
        return bool(_F(1.0 / 65536.0) <= r < _F(256.0))
    lo, hi = _F(1.0 / 1024.0), _F(256.0)
    return bool(lo <= _F(sa / sy) < hi and lo <= _F(sb / sy) < hi)


# ------------------------------------------------------------------------------------------------
# fixed-point helpers
# ------------------------------------------------------------------------------------------------

_srdhm = rq.saturating_rounding_doubling_high_mul
_rdbpot = rq.rounding_divide_by_pot


def _mbqm_ste(x, m, shift):
    """MultiplyByQuantizedMultiplierSmallerThanOneExp (double rounding), ``shift <= 0``."""
    if shift > 0:
        raise ValueError(f"multiplier shift {shift} > 0: TF-Lite's SmallerThanOneExp path is undefined here")
    return _rdbpot(_srdhm(x, m), -shift)


def _wrap16(x):
    return ((np.asarray(x, dtype=np.int64) + 32768) & 0xFFFF) - 32768


_wrap32 = rq.wrap_int32


def _shl32(x, n: int):
    """``vshlq_s32(x, n)``: left shift (wrapping) for n >= 0, arithmetic right shift for n < 0."""
    if n >= 0:
        return _wrap32(np.asarray(x, dtype=np.int64) << n)
    return np.asarray(x, dtype=np.int64) >> min(-n, 63)


def _add_params(qa, qb, qy):
    """add.cc / sub.cc Prepare (``left_shift = 20``)."""
    sa, sb, sy = _F(qa[0]), _F(qb[0]), _F(qy[0])
    twice = 2.0 * float(max(sa, sb))  # float expression, exact
    ma, sha = rq.quantize_multiplier(float(sa) / twice)
    mb, shb = rq.quantize_multiplier(float(sb) / twice)
    mo, sho = rq.quantize_multiplier(twice / float(_F(_F(1 << 20) * sy)))
    return (ma, sha), (mb, shb), (mo, sho)


def _mul_params(qa, qb, qy):
    """mul.cc Prepare: ``real = double(f32(f32(s_a * s_b) / s_y))``, ``QuantizeMultiplier``."""
    sa, sb, sy = _F(qa[0]), _F(qb[0]), _F(qy[0])
    return rq.quantize_multiplier(float(_F(_F(sa * sb) / sy)))


# ------------------------------------------------------------------------------------------------
# builtin: which output elements the NEON loops compute (BinaryBroadcastFiveFold)
# ------------------------------------------------------------------------------------------------

def _process_broadcast_shapes(shape0, shape1):
    """``ProcessBroadcastShapes`` (``reference/process_broadcast_shapes.h``): returns
    ``(category, y[0..4])`` with category "none", "first_fast", "second_fast" or "generic"."""
    n = max(len(shape0), len(shape1))
    e0 = (1,) * (n - len(shape0)) + tuple(int(d) for d in shape0)
    e1 = (1,) * (n - len(shape1)) + tuple(int(d) for d in shape1)
    if e0 == e1:
        return "none", None
    cat = None
    for i in range(n - 1, -1, -1):
        if e0[i] == e1[i]:
            continue
        if e0[i] == 1:
            cat = "first_fast"
        elif e1[i] == 1:
            cat = "second_fast"
        else:
            return "generic", None
        break
    a, b = (e1, e0) if cat == "second_fast" else (e0, e1)
    y = [1, 1, 1, 1, 1]
    i = n - 1
    while i >= 0 and a[i] == b[i]:
        y[4] *= b[i]
        i -= 1
    while i >= 0 and a[i] == 1:
        y[3] *= b[i]
        i -= 1
    while i >= 0 and a[i] == b[i]:
        y[2] *= a[i]
        i -= 1
    while i >= 0 and b[i] == 1:
        y[1] *= a[i]
        i -= 1
    while i >= 0 and a[i] == b[i]:
        y[0] *= b[i]
        i -= 1
    if i >= 0:
        return "generic", None
    return cat, y


def _builtin_blocks(op, a_shape, b_shape, out_size):
    """For the optimized MUL/ADD kernels: per flat output index, which loop computes it:
    0 = scalar (reference formula), 1 = 16-wide elementwise NEON loop, 2 = scalar-broadcast NEON loop
    (16-wide ``MulSimpleBroadcast`` / 8-wide ``AddScalarBroadcast``)."""
    cat, y = _process_broadcast_shapes(a_shape, b_shape)
    kind = np.zeros(out_size, dtype=np.int8)
    idx = np.arange(out_size)
    if cat == "generic":
        return kind  # reference_integer_ops::BroadcastMul6DSlow / BroadcastAdd6DSlow
    if cat == "none":
        kind[idx < (out_size // 16) * 16] = 1
        return kind
    if y[4] > 1:  # elementwise_f(y4, ...) on consecutive chunks of y4 outputs
        pos = idx % y[4]
        kind[pos < (y[4] // 16) * 16] = 1
    else:  # scalar_broadcast_f(y3, ...) on consecutive chunks of y3 outputs
        width = 16 if op == "MUL" else 8
        pos = idx % y[3]
        kind[pos < (y[3] // width) * width] = 2
    return kind


# ------------------------------------------------------------------------------------------------
# per-op arithmetic
# ------------------------------------------------------------------------------------------------

def _xnn_add(a, b, qa, qb, qy, sign_b):
    sa, sb, sy = _F(qa[0]), _F(qb[0]), _F(qy[0])
    ra = _F(sa / sy)
    rb = _F(_F(sign_b * sb) / sy)
    mx = max(abs(ra), abs(rb))
    exponent = int(np.asarray(mx, dtype=np.float32).view(np.uint32) >> np.uint32(23)) - 127
    shift = 20 - exponent
    if not (12 <= shift <= 30):
        raise ValueError("XNNPACK add/sub scale ratio out of range (the delegate rejects it)")
    ma = int(np.rint(_F(math.ldexp(float(abs(ra)), shift))))
    mb = int(np.rint(_F(math.ldexp(float(abs(rb)), shift))))
    ma = -ma if np.signbit(ra) else ma
    mb = -mb if np.signbit(rb) else mb
    bias = (1 << (shift - 1)) - ma * int(qa[1]) - mb * int(qb[1])
    acc = bias + ma * a + mb * b
    return (acc >> shift) + int(qy[1])


def _xnn_mul(a, b, qa, qb, qy):
    scale = _F(_F(_F(qa[0]) * _F(qb[0])) / _F(qy[0]))
    p = (a - int(qa[1])) * (b - int(qb[1]))
    f = p.astype(np.float32) * scale
    return np.rint(f).astype(np.int64) + int(qy[1])


def _ref_mul(a, b, qa, qb, qy):
    m, shift = _mul_params(qa, qb, qy)
    p = (a - int(qa[1])) * (b - int(qb[1]))
    return rq.multiply_by_quantized_multiplier(p, m, shift) + int(qy[1])


def _ref_addsub(a, b, qa, qb, qy, sign_b):
    (ma, sha), (mb, shb), (mo, sho) = _add_params(qa, qb, qy)
    A = _mbqm_ste((a - int(qa[1])) << 20, ma, sha)
    B = _mbqm_ste((b - int(qb[1])) << 20, mb, shb)
    return _mbqm_ste(A + sign_b * B, mo, sho) + int(qy[1])


def _neon_out_mul(p, zp):
    """vqmovn_s32 -> vaddq_s16(zp) -> vqmovn_s16."""
    return np.clip(_wrap16(np.clip(p, -32768, 32767) + zp), -128, 127)


def _neon_out_add(o, zp):
    """vmovn_s32 -> vaddq_s16(zp) -> vqmovn_s16."""
    return np.clip(_wrap16(_wrap16(o) + zp), -128, 127)


def _builtin_mul(a, b, qa, qb, qy, kind):
    m, shift = _mul_params(qa, qb, qy)
    p = rq.multiply_by_quantized_multiplier((a - int(qa[1])) * (b - int(qb[1])), m, shift)
    scalar = p + int(qy[1])
    vec = _neon_out_mul(p, int(qy[1]))
    return np.where(kind == 0, scalar, vec)


def _builtin_add(a, b, qa, qb, qy, kind):
    (ma, sha), (mb, shb), (mo, sho) = _add_params(qa, qb, qy)
    xa, xb = a - int(qa[1]), b - int(qb[1])
    zp = int(qy[1])
    scalar = _mbqm_ste(_mbqm_ste(xa << 20, ma, sha) + _mbqm_ste(xb << 20, mb, shb), mo, sho) + zp
    # AddElementwiseInt8 (16-wide): input shift folded into the left shift, one rounding
    A1 = _srdhm(_shl32(xa, 20 + sha), ma)
    B1 = _srdhm(_shl32(xb, 20 + shb), mb)
    v1 = _neon_out_add(_mbqm_ste(_wrap32(A1 + B1), mo, sho), zp)
    # AddScalarBroadcast (8-wide): SRDHM then arithmetic (floor) shift by the input shift
    A2 = _srdhm(xa << 20, ma) >> (-sha)
    B2 = _srdhm(xb << 20, mb) >> (-shb)
    v2 = _neon_out_add(_mbqm_ste(_wrap32(A2 + B2), mo, sho), zp)
    return np.where(kind == 0, scalar, np.where(kind == 1, v1, v2))


def binary(op: str, a: np.ndarray, b: np.ndarray, qa: tuple[float, int], qb: tuple[float, int],
           qy: tuple[float, int], mode: str, lo: int = -128, hi: int = 127, shapes=None) -> np.ndarray:
    """Output int8 codes (int64 array, the broadcast shape of ``a`` and ``b``) of TF-Lite's int8
    ``op(a, b)`` (``a`` is the op's first input, ``b`` its second; their shapes are the tensors' shapes,
    a constant scalar operand may be 0-d) with quantization ``(scale, zero_point)`` ``qa``, ``qb``,
    ``qy``, computed as kernel ``mode`` does (see the module docstring), clamped to ``[lo, hi]``
    (-128..127 without fused activation).

    mode "xnnpack" is the delegate's arithmetic and assumes :func:`xnnpack_takes` (MAXIMUM/MINIMUM,
    which it never takes, return the builtin result). For mode "builtin" the result can depend on the
    element's position (NEON loop vs scalar tail): ``a`` and ``b`` have the op's real tensor shapes, or
    ``shapes`` gives those (of one invocation, batch 1) while ``a`` and ``b`` hold a batch of invocations
    along their first axis.
    """
    op = op.upper()
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    a0, b0 = _i64(a), _i64(b)
    A, B = np.broadcast_arrays(a0, b0)
    A = A.astype(np.int64)
    B = B.astype(np.int64)
    if op in ("MAXIMUM", "MINIMUM"):
        y = np.maximum(A, B) if op == "MAXIMUM" else np.minimum(A, B)
        return np.clip(y, lo, hi)
    if mode == "xnnpack":
        if op == "MUL":
            y = _xnn_mul(A, B, qa, qb, qy)
        else:
            y = _xnn_add(A, B, qa, qb, qy, -1 if op == "SUB" else 1)
        return np.clip(y, lo, hi)
    if mode == "reference" or op == "SUB":  # sub.cc: reference_ops for int8 in every kernel type
        if op == "MUL":
            y = _ref_mul(A, B, qa, qb, qy)
        else:
            y = _ref_addsub(A, B, qa, qb, qy, -1 if op == "SUB" else 1)
        return np.clip(y, lo, hi)
    if shapes is None:  # a and b are one invocation's tensors
        kind = _builtin_blocks(op, a0.shape, b0.shape, A.size).reshape(A.shape)
    else:  # a batch of invocations: the loop structure of one, repeated
        one = tuple(np.broadcast_shapes(*shapes))
        kind = np.broadcast_to(_builtin_blocks(op, shapes[0], shapes[1], int(np.prod(one))).reshape(one), A.shape)
    if op == "MUL":
        y = _builtin_mul(A, B, qa, qb, qy, kind)
    else:
        y = _builtin_add(A, B, qa, qb, qy, kind)
    return np.clip(y, lo, hi)
