"""``kernels.quantize``: round real values into a number format.

Semantics (exact; the fast and the generic kernels below implement the same definition and are
tested equal):

**Rounding.** A finite input ``x`` (its exact value: float16/bfloat16/float32/float64/integer
inputs are all exactly representable in float64) is rounded onto the format's value set as if the
exponent range were unbounded above:

* floats: the quantum at ``|x|`` is ``2**(max(e, emin) - man)`` with ``e = floor(log2|x|)``
  (subnormals); without subnormals, values below ``min_normal`` lie on the grid ``{0, min_normal}``;
* integer / fixed point: the quantum is ``2**-frac`` everywhere.

Writing ``|x| = (n + f) * quantum`` with integer ``n`` and ``0 <= f < 1``, the magnitude becomes
``n`` or ``n + 1`` quanta:

* ``nearest``: the closer one; ties (``f = 1/2``) to the even ``n`` (IEEE roundTiesToEven);
* ``nearest_away``: the closer one; ties away from zero (roundTiesToAway);
* ``half_up``: the closer one; ties toward +inf (qtorch's block rounding, "round half up");
* ``toward_zero``: ``n``; ``up``: toward +inf; ``down``: toward -inf;
* ``stochastic``: ``n + 1`` iff ``floor(f * 2**r) + U >= 2**r``, where ``r = rand_bits`` (1..32,
  default 32) and ``U`` is the top ``r`` bits of the element's 32-bit random word (:mod:`kernels.rng`,
  counter = flat C-order index of the element). So ``P(up) = floor(f * 2**r) / 2**r``: the distance
  fraction, truncated to ``r`` bits, as hardware that adds ``r`` random bits below the kept bits does.

**Overflow** (a rounded magnitude above ``max``, or an infinite input):

* ``saturate``: ``+-max``;
* ``wrap`` (integer / fixed only): the integer code is reduced modulo ``2**bits`` into the code range
  (two's complement wrap-around);
* ``ieee``: formats with infinities give ``+-inf``, except that ``toward_zero``, ``up`` for negative
  and ``down`` for positive values give ``+-max`` (IEEE 754 section 7.4); formats with NaN but no
  infinity ("fn", "fnuz", E8M0) give NaN where IEEE would give inf (and +-max under the same
  directed-rounding exception, as gfloat does). An infinite input is not an overflow: it stays inf
  (NaN for "fn"/"fnuz" formats) under ``ieee`` in every rounding mode.

Defaults (``overflow=None``): ``ieee`` for float formats with an inf or a NaN (what ml_dtypes does),
``saturate`` for integer / fixed point and for float formats without specials (float6 / float4,
which ml_dtypes saturates).

**Special inputs.** NaN stays NaN where the format has one; float formats without NaN (float6 /
float4) give the zero of the opposite sign, as ml_dtypes does; integer / fixed formats raise
``ValueError`` (as they do for +-inf with ``wrap``). ``-0.0`` is kept where the format has a
negative zero ("fnuz" and integer / fixed formats give +0.0). E8M0 (unsigned, no zero): zero and
negative values give NaN, positive values below ``2**-127`` give ``2**-127``. Note that ml_dtypes
rounds E8M0 ties away from zero: use ``rounding="nearest_away"`` to match it. (ml_dtypes 0.5/0.6 also
rounds every input ``f * 2**-126`` with ``1/2 < f < 1`` up to 2**-126, where correct rounding gives
2**-127 for ``f < 3/4``: a bug there; hwsim rounds them correctly.)

Ties of ``nearest`` go to the even *code*: for formats without mantissa bits (e3m0, E8M0) that is the
even exponent code.

**Block (MX) formats.** The input is split into blocks of ``block`` consecutive elements along
``axis`` (the last block may be shorter). Each block's shared scale is
``2**(floor(log2(amax)) - emax_elem)`` (OCP Microscaling Formats v1.0, section 6.3), clamped to
E8M0's exponent range [-127, 127]; each element ``x / scale`` is rounded into the element format with
``rounding`` and saturation, and the dequantized ``scale * element`` is returned. A block holding a
NaN or an infinity gives NaN throughout; an all-zero block gives zeros.

**Output dtype.** float32 when the input is not float64 and every value of the format is a float32
(``fmt.fits_float32``), else float64. Difference from ml_dtypes: ml_dtypes casts float64 to float8
through float32 (rounding twice); hwsim rounds float64 inputs once, correctly.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from . import _core as C
from ._core import f32_bits
from ._half import bits_f32
from .formats import FixedFormat, FloatFormat, MXFormat, parse_format
from .rng import flat_streams, flat_word, make_key, rand32

__all__ = ["quantize", "ROUNDING_MODES", "OVERFLOW_MODES"]

ROUNDING_MODES = tuple(C.ROUNDING)
OVERFLOW_MODES = tuple(C.OVERFLOW)


def rounding_code(rounding) -> int:
    if rounding not in C.ROUNDING:
        raise ValueError(f"unknown rounding mode {rounding!r}; valid: {', '.join(C.ROUNDING)}")
    return C.ROUNDING[rounding]


def default_overflow(fmt) -> str:
    """``ieee`` for float formats with an inf or a NaN, else ``saturate``."""
    if isinstance(fmt, FloatFormat) and fmt.has_nan:
        return "ieee"
    return "saturate"


def overflow_code(fmt, overflow) -> int:
    if overflow is None:
        overflow = default_overflow(fmt)
    if overflow not in C.OVERFLOW:
        raise ValueError(f"unknown overflow mode {overflow!r}; valid: {', '.join(C.OVERFLOW)}")
    if overflow == "wrap" and not isinstance(fmt, FixedFormat):
        raise ValueError(f"overflow='wrap' applies to integer / fixed-point formats only, not {fmt.name}; "
                         "valid here: 'saturate', 'ieee'")
    if overflow == "ieee" and isinstance(fmt, FixedFormat):
        raise ValueError(f"overflow='ieee' needs a float format with inf or NaN, not {fmt.name}; "
                         "valid here: 'saturate', 'wrap'")
    return C.OVERFLOW[overflow]


def rand_bits_value(rand_bits) -> int:
    if rand_bits is None:
        return 32
    if isinstance(rand_bits, bool) or not isinstance(rand_bits, (int, np.integer)) or not 1 <= rand_bits <= 32:
        raise ValueError(f"rand_bits must be an int in 1..32 (or None for 32), got {rand_bits!r}")
    return int(rand_bits)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _q_generic(x, out, ip, fp, mode, ovf, key, rbits, base):
    h0, s0, m0, s1, m1 = flat_streams(key, base)
    for i in prange(x.size):
        w = flat_word(np.uint64(base + i), h0, s0, m0, s1, m1) if mode == C.STOCHASTIC else np.uint64(0)
        v, ev = C.round_scalar(x[i], 0.0, ip, fp, mode, ovf, w, rbits)
        out[i] = v


_SIGN64 = np.uint64(1 << 63)
_HALF52 = np.uint64(1 << 51)
_EXP11 = np.uint64(0x7FF)


@njit(cache=True, inline="always")
def rne_lane(t, man, eminb, maxval, negzero):
    """Round-to-nearest-even of a float64 ``t`` into a float format by the magic constant:
    ``r = (t + c) - c`` with ``c = 1.5 * 2**(q + 52)``, ``2**q`` the format's quantum in t's binade
    (``max(exponent of t, emin) - man``): float64's own rounding of ``t + c`` is the rounding, exact
    while ``|t| < 2**(q + 51)``, i.e. for ``1 <= man <= 50``. ``eminb`` is the format's emin plus
    1023; the format has subnormals, a zero and a sign; ``emin - man >= -1021`` and ``emax <= 960``
    keep ``c`` and the half quantum normal float64 numbers for every ``|t| <= 2 * maxval``.

    Returns (value with t's sign, unsigned-zero r, half quantum, ok); ok is False when the result
    overflows ``maxval`` or t is inf/NaN (the caller rounds those with the scalar core)."""
    tb = C.f64_bits(t)
    sg = tb & _SIGN64
    E = np.int64((tb >> np.uint64(52)) & _EXP11)
    ee = max(E, eminb)
    c = C.bits_f64((np.uint64(ee + 52 - man) << np.uint64(52)) | _HALF52)
    r = (t + c) - c
    h = C.bits_f64(np.uint64(ee - man - 1) << np.uint64(52))
    ar = abs(r)
    rb = C.f64_bits(r) | sg
    rb = rb if (negzero or ar != 0.0) else np.uint64(0)
    ok = (ar <= maxval) & (abs(t) <= 2.0 * maxval)
    return C.bits_f64(rb), r, h, ok


def rne_lane_applies(fmt) -> bool:
    """Whether :func:`rne_lane` is exact for float format ``fmt`` (see its docstring)."""
    return (isinstance(fmt, FloatFormat) and fmt.subnormals and fmt.has_zero and fmt.signed
            and 1 <= fmt.man <= 50 and fmt.emin - fmt.man >= -1021 and fmt.emax <= 960)


_Q64_CHUNK = 4096


@njit(cache=True, parallel=True)
def _q_f64_nearest(x, out, ip, fp, ovf, man, eminb, maxval, negzero):
    """Fast path: float64 in, round to nearest even into a float format :func:`rne_lane` handles;
    chunks whose lanes all fit are done branch-free, the others redo their unfit lanes (overflow,
    inf, NaN) with the scalar core."""
    n = x.size
    for c in prange((n + _Q64_CHUNK - 1) // _Q64_CHUNK):
        lo = c * _Q64_CHUNK
        hi = min(n, lo + _Q64_CHUNK)
        bad = False
        for i in range(lo, hi):
            v, r, h, ok = rne_lane(x[i], man, eminb, maxval, negzero)
            out[i] = v
            bad |= not ok
        if bad:
            for i in range(lo, hi):
                v, r, h, ok = rne_lane(x[i], man, eminb, maxval, negzero)
                if not ok:
                    v2, ev = C.round_scalar(x[i], 0.0, ip, fp, C.NEAREST, ovf, np.uint64(0), np.int64(32))
                    out[i] = v2


_SIGN32 = np.uint32(0x80000000)
_ABS32 = np.uint32(0x7FFFFFFF)
_INF32 = np.uint32(0x7F800000)
_QNAN32 = np.uint32(0x7FC00000)
_MANT32, _HID32, _ONES32 = np.uint32(0x7FFFFF), np.uint32(0x800000), np.uint32(0xFFFFFFFF)
_U0, _U1, _U23 = np.uint32(0), np.uint32(1), np.uint32(23)
_I0, _I1, _I31, _I64, _I127, _I150 = (np.int32(0), np.int32(1), np.int32(31), np.int32(64), np.int32(127),
                                      np.int32(150))
_F1, _F2M64 = np.float32(1.0), np.float32(2.0 ** -64)


@njit(cache=True, inline="always")
def _f32_round(u, bias_mode, w, man, emin, maxv, ovbits, infbits, nanbits_flag, negzero, rbits, fbias):
    """One float32 element (bit pattern ``u``) rounded into a float format; returns the result bits.

    Branch-free (selects only), in 32-bit integer lanes, so LLVM vectorises the loops below on AVX2 as
    on AVX-512. The magnitude's 24-bit significand ``sig`` (hidden bit included) has ``s`` bits below
    the format's quantum ``2**qe`` of its binade; it is rounded by adding a mode-dependent ``bias`` and
    dropping the s bits: ``bias`` is ``half - 1 + lsb`` (nearest even), ``half`` (nearest away), 0
    (toward zero), ``2**s - 1`` (away from zero: ``up`` for positives, ``down`` for negatives) or the
    random bits (stochastic); this is the same decision as :func:`kernels._core.round_scalar` makes.
    For s > 31 (a magnitude below 2**-8 quanta) the shift stops at 31, which decides every mode
    but stochastic the same way (nothing rounds up but away-from-zero, which rounds to one quantum);
    stochastic rounding then rounds up when ``floor(sig / 2**(s - r)) + W >= 2**r`` (its statement).
    s >= 23 - man >= 0: the path takes only formats whose values float32 holds (its output is float32).
    """
    sg = u & _SIGN32
    a = np.uint32(u & _ABS32)
    E = np.int32(a >> _U23)
    E1 = np.int32(max(E, _I1))
    sig = a if E == 0 else np.uint32(np.uint32(a & _MANT32) | _HID32)
    qe = np.int32(np.int32(max(np.int32(E1 - _I127), np.int32(emin))) - np.int32(man))
    s = np.int32(qe - np.int32(E1 - _I150))
    sc = np.int32(min(s, _I31)) & 31  # in 0..31: LLVM keeps the variable shifts 32 bits wide
    us = np.uint32(sc)
    mask = np.uint32(np.uint32(_U1 << us) - _U1)
    half = np.uint32(np.uint32(_U1 << us) >> _U1)
    if bias_mode == 0:  # nearest, ties to even (the significand's last kept bit)
        bias = np.uint32(half - _U1 + np.uint32(np.uint32(sig >> us) & _U1)) if sc > 0 else _U0
    elif bias_mode == 7:  # nearest, ties to even, no mantissa bits: the code's last bit is the exponent's
        ip_ = np.uint32(sig >> us)
        odd = _U1 if (ip_ == _U1 and (np.int32(qe + np.int32(fbias)) & 1) == 1) else _U0
        bias = np.uint32(half - _U1 + odd) if sc > 0 else _U0
    elif bias_mode == 1:  # nearest, ties away
        bias = half
    elif bias_mode == 6:  # nearest, ties toward +inf
        bias = half if sg == 0 else (np.uint32(half - _U1) if sc > 0 else _U0)
    elif bias_mode == 2:  # truncate
        bias = _U0
    elif bias_mode == 3:  # away from zero for positives (up)
        bias = mask if sg == 0 else _U0
    elif bias_mode == 4:  # away from zero for negatives (down)
        bias = mask if sg != 0 else _U0
    else:  # stochastic: the top min(r, s) random bits, aligned to the top of the s dropped bits
        r = np.int32(min(np.int64(rbits), np.int64(32)))
        topm = np.uint32(((np.int64(1) << r) - 1) << (32 - r))
        bias = np.uint32(np.uint32(np.uint32(np.uint32(w) & topm) >> _U1) >> np.uint32((31 - sc) & 31))
    n = np.uint32(np.uint32(sig + bias) >> us)
    if bias_mode == 5:
        # s > 31: up when floor(sig / 2**(s - r)) + W >= 2**r, i.e. W > (2**r - 1) - Dh (no overflow: Dh < 2**r)
        W = np.uint32(np.uint32(w) >> np.uint32((32 - r) & 31))  # the top r bits (r in 1..32)
        lim = np.uint32(_ONES32 >> np.uint32((32 - r) & 31))  # 2**r - 1
        Dh = np.uint32(sig >> np.uint32(np.int32(min(np.int32(s - r), _I31)) & 31))
        far = _U1 if W > np.uint32(lim - Dh) else _U0
        n = far if s > _I31 else n
    # n * 2**qe, exact in float32 (n <= 2**24, and the result a value of the format, or above float32's
    # range: inf); quanta below 2**-63 in two exact steps, through 2**64 times the quantum (a normal)
    lo = qe < -63
    p1 = bits_f32(np.uint32(np.uint32(np.int32(qe + (_I64 if lo else _I0)) + _I127) << _U23))
    res = np.float32(np.float32(np.int32(n)) * p1) * (_F2M64 if lo else _F1)
    rb = f32_bits(res)
    rb = ovbits if res > maxv else rb           # overflow: +inf / max / NaN bits (sign added below)
    rb = np.uint32(0) if (rb == 0 and not negzero) else rb | sg
    # special inputs
    nanres = (_QNAN32 | sg) if nanbits_flag else (sg ^ _SIGN32)
    infres = infbits | sg  # an infinite input is exact: inf (ieee), NaN (fn/fnuz) or max (saturate)
    rb = infres if a == _INF32 else rb
    rb = nanres if a > _INF32 else rb
    return rb


# _f32_round's bias modes per rounding code (nearest with no mantissa bits is 7, chosen at the call)
_BIAS_MODE = {C.NEAREST: 0, C.NEAREST_AWAY: 1, C.TOWARD_ZERO: 2, C.UP: 3, C.DOWN: 4, C.STOCHASTIC: 5, C.HALF_UP: 6}


def _make_q_f32_float(bias_mode):
    """The float32 -> float32 kernel for one :func:`_f32_round` bias mode (a closure constant: one
    specialised, vectorised loop per mode, compiled when a call first needs it)."""

    @njit(cache=True, parallel=True)
    def kernel(xb, ob, man, emin, maxval, flags, ovf, key, rbits, base, fbias):
        maxv = np.float32(maxval)
        ov_away, ov_zero, infb, has_nan, negzero = _specials(maxv, flags, ovf)
        h0, s0, m0, s1, m1 = flat_streams(key, base)
        for i in prange(xb.size):
            u = xb[i]
            if bias_mode == 5:
                w = flat_word(np.uint64(base + i), h0, s0, m0, s1, m1)
            else:
                w = np.uint64(0)
            if bias_mode == 3:
                ovb = ov_away if (u & _SIGN32) == 0 else ov_zero
            elif bias_mode == 4:
                ovb = ov_away if (u & _SIGN32) != 0 else ov_zero
            elif bias_mode == 2:
                ovb = ov_zero
            else:
                ovb = ov_away
            ob[i] = _f32_round(u, bias_mode, w, man, emin, maxv, ovb, infb, has_nan, negzero, rbits, fbias)

    return kernel


@njit(cache=True, inline="always")
def _specials(maxv, flags, ovf):
    """(away, zero, inf, has_nan, negzero) of a float format for the float32 kernels: the overflow result
    bits without sign, rounding away from zero (inf / NaN under IEEE overflow, else max) and toward zero
    (max; ``up`` / ``down`` are away for one sign only), the bits an infinite input becomes, whether the
    format has a NaN and a negative zero."""
    has_inf = (flags & C.F_INF) != 0
    has_nan = (flags & C.F_NAN) != 0
    negzero = (flags & C.F_NEGZERO) != 0
    maxbits = C.f32_bits(maxv)
    if ovf == C.IEEE and has_inf:
        return _INF32, maxbits, _INF32, has_nan, negzero
    if ovf == C.IEEE and has_nan:
        return _QNAN32, maxbits, _QNAN32, has_nan, negzero
    return maxbits, maxbits, maxbits, has_nan, negzero


@njit(cache=True, parallel=True)
def _q_f32_nearest(xb, ob, man, emin, emax, maxval, flags, ovf):
    """Round to nearest even, float32 -> float32, into a float format with 1 <= man <= 22 mantissa bits,
    subnormals, emin >= -126 and emax + 23 - man <= 127 (:func:`_q_f32_float`), by float32's own adder.

    For the magnitude ``a`` of an element, let E be its exponent clamped to [emin, emax] and
    M = 2**(E + 23 - man), a float32 normal. Where a < 2**(E + 1), the exact sum ``a + M`` lies in
    [M, M + 2**(E + 1)), within M's binade or at its end 2M (man <= 22), where float32's spacing is
    2**(E - man), the format's quantum at a; so float32's sum rounds a to the nearest multiple of that
    quantum, ties to the even one (M is an even multiple), possibly up to 2M, and subtracting M is exact:
    ``(a + M) - M`` is the format's nearest-even rounding of a, above max where it overflows.
    Where a >= 2**(emax + 1) (E clamped), the difference is at least min(a, M) rounded down to that
    spacing, at least 2**(emax + 1) > max (or inf), an overflow either way.
    Overflow, signs, zeros, inf and NaN then as :func:`_f32_round` (same results, bit for bit: checked
    against it on all 2**32 inputs for every float32-held ml_dtypes float8 / float6 / float4 format,
    fp16, e6m5, e7m9, e3m1 and e2m2). A few vector operations per element instead of the significand
    shifts of :func:`_f32_round`: 2 M fp8_e4m3 values in 0.35 ms against 1.01 ms (two threads, Intel Xeon,
    --avx2), where a depthwise layer's activation operand took as long to round as its MACs."""
    maxv = np.float32(maxval)
    ovb, _, infb, has_nan, negzero = _specials(maxv, flags, ovf)
    elo = np.uint32((emin + 127) << 23)
    ehi = np.uint32((emax + 127) << 23)
    shift = np.uint32((23 - man) << 23)
    for i in prange(xb.size):
        u = xb[i]
        sg = u & _SIGN32
        a = np.uint32(u & _ABS32)
        big = bits_f32(np.uint32(np.uint32(min(max(np.uint32(a & _INF32), elo), ehi)) + shift))
        r = (bits_f32(a) + big) - big
        rb = f32_bits(r)
        rb = ovb if r > maxv else rb
        rb = np.uint32(0) if (rb == 0 and not negzero) else np.uint32(rb | sg)
        nanres = (_QNAN32 | sg) if has_nan else np.uint32(sg ^ _SIGN32)
        rb = np.uint32(infb | sg) if a == _INF32 else rb
        rb = nanres if a > _INF32 else rb
        ob[i] = rb


_Q_F32_FLOAT: dict = {}


def _q_f32_float(xb, ob, man, emin, maxval, flags, mode, ovf, key, rbits, base, fbias):
    """Fast path: float32 in, float32 out, float formats with subnormals, a zero and emin >= -126."""
    bm = _BIAS_MODE[int(mode)]
    emax = math.frexp(maxval)[1] - 1
    if bm == 0 and 1 <= man <= 22 and emax + 23 - man <= 127:
        _q_f32_nearest(xb, ob, man, emin, np.int64(emax), maxval, flags, ovf)
        return
    if bm == 0 and man == 0:
        bm = 7  # ties to even where the code's last bit is the exponent's
    fn = _Q_F32_FLOAT.get(bm)
    if fn is None:
        fn = _Q_F32_FLOAT[bm] = _make_q_f32_float(bm)
    fn(xb, ob, man, emin, maxval, flags, ovf, key, rbits, base, fbias)


@njit(cache=True, inline="always")
def _fixed_code(y, mode, w, rmul, rlim, rsh):
    """The integer code of ``y`` (= x * 2**frac) under ``mode``, before overflow handling."""
    if mode == C.NEAREST:
        return np.rint(y)
    if mode == C.NEAREST_AWAY:
        return np.copysign(np.floor(abs(y) + 0.5), y)
    if mode == C.HALF_UP:
        return np.floor(y + 0.5)
    if mode == C.TOWARD_ZERO:
        return np.trunc(y)
    if mode == C.UP:
        return np.ceil(y)
    if mode == C.DOWN:
        return np.floor(y)
    ay = abs(y)
    fl = np.floor(ay)
    up = np.int64((ay - fl) * rmul) + np.int64(w >> rsh) >= rlim
    return np.copysign(fl + 1.0 if up else fl, y)


@njit(cache=True, parallel=True)
def _q_f32_fixed(x, out, frac, qmin, qmax, bits, mode, ovf, key, rbits, base):
    """Fast path: float32 in, float32 out, integer / fixed formats with at most 24 magnitude bits.

    Same decisions as round_scalar: y = x * 2**frac exactly (float64), rounded to an integer code by
    the mode, then saturated or wrapped."""
    sc = C.pow2(frac)
    isc = C.pow2(-frac)
    rlim = np.int64(1) << np.int64(rbits)
    rmul = float(rlim)
    rsh = np.uint64(32 - rbits)
    span = float(np.int64(1) << np.int64(bits))
    h0, s0, m0, s1, m1 = flat_streams(key, base)
    if ovf == C.WRAP:
        for i in prange(x.size):
            w = flat_word(np.uint64(base + i), h0, s0, m0, s1, m1) if mode == C.STOCHASTIC else np.uint64(0)
            k = _fixed_code(np.float64(x[i]) * sc, mode, w, rmul, rlim, rsh)
            if k > qmax or k < qmin:
                k = (k - qmin) % span + qmin
            out[i] = np.float32(k * isc + 0.0)
    elif mode == C.STOCHASTIC:
        for i in prange(x.size):
            w = flat_word(np.uint64(base + i), h0, s0, m0, s1, m1)
            k = _fixed_code(np.float64(x[i]) * sc, mode, w, rmul, rlim, rsh)
            out[i] = np.float32(min(max(k, qmin), qmax) * isc + 0.0)
    elif mode == C.NEAREST:  # the common case, without the per-element mode dispatch (1.8x faster)
        for i in prange(x.size):
            k = np.rint(np.float64(x[i]) * sc)
            out[i] = np.float32(min(max(k, qmin), qmax) * isc + 0.0)
    else:
        for i in prange(x.size):
            k = _fixed_code(np.float64(x[i]) * sc, mode, np.uint64(0), rmul, rlim, rsh)
            out[i] = np.float32(min(max(k, qmin), qmax) * isc + 0.0)


@njit(cache=True, parallel=True)
def _q_mx(x, out, cidx, block, emax_elem, ip, fp, mode, key, rbits):
    """MX block quantization of each row of ``x`` (rows, L) in blocks of ``block`` along the row."""
    rows, L = x.shape
    nblk = (L + block - 1) // block
    for t in prange(rows * nblk):
        r = t // nblk
        j0 = (t % nblk) * block
        j1 = min(j0 + block, L)
        amax = 0.0
        bad = False
        for j in range(j0, j1):
            v = x[r, j]
            if v != v or abs(v) == np.inf:
                bad = True
            elif abs(v) > amax:
                amax = abs(v)
        if bad:
            for j in range(j0, j1):
                out[r, j] = np.nan
            continue
        if amax == 0.0:
            se = -127  # an all-zero block: any scale; zeros take the element format's sign rules
        else:
            m, ex = math.frexp(amax)
            se = (ex - 1) - emax_elem
        if se < -127:
            se = -127
        if se > 127:
            se = 127
        for j in range(j0, j1):
            w = rand32(key, np.uint64(cidx[r, j])) if mode == C.STOCHASTIC else np.uint64(0)
            v, ev = C.round_scalar(C.scale2(x[r, j], -se), 0.0, ip, fp, mode, C.SATURATE, w, rbits)
            out[r, j] = C.scale2(v, se)


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------

_VALID_INPUT = "float (float16 / 32 / 64, ml_dtypes' narrow floats), integer or bool arrays"


def check_real_array(x, what="input") -> np.ndarray:
    """``np.asarray(x)`` if its dtype holds real numbers (float, integer, bool, or an ml_dtypes float
    type); a ValueError naming the dtype otherwise. Complex values (their imaginary part would be
    dropped), strings, dates and timedeltas, and object arrays are refused rather than converted."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not an array of numbers ({exc}); valid: {_VALID_INPUT}") from None
    k = arr.dtype.kind
    if k in "fiub":
        return arr
    if k == "V" and arr.dtype.names is None and arr.dtype.itemsize <= 2:
        try:  # ml_dtypes' bfloat16 / float8 / float6 / float4 types: exact in float32
            np.zeros(1, arr.dtype).astype(np.float32)
            return arr
        except (TypeError, ValueError):
            pass
    kind = {"c": "complex", "U": "string", "S": "bytes", "M": "datetime64", "m": "timedelta64", "O": "object"}
    raise ValueError(f"{what} has dtype {arr.dtype} ({kind.get(k, 'not a real number type')}); valid: {_VALID_INPUT}")


def _as_float_array(x) -> np.ndarray:
    x = check_real_array(x)
    if x.dtype == np.float32 or x.dtype == np.float64:
        return x
    # 16-bit and narrower types are exact in float32; wider integers in float64 up to 2**53 (quantize
    # rounds larger ones exactly, from a float64 value and an integer residual)
    return x.astype(np.float32 if x.dtype.itemsize <= 2 else np.float64)


def _int_residual(x, xf):
    """For an integer array ``x`` and ``xf = float64(x)`` (rounded to nearest): the exact ``x - xf`` as
    float64 (zero where |x| <= 2**53, at most 2**10 in magnitude elsewhere), or None when every element
    is exact."""
    if x.dtype.kind not in "iu" or x.dtype.itemsize < 8:
        return None
    big = np.abs(xf) > 2.0 ** 53
    if not big.any():
        return None
    res = np.zeros(x.shape, dtype=np.float64)
    res[big] = [float(int(v) - int(h)) for v, h in zip(x[big].tolist(), xf[big].tolist())]
    return res


def quantize(x, fmt, rounding="nearest", overflow=None, seed=None, rand_bits=None, axis=None):
    """Round ``x`` into ``fmt``; returns an array of ``x``'s shape whose values are exactly
    representable in ``fmt``. See the module docstring for the exact semantics.

    Parameters: ``fmt`` a name (:func:`kernels.parse_format`) or format object; ``rounding`` one of
    ``nearest``, ``nearest_away``, ``toward_zero``, ``up``, ``down``, ``stochastic``; ``overflow``
    ``saturate`` / ``wrap`` / ``ieee`` / None (the format's default); ``seed`` (stochastic only: an
    int, or None for fresh entropy); ``rand_bits`` (stochastic: 1..32 random bits, default 32);
    ``axis`` (MX block formats only: the axis along which blocks are formed, default the last; other
    formats have no blocks, and an ``axis`` given for them is an error rather than silently ignored).
    Integer inputs beyond 2**53 (int64 / uint64) are rounded once, exactly (not through float64).
    Inputs must hold real numbers: complex, string, date and object arrays raise ``ValueError``.
    """
    fmt = parse_format(fmt)
    mode = rounding_code(rounding)
    rbits = rand_bits_value(rand_bits)
    key = make_key(seed) if mode == C.STOCHASTIC else np.uint64(0)
    src = check_real_array(x)
    xa = _as_float_array(src)
    if isinstance(fmt, MXFormat):
        if overflow not in (None, "saturate"):
            raise ValueError(f"MX formats saturate their elements (OCP MX v1.0); overflow={overflow!r} is not valid, "
                             "use None or 'saturate'")
        if _int_residual(src, xa) is not None:
            raise ValueError(f"integer input beyond 2**53 into {fmt.name}: MX block quantization takes values float64 "
                             "holds exactly; convert the integers first")
        return _quantize_mx(xa, fmt, mode, key, rbits, -1 if axis is None else axis)
    if axis is not None:
        raise ValueError(f"axis={axis!r} applies to MX block formats only; {fmt.name} has no blocks (leave axis=None)")
    ovf = overflow_code(fmt, overflow)
    if isinstance(fmt, FixedFormat):
        bad = ~np.isfinite(xa) if ovf == C.WRAP else np.isnan(xa)
        if bad.any():
            idx = np.unravel_index(int(np.argmax(bad)), xa.shape) if xa.ndim else ()
            n_nan, n_inf = int(np.isnan(xa).sum()), int(np.isinf(xa).sum())
            what = f"{n_nan} NaN" + (f" and {n_inf} infinite value(s)" if ovf == C.WRAP else "")
            raise ValueError(f"cannot quantize {xa[idx]} (at index {tuple(int(i) for i in idx)}) into {fmt.name}: "
                             f"{what}; integer/fixed formats have no NaN"
                             + (" and cannot wrap infinities (use overflow='saturate' to clamp them)"
                                if ovf == C.WRAP else ""))
    out_dtype = np.float32 if (src.dtype != np.float64 and fmt.fits_float32) else np.float64
    resid = _int_residual(src, xa)
    if resid is not None:  # huge integers: the float64 value plus its exact integer residual, rounded once
        vals, _ = _round_array(xa, resid, fmt, rounding, overflow, key, rbits,
                               np.arange(xa.size, dtype=np.uint64).reshape(xa.shape))
        return vals.astype(out_dtype, copy=False).reshape(xa.shape)  # a 0-d input stays 0-d
    flat = np.ascontiguousarray(xa).reshape(-1)
    out = np.empty(flat.size, dtype=out_dtype)
    if flat.size:
        _run_flat(flat, out, fmt, mode, ovf, key, rbits, 0)
    return out.reshape(xa.shape)


#: Arrays smaller than this (1 M elements) run their parallel kernels on the calling thread only: a parallel launch
#: costs more than the work, and much more when the cores are shared (BLAS threads, other jobs).
SERIAL_BELOW = 1 << 20


class _threads:
    """Temporarily set Numba's thread count for parallel kernels launched from this thread."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = numba.get_num_threads()
        if self.n < self.old:
            numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        numba.set_num_threads(self.old)


def threads_for(size: int) -> "_threads":
    return _threads(1 if size < SERIAL_BELOW else numba.get_num_threads())


def _run_flat(flat, out, fmt, mode, ovf, key, rbits, base):
    """Quantize 1-D ``flat`` into ``out`` (counters start at ``base``), choosing the fastest kernel."""
    if mode == C.STOCHASTIC and flat.size >= 2**32:  # the kernels' counters (kernels.rng.flat_streams)
        raise ValueError(f"stochastic rounding of {flat.size} elements: at most 2**32 - 1 per call; split the array")
    with threads_for(flat.size):
        _run_flat_kernels(flat, out, fmt, mode, ovf, key, rbits, base)


def _run_flat_kernels(flat, out, fmt, mode, ovf, key, rbits, base):
    if flat.dtype == np.float32 and out.dtype == np.float32:
        if (isinstance(fmt, FloatFormat) and fmt.subnormals and fmt.has_zero and fmt.signed
                and fmt.emin >= -126):
            ip, fp = C.encode(fmt)
            _q_f32_float(flat.view(np.uint32), out.view(np.uint32), np.int64(fmt.man), np.int64(fmt.emin),
                         float(fmt.max), np.int64(ip[4]), np.int64(mode), np.int64(ovf), key, np.int64(rbits),
                         np.int64(base), np.int64(fmt.bias))
            return
        if isinstance(fmt, FixedFormat):
            _q_f32_fixed(flat, out, np.int64(fmt.frac), float(fmt.qmin), float(fmt.qmax), np.int64(fmt.bits),
                         np.int64(mode), np.int64(ovf), key, np.int64(rbits), np.int64(base))
            return
    ip, fp = C.encode(fmt)
    with np.errstate(invalid="ignore"):  # signalling NaNs raise FE_INVALID when widened; they stay NaN
        flat = flat.astype(np.float64, copy=False)
    if mode == C.NEAREST and rne_lane_applies(fmt):
        _q_f64_nearest(flat, out, ip, fp, np.int64(ovf), np.int64(fmt.man), np.int64(fmt.emin + 1023),
                       float(fmt.max), bool(fmt.has_negative_zero))
        return
    _q_generic(flat, out, ip, fp, np.int64(mode), np.int64(ovf), key,
               np.int64(rbits), np.int64(base))


def _quantize_mx(xa, fmt: MXFormat, mode, key, rbits, axis):
    if xa.ndim == 0:
        raise ValueError(f"MX format {fmt.name} needs an array with an axis to block along, got a 0-d value")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -xa.ndim <= axis < xa.ndim:
        raise ValueError(f"axis {axis!r} is out of range for an array of shape {xa.shape}")
    ax = int(axis) % xa.ndim
    moved = np.moveaxis(xa.astype(np.float64, copy=False), ax, -1)
    shape = moved.shape
    x2 = np.ascontiguousarray(moved).reshape(-1, shape[-1]) if moved.size else moved.reshape(-1, max(shape[-1], 1))
    cidx = np.ascontiguousarray(np.moveaxis(np.arange(xa.size, dtype=np.int64).reshape(xa.shape), ax, -1))
    cidx = cidx.reshape(x2.shape)
    out = np.empty_like(x2)
    if x2.size:
        ip, fp = C.encode(fmt.elem)
        with threads_for(x2.size):
            _q_mx(x2, out, cidx, np.int64(fmt.block), np.int64(fmt.emax_elem), ip, fp, np.int64(mode), key,
                  np.int64(rbits))
    return np.moveaxis(out.reshape(shape), -1, ax)


@njit(cache=True)
def _round_array_kernel(x, resid, out, events, ip, fp, mode, ovf, key, rbits, counters):
    for i in prange(x.size):
        w = rand32(key, counters[i]) if mode == C.STOCHASTIC else np.uint64(0)
        v, ev = C.round_scalar(x[i], resid[i], ip, fp, mode, ovf, w, rbits)
        out[i] = v
        events[i] = ev


def _round_array(x, resid, fmt, rounding, overflow, key, rand_bits, counters):
    """Round ``x + resid`` (exact sums given as float64 value + residual, e.g. from TwoSum) into a
    float or fixed format, with explicit stochastic ``counters`` (uint64, x's shape).

    Returns ``(values float64, events int8)`` with the event codes of :mod:`kernels._core`. Used by
    :mod:`kernels.reference`; NaN into integer formats gives 0 with ``EV_INVALID`` instead of raising.
    """
    fmt = parse_format(fmt)
    mode = rounding_code(rounding)
    ovf = overflow_code(fmt, overflow)
    x = np.ascontiguousarray(x, dtype=np.float64)
    shape = x.shape
    r = np.ascontiguousarray(np.broadcast_to(np.asarray(resid, dtype=np.float64), shape)).reshape(-1)
    c = np.ascontiguousarray(np.broadcast_to(np.asarray(counters, dtype=np.uint64), shape)).reshape(-1)
    out = np.empty(x.size, dtype=np.float64)
    ev = np.empty(x.size, dtype=np.int64)
    if x.size:
        ip, fp = C.encode(fmt)
        _round_array_kernel(x.reshape(-1), r, out, ev, ip, fp, np.int64(mode), np.int64(ovf), np.uint64(key),
                            np.int64(rand_bits_value(rand_bits)), c)
    return out.reshape(shape), ev.astype(np.int8).reshape(shape)
