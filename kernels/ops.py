"""The MAC-array kernels: ``matmul``, ``conv2d`` and ``depthwise_conv2d`` with per-MAC rounding.

The semantics are those written in :mod:`kernels.mac` (exact products, one rounding per product
and per addition, the accumulation order, the stochastic counter layout); :mod:`kernels.reference`
implements them literally and the tests hold the two equal bit for bit.

Implementation. One parallel kernel serves all three ops (a matmul is the 1x1 convolution of an
(M, 1, 1, K) input; depthwise convolutions gather per-lane operands). Each output row (a row of the
GEMM: one output pixel for convolutions) is computed by one thread with the row function of the
call's :class:`Path`, which :func:`_paths` picks from the spec and the data (the float32 paths of
matmuls and convolutions take tiles of six or four rows, in register-blocked blocks of 16 columns written
as LLVM vector code, so that each weight loaded serves up to 12 vectors of outputs, reading the patches'
window rows in the input where they lie: :func:`_make_tile`, :func:`_patch_rows`, :mod:`kernels._vec`); the
kernel for a path is
compiled the first time a call takes it, so a spec never compiles the paths it does not use (a
cold ``hwsim run`` compiles one row function, not all of them). The N outputs of a row are
independent accumulators processed together,
so the k loop runs sequentially per output (as the semantics require) while the inner loop over
outputs vectorises. Every addition is done in float64 with TwoSum's error term; the common case
(an exact float64 sum, a finite in-range result) is rounded by a branch-free bit routine, and any
lane that is not common (inexact sum, overflow, NaN/inf, float64 subnormal) is redone by the
scalar core :func:`kernels._core.round_scalar`, which is exact with the residual and reports
saturation / wrap / overflow events. Sequential accumulation of exact products (no product rounding)
does the product, the TwoSum and the rounding in one pass per k; for round to nearest even into a
float accumulator the rounding is the magic-constant trick ``(t + c) - c`` (:func:`_lane_nearest`),
float64's own rounding doing the work.

Float32 lanes (twice as many per vector): a float32 accumulator (native float32 arithmetic is
the spec), and binary16 / bfloat16 accumulators rounding to nearest even when every product is a
value of the accumulator format (the fp8 presets): the sum is done in float32 and rounded once more
to the 16-bit format (F16C's conversion pair, or an integer trick for bfloat16), which equals one
rounding of the exact sum by Figueroa's double-rounding theorem (:func:`_half_lane` states the
conditions; the gate checks them on the formats and the data). Products rounded to nearest into such
a 16-bit product format (same as the accumulator's) run there too, where float32 rounds the product
(fp32 operands) with its FMA error term (:func:`kernels._half.product_f16`). Stochastic rounding into a float
or fixed-point accumulator also runs in float32 lanes when the operands' products are exact in float32
(:func:`_lane_stoch32`, gated by :func:`_stoch32_lane`): same random words, same decisions. Into
other float accumulators it runs on the float64 sum's bits (:func:`_lane_stoch64`, gated by
:func:`_stoch64_lane`; also the stochastic stages of :func:`_row_product`), where an inexact sum is
decided from its TwoSum error except next to the decision boundary.

Fast exact path: integer / fixed operands with a fixed-point accumulator whose grid holds every
product, no product rounding, partial sums (with an ``inner`` format) that can neither round nor
overflow there, and either no possible overflow (K * max|a| * max|b| <= accum max)
or ``overflow="wrap"`` (wrapping is order-independent): the exact sums come from BLAS in float32
(when every partial sum stays below 2**24 quanta) or float64 (below 2**53), then wrap.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numba import get_num_threads, njit, prange

from . import _core as C
from . import _memo
from ._core import f32_bits
from ._vec import load_f32, make_block, sparse_block
from ._half import HAVE_F16C, HAVE_FMA, bits_f32, mul_add_f32, product_bf16, product_f16, round_bf16, round_f16
from .formats import FixedFormat, FloatFormat, MXFormat, parse_format
from .mac import MacSpec, as_spec
from .quantize import check_real_array, overflow_code, quantize, rand_bits_value, rne_lane, rne_lane_applies, rounding_code
from .rng import fill_streams, make_key, rand32, step, word

__all__ = ["matmul", "conv2d", "depthwise_conv2d", "MacStats", "conv_output_size", "same_padding"]


@dataclass(frozen=True)
class MacStats:
    """Event counts of one kernel call: roundings that saturated, wrapped (two's complement), or
    overflowed to inf/NaN, and invalid operations (NaN into an integer accumulator)."""

    saturated: int = 0
    wrapped: int = 0
    overflowed: int = 0
    invalid: int = 0


# ------------------------------------------------------------------------------------------------
# per-stage parameters
# ------------------------------------------------------------------------------------------------

def _stage_params(fmt, rounding, overflow, rbits):
    """(ip, fp, mode, ovf, vec) for rounding into ``fmt`` at one stage; ``vec`` says whether the
    branch-free lane routine may be used (else every lane goes through the scalar core)."""
    ip, fp = C.encode(fmt)
    mode = rounding_code(rounding)
    ovf = overflow_code(fmt, overflow)
    if isinstance(fmt, FloatFormat):
        vec = fmt.subnormals and fmt.has_zero and fmt.signed and fmt.emin - fmt.man >= -1022 and fmt.emax <= 1023
    else:
        vec = True
    return ip, fp, np.int64(mode), np.int64(ovf), bool(vec)


_SIGN64 = np.uint64(1 << 63)
_MANT64 = np.uint64((1 << 52) - 1)
_HID64 = np.uint64(1 << 52)
_U0 = np.uint64(0)
_U1 = np.uint64(1)


@njit(cache=True, inline="always")
def _lane_float(v, mode, man, emin, maxval, negzero, w, rbits):
    """Branch-free rounding of a finite float64 ``v`` into a float format (no residual).

    Returns (value, ok); ok is False when the scalar core must redo the lane (NaN/inf input,
    float64 subnormal, overflow)."""
    b = C.f64_bits(v)
    sg = b & _SIGN64
    a = b ^ sg
    E = np.int64(a >> np.uint64(52))
    qe = max(E - 1023, emin) - man
    s = min(qe - (E - 1075), np.int64(63))
    us = np.uint64(s)
    sig = (a & _MANT64) | _HID64
    mask = (_U1 << us) - _U1
    half = (_U1 << us) >> _U1
    if mode == C.NEAREST:
        bias = (half - _U1 + ((sig >> us) & _U1)) if s > 0 else _U0
    elif mode == C.NEAREST_AWAY:
        bias = half
    elif mode == C.HALF_UP:
        bias = half if sg == 0 else ((half - _U1) if s > 0 else _U0)
    elif mode == C.TOWARD_ZERO:
        bias = _U0
    elif mode == C.UP:
        bias = mask if sg == 0 else _U0
    elif mode == C.DOWN:
        bias = mask if sg != 0 else _U0
    else:
        r = np.int64(rbits)
        bias = (w >> np.uint64(32 - s)) if s <= r else ((w >> np.uint64(32 - r)) << np.uint64(s - r))
    n = (sig + bias) >> us
    res = np.float64(n) * C.bits_f64(np.uint64(qe + 1023) << np.uint64(52))
    ok = (E != 0 or a == 0) and E != 2047 and res <= maxval
    res = 0.0 if a == 0 else res
    rb = C.f64_bits(res)
    rb = _U0 if (rb == 0 and not negzero) else rb | sg
    # "edge": the decision could change if v carried a nonzero residual (TwoSum error): v on the grid
    # or on a midpoint (deterministic modes), or no dropped bits below the random bits (stochastic)
    rem = sig & mask
    if mode == C.STOCHASTIC:
        r2 = np.int64(rbits)
        low = ((_U1 << np.uint64(s - r2)) - _U1) if s > r2 else _U0
        edge = (rem & low) == 0
    else:
        edge = rem == 0 or rem == half
    return C.bits_f64(rb), ok, edge


@njit(cache=True, inline="always")
def _lane_fixed(v, mode, sc, isc, qmin, qmax, w, rmul, rlim, rsh):
    """Rounding of ``v`` into a fixed-point format (code = v * 2**frac rounded); ok False on overflow/NaN."""
    y = v * sc
    if mode == C.NEAREST:
        k = np.rint(y)
    elif mode == C.NEAREST_AWAY:
        k = np.copysign(np.floor(abs(y) + 0.5), y)
    elif mode == C.HALF_UP:
        k = np.floor(y + 0.5)
    elif mode == C.TOWARD_ZERO:
        k = np.trunc(y)
    elif mode == C.UP:
        k = np.ceil(y)
    elif mode == C.DOWN:
        k = np.floor(y)
    else:
        ay = abs(y)
        fl = np.floor(ay)
        up = np.int64((ay - fl) * rmul) + np.int64(w >> rsh) >= rlim
        k = np.copysign(fl + 1.0 if up else fl, y)
    ok = k >= qmin and k <= qmax
    return k * isc + 0.0, ok


@njit(cache=True, inline="always")
def _lane_nearest(x, y, t, man, eminb, maxval, negzero):
    """Round-to-nearest-even of ``x + y`` (``t = fl64(x + y)``) into a float format with ``man >= 1``
    mantissa bits, minimum normal biased exponent ``eminb`` (float64 bias) and largest finite ``maxval``.

    Returns (value, TwoSum error of t, ok). ok is False when the scalar core must redo the lane: the
    result overflows ``maxval`` or t is inf/NaN, or t carries a nonzero TwoSum error and sits on a
    midpoint of the format's grid (where the error decides the rounding). Otherwise the value is
    exact: with the error zero, t is the exact sum; with it nonzero, t + err lies within ulp(t)/2 of
    t, and no midpoint (a float64 number, as man <= 50) lies strictly between them, so both round
    to the same grid point (a t on the grid stays there: the neighbouring midpoints are at least a
    quarter quantum away). The rounding is :func:`kernels.quantize.rne_lane` (its conditions on the
    format are checked by the caller with ``rne_lane_applies``)."""
    bb = t - x
    e = (x - (t - bb)) + (y - bb)
    v, r, h, ok = rne_lane(t, man, eminb, maxval, negzero)
    ok = ok & ((e == 0.0) | (abs(t - r) != h))
    return v, e, ok


_F0 = np.float32(0.0)
_SIGN32 = np.uint32(0x80000000)
_ABS32 = np.uint32(0x7FFFFFFF)
_ONES32 = np.uint32(0xFFFFFFFF)
_U1_32 = np.uint32(1)
_I1, _I23, _I24, _I31 = np.int32(1), np.int32(23), np.int32(24), np.int32(31)
_NAN32 = np.float32(np.nan)


#: :func:`_lane_stoch32`'s kinds of format (a constant in each compiled copy of a vector loop):
#: WIDE, a float format whose normals reach down to 2**-14 (fp16, bf16, e5m2), s fixed at c2 and a nonzero
#: sum below the smallest normal handed back (:func:`_stoch32_blocks_wide` reruns its block with FLOAT);
#: FLOAT, any float format, s <= 23 (STOCH32_PRODUCT's stages, and WIDE's fallback); SMALL, any format
#: (fixed point, and the narrower floats, where sums below the smallest quantum are common), s <= 31.
_SR_WIDE, _SR_FLOAT, _SR_SMALL = 0, 1, 2


@njit(cache=True, inline="always")
def _lane_stoch32(x, y, w, L, kind):
    """Stochastic rounding of the exact sum ``x + y`` (float32 values) into a float or fixed-point
    format whose values float32 holds, on the bits of the float32 sum; ``w`` is the 32-bit random word
    and ``L`` the format's constants from :func:`_stoch32_consts`; ``kind`` (:data:`_SR_WIDE` ...), an
    argument apart from ``L``'s last entry so that a caller that passes a constant compiles only its branch.

    The format's rule (:func:`_lane_float`, ``rbits = r`` random bits) rounds the magnitude up exactly
    when ``f >= 1 - W * 2**-r``, where ``f`` in [0, 1) is the dropped fraction of a quantum and ``W =
    w >> (32 - r)`` the top r bits of the word: with s dropped bits D, that is ``D + top_s(w) >= 2**s``
    for s <= r, and ``floor(D / 2**(s - r)) + W >= 2**r``, i.e. ``D + W * 2**(s - r) >= 2**s``, for s > r.
    Both are ``D + R >= 2**s`` with ``R = (w & top_r) >> (32 - s)`` (``top_r`` the word's top r bits).

    Here the sum ``t = fl32(x + y)`` is exact (checked), and the quantum of its binade is ``2**s`` units
    in the last place of t, ``s = max(c2, c1 - E)`` with E t's biased exponent (1 for a subnormal t, whose
    quantum is then the format's smallest: the gate requires emin >= -126):
    ``c2 = 23 - man``, ``c1 = emin - man + 150`` for a float format, ``c2 = 0``, ``c1 = 150 - frac`` for a
    fixed-point one. For s <= 23 the rounded magnitude is ``(|t|_bits + R) & -2**s``: the carry of a
    round-up into the exponent field is the next binade's power of two, as it must be. The kind of format
    (:data:`_SR_WIDE` ...) decides which sums the lane settles:

    * ``_SR_WIDE``: t zero or at least the format's smallest normal (bits ``qbits``), where s = c2: the
      shift and the mask are the same for every lane, which saves the exponent arithmetic;
    * ``_SR_FLOAT``: s <= 23;
    * ``_SR_SMALL``: also 24 <= s <= 31, |t| below the format's smallest quantum ``qlo`` (bits ``qbits``, a
      float32 normal): the result is qlo when ``S + R >= 2**s``, S the significand of t with its hidden
      bit, else 0.

    Overflow: ``|t| <= amax``, the smaller of the format's largest magnitudes of either sign, is checked
    on the sum rather than on the result. amax lies on the grid of every binade at or below its own, so
    rounding such a t stays in range (and NaN / inf fail the check); a sum beyond it, even one that
    rounds back into range, goes to the scalar core.

    Returns (value, ok): ok is False when this kind does not settle the sum, and the caller redoes it (with
    the FLOAT kind after WIDE, else with the scalar core): an inexact float32 sum, a non-finite sum or one
    beyond amax, or a nonzero sum the kind does not settle (above). The kind is a
    constant in the row functions' vector loops (:func:`_row_stoch32`), which then carry no branch on
    it."""
    c1, c2, amaxb, zadd, topm, qbits, _ = L
    t = x + y
    # t is the exact sum iff t - x == y and t - y == x: with |x| >= |y|, t - x is exact (Fast2Sum, Dekker
    # 1971) and equals y only when t is exact; symmetrically for |y| > |x| (an exact t passes both)
    exact = ((t - x) == y) & ((t - y) == x)
    bt = f32_bits(t)
    B = np.int32(bt & _ABS32)
    # shift counts masked to 0..31, which they are: LLVM then keeps the variable shifts 32 bits wide
    if kind == _SR_WIDE:
        R = np.uint32(np.uint32(np.uint32(np.uint32(w) & topm) >> _U1_32) >> np.uint32((31 - c2) & 31))  # < 2**c2
        mag = np.uint32(np.uint32(B + R) & np.uint32(_ONES32 << np.uint32(c2 & 31)))
        ok = exact & (B <= amaxb) & ((B >= qbits) | (B == 0))
    else:
        Ee = np.int32(max(np.int32(B >> _I23), _I1))
        s = np.int32(max(np.int32(c1 - Ee), c2))
        s31 = np.int32(min(s, _I31))
        R = np.uint32(np.uint32(np.uint32(np.uint32(w) & topm) >> _U1_32) >> np.uint32((31 - s31) & 31))  # < 2**s31
        mag = np.uint32(np.uint32(B + R) & np.uint32(_ONES32 << np.uint32(s31 & 31)))
        if kind == _SR_SMALL:
            # 24 <= s <= 31: |t| < qlo, the result 0 or qlo; up when S + R >= 2**s (S = t's significand, its
            # hidden bit included: B less (Ee - 1) * 2**23)
            S = np.uint32(B - np.int32(np.int32(Ee - _I1) << _I23))
            up = np.int32(np.uint32(S + R) >> np.uint32(s31 & 31))
            mag = np.uint32(np.uint32(np.int32(-up) & qbits) if s >= _I24 else mag)
            ok = exact & (B <= amaxb) & ((s <= _I31) | (B == 0))
        else:
            ok = exact & (B <= amaxb) & ((s <= _I23) | (B == 0))
    res = bits_f32(np.uint32(mag | np.uint32(bt & _SIGN32))) + zadd
    return res, ok


@njit(cache=True, inline="always")
def _stoch32_consts(ipA, fpA, rbits):
    """The constants ``(c1, c2, amax_bits, zadd, top_r, qbits, kind)`` of :func:`_lane_stoch32` for
    the accumulator ``(ipA, fpA)`` and ``rbits`` random bits: ``amax`` is the smaller of the largest
    magnitudes, ``zadd`` -0.0 for a format with a negative zero, else +0.0 (adding it turns a -0 into +0
    or keeps it), ``top_r`` keeps the top ``min(rbits, 32)`` bits of a word; ``kind`` is :data:`_SR_WIDE`
    for a float format with emin <= -14 (``qbits`` the bits of its smallest normal), else
    :data:`_SR_SMALL` (``qbits`` the bits of its smallest quantum, ``2**-frac`` or ``2**(emin - man)``)."""
    if ipA[0] == C.K_FLOAT:
        man = ipA[1]
        c1 = np.int32(ipA[2] - man + 150)
        c2 = np.int32(23 - man)
        amax = np.float32(fpA[0])
        zadd = -_F0 if (ipA[4] & C.F_NEGZERO) != 0 else _F0
        kind = _SR_WIDE if ipA[2] <= -14 else _SR_SMALL
        qlo = C.pow2(ipA[2] - man if kind == _SR_SMALL else 0)  # WIDE reads no quantum
    else:
        c1 = np.int32(150 - ipA[3])
        c2 = np.int32(0)
        amax = np.float32(min(ipA[7], -ipA[6]) * C.pow2(-ipA[3]))
        zadd = _F0
        kind = _SR_SMALL
        qlo = C.pow2(-ipA[3])
    rr = min(np.int64(rbits), np.int64(32))
    topm = np.uint32(((np.int64(1) << rr) - 1) << (32 - rr))
    # WIDE: the smallest normal's bits, (emin + 127) * 2**23 = (c1 - c2) * 2**23
    qbits = np.int32(np.int32(c1 - c2) << _I23) if kind == _SR_WIDE else np.int32(f32_bits(np.float32(qlo)))
    return c1, c2, np.int32(f32_bits(amax)), zadd, topm, qbits, kind


_ABS64 = np.uint64((1 << 63) - 1)
_U32_64, _U52 = np.uint64(32), np.uint64(52)
_J1, _J52, _J63 = np.int64(1), np.int64(52), np.int64(63)


@njit(cache=True, inline="always")
def _lane_stoch64(x, y, w, L):
    """Stochastic rounding of the exact sum ``x + y`` (float64 values) into a float format whose values
    float64 holds, on the bits of the float64 sum ``t = fl(x + y)`` and its TwoSum error ``e``; ``w`` is the
    32-bit random word and ``L`` the format's constants from :func:`_stoch64_consts`.

    As :func:`_lane_stoch32` with float64's fields: the quantum of t's binade is ``2**s`` units in t's
    last place, ``s = max(52 - man, emin - man + 1075 - E)`` (E t's biased exponent, at least 1), and
    the format's rule rounds the magnitude of an *exact* t up exactly when ``D + R >= 2**s``: D the s
    dropped bits, ``R = (w & top_r) * 2**32 >> (64 - s)``, the word's top r bits placed below the quantum
    (its top s bits when s <= r). The rounded magnitude is ``(|t|_bits + R) & -2**s``.

    An inexact t (e != 0) is decided the same way unless it is near the decision boundary. The exact
    dropped part is ``D + eps`` units, ``|eps| <= 1/2``, and the rule is ``D + eps + R + phi >= 2**s``
    with ``phi`` in [0, 1) the fraction of the word below R (nonzero only when s < r): with n = D + R,
    n <= 2**s - 2 rounds down and n >= 2**s + 1 up whatever eps and phi are, and D >= 1 keeps the exact
    sum in t's quantum interval and binade. So a lane with e != 0 is settled unless D == 0 or n is
    2**s - 1 or 2**s (about 2 in 2**s of the inexact sums; s >= 29 for a float32 accumulator).

    Overflow: ``|t| <= amax`` (the smaller of the format's largest magnitudes), as in
    :func:`_lane_stoch32`; t == amax with e != 0 has D == 0 and goes to the scalar core.

    Returns (value, ok): ok is False when the scalar core must redo the lane: a non-finite sum or one
    beyond amax, an inexact sum near the boundary (above), or a nonzero sum with more than 52 dropped bits
    (below the format's smallest quantum, or a float64 subnormal)."""
    t = x + y
    bb = t - x
    return _stoch64_sum(t, (x - (t - bb)) + (y - bb), w, L)


@njit(cache=True, inline="always")
def _stoch64_sum(t, e, w, L):
    """:func:`_lane_stoch64` on the TwoSum pair ``(t, e)`` of the sum (``e`` 0.0 for an exact value, such
    as an exact product that :func:`_row_product` rounds into its product format)."""
    c1, c2, amaxb, zadd, topm = L
    bt = C.f64_bits(t)
    B = np.uint64(bt & _ABS64)
    Ee = max(np.int64(B >> _U52), _J1)
    s = max(np.int64(c1 - Ee), c2)
    s63 = np.uint64(min(s, _J63) & _J63)
    # shift counts in 0..63 (masked, which they are), so LLVM keeps the variable shifts 64 bits wide
    R = np.uint64(np.uint64(np.uint64(np.uint64(w & topm) << _U32_64) >> _U1) >> np.uint64(np.uint64(63) - s63))
    q = np.uint64(_U1 << s63)
    low = np.uint64(q - _U1)
    n = np.uint64(np.uint64(B & low) + R)
    mag = np.uint64(np.uint64(B + R) & ~low)
    near = ((B & low) == _U0) | (n == q) | (np.uint64(n + _U1) == q)
    ok = (B <= amaxb) & ((s <= _J52) | (B == _U0)) & ((e == 0.0) | ~near)
    res = C.bits_f64(np.uint64(mag | np.uint64(bt & _SIGN64))) + zadd
    return res, ok


@njit(cache=True, inline="always")
def _stoch64_consts(ipA, fpA, rbits):
    """The constants ``(c1, c2, amax_bits, zadd, top_r)`` of :func:`_lane_stoch64` for the float
    accumulator ``(ipA, fpA)`` and ``rbits`` random bits (as :func:`_stoch32_consts`)."""
    man = ipA[1]
    zadd = -0.0 if (ipA[4] & C.F_NEGZERO) != 0 else 0.0
    rr = min(np.int64(rbits), np.int64(32))
    topm = np.uint32(((np.int64(1) << rr) - 1) << (32 - rr))
    return (np.int64(ipA[2] - man + 1075), np.int64(52 - man), np.uint64(C.f64_bits(fpA[0])), zadd, topm)


@njit(cache=True, inline="always")
def _counter(e, stage, t):
    return (np.uint64(e * 4 + stage) << np.uint64(32)) + np.uint64(t)


@njit(cache=True)
def _round_lanes(v, err, out, n, ip, fp, mode, ovf, vec, key, rbits, e0, stage, t, ok, evc):
    """out[j] = R(v[j] + err[j]) for j < n (err may be all zero), counters (e0 + j, stage, t).

    ``ok`` is a scratch uint8 buffer; ``evc`` (4,) accumulates event counts."""
    kind = ip[0]
    stoch = mode == C.STOCHASTIC
    if vec:
        if kind == C.K_FLOAT:
            man = ip[1]
            emin = ip[2]
            maxval = fp[0]
            negzero = (ip[4] & C.F_NEGZERO) != 0
            if stoch:
                for j in range(n):
                    w = rand32(key, _counter(e0 + j, stage, t))
                    r, good, edge = _lane_float(v[j], mode, man, emin, maxval, negzero, w, rbits)
                    out[j] = r
                    ok[j] = good and (err[j] == 0.0 or not edge)
            else:
                for j in range(n):
                    r, good, edge = _lane_float(v[j], mode, man, emin, maxval, negzero, _U0, rbits)
                    out[j] = r
                    ok[j] = good and (err[j] == 0.0 or not edge)
        else:
            sc = C.pow2(ip[3])
            isc = C.pow2(-ip[3])
            qmin = float(ip[6])
            qmax = float(ip[7])
            rlim = np.int64(1) << np.int64(rbits)
            rmul = float(rlim)
            rsh = np.uint64(32 - rbits)
            if stoch:
                for j in range(n):
                    w = rand32(key, _counter(e0 + j, stage, t))
                    r, good = _lane_fixed(v[j], mode, sc, isc, qmin, qmax, w, rmul, rlim, rsh)
                    out[j] = r
                    ok[j] = good and err[j] == 0.0
            else:
                for j in range(n):
                    r, good = _lane_fixed(v[j], mode, sc, isc, qmin, qmax, _U0, rmul, rlim, rsh)
                    out[j] = r
                    ok[j] = good and err[j] == 0.0
    else:
        for j in range(n):
            ok[j] = False
    for j in range(n):
        if not ok[j]:
            x = v[j]
            res = err[j] if (x - x) == 0.0 else 0.0  # no residual for non-finite sums
            w = rand32(key, _counter(e0 + j, stage, t)) if stoch else _U0
            r, ev = C.round_scalar(x, res, ip, fp, mode, ovf, w, rbits)
            out[j] = r
            if ev != C.EV_NONE:
                evc[ev - 1] += 1


@njit(cache=True, inline="always")
def _two_sum_into(acc, p, s, err, n):
    """s = fl(acc + p), err = exact error (Knuth's TwoSum)."""
    for j in range(n):
        a = acc[j]
        b = p[j]
        t = a + b
        bb = t - a
        s[j] = t
        err[j] = (a - (t - bb)) + (b - bb)


@njit(cache=True, inline="always")
def _zero_sum(t, x, y, down):
    """IEEE 754 6.3: an exact zero sum x + y is -0 under roundTowardNegative unless both are +0."""
    pos_zeros = x == 0.0 and y == 0.0 and math.copysign(1.0, x) > 0 and math.copysign(1.0, y) > 0
    return -0.0 if (down and t == 0.0 and not pos_zeros) else t


@njit(cache=True)
def _add(acc, p, n, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, t, evc):
    """acc = R_A(acc + p) lane-wise (stage 1, addition number t)."""
    _two_sum_into(acc, p, s, err, n)
    if modeA == C.DOWN:
        for j in range(n):
            s[j] = _zero_sum(s[j], acc[j], p[j], True)
    _round_lanes(s, err, acc, n, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, 1, t, ok, evc)


@njit(cache=True, inline="always")
def _two_sum(x, y):
    """(fl(x + y), its exact error) by Knuth's TwoSum (exact for finite, non-overflowing sums)."""
    t = x + y
    bb = t - x
    return t, (x - (t - bb)) + (y - bb)


@njit(cache=True, inline="always")
def _scalar_add(x, y, ip, fp, mode, ovf, w, rbits, evc):
    """R(x + y) (float64 values) by the scalar core from the TwoSum pair (no residual for a non-finite
    sum), counting its event in ``evc``; ``w`` is the addition's random word. A lane routine's fallback."""
    t, e = _two_sum(x, y)
    r, ev = C.round_scalar(t, e if (t - t) == 0.0 else 0.0, ip, fp, mode, ovf, np.uint64(w), rbits)
    if ev != C.EV_NONE:
        evc[ev - 1] += 1
    return r


# ------------------------------------------------------------------------------------------------
# kernel paths: one row function per path, one compiled kernel per (operand layout, path, output stage)
# ------------------------------------------------------------------------------------------------

class Path(enum.IntEnum):
    """The way a MAC call computes its rows (:func:`_paths` chooses one per call, from the spec and the
    data). Each path is its own row function, and the kernel for a path is compiled the first time a
    call takes it (:func:`_kernel`), so a spec never pays the compile time of paths it does not use."""

    #: the per-stage loop: every product and every addition through :func:`_round_lanes`; any order
    #: (sequential, pairwise, chunked), product rounding, event counters
    GENERIC = 0
    #: sequential order, exact products, deterministic float accumulator the branch-free lane handles
    #: (:func:`_lane_float`): product, TwoSum and rounding in one pass per k
    LANE = 1
    #: as LANE, round to nearest even into a format with mantissa bits (:func:`_lane_nearest`)
    NEAREST = 2
    #: sequential order, exact products, stochastic rounding into a float accumulator or any rounding
    #: into a fixed-point one, in float64 lanes
    FIXED_STOCH = 3
    #: binary16 / bfloat16 accumulator, round to nearest even, in float32 lanes (:func:`_half_lane`)
    HALF_F16 = 4
    HALF_BF16 = 5
    #: stochastic rounding into a float or fixed-point accumulator in float32 lanes (:func:`_stoch32_lane`)
    STOCH32 = 6
    #: float32 hardware arithmetic is exactly the spec (fp32 accumulator, round to nearest)
    NATIVE32 = 7
    #: sequential order, each product rounded into a float product format, then added into a float
    #: accumulator; each stage rounds to nearest even or stochastically (:func:`_product_lane`)
    PRODUCT = 8
    #: as PRODUCT with the product and the accumulator both binary16 / bfloat16, both rounding to nearest
    #: even, in float32 lanes (:func:`_half_product_lane`; an FMA fixes products float32 rounds)
    HALF_PRODUCT_F16 = 9
    HALF_PRODUCT_BF16 = 10
    #: stochastic rounding into a float accumulator in float64 lanes on the sum's bits, inexact sums
    #: included (:func:`_stoch64_lane`)
    STOCH64 = 11
    #: as PRODUCT with both stages stochastic, in float32 lanes (:func:`_stoch32_product_lane`)
    STOCH32_PRODUCT = 12
    #: as HALF_PRODUCT_F16 / BF16 with every product exact in float32 (:func:`_half_product_lane`): float32's
    #: product rounded into the 16-bit format directly
    HALF_PRODUCT_EXACT_F16 = 13
    HALF_PRODUCT_EXACT_BF16 = 14


# the paths as plain ints: Numba prunes a branch on ``path == _NEAREST`` (a closure constant against a
# global int) before typing, which it does not do for an enum attribute
(_GENERIC, _LANE, _NEAREST, _FIXED_STOCH, _HALF_F16, _HALF_BF16, _STOCH32, _NATIVE32, _PRODUCT, _HALF_PRODUCT_F16,
 _HALF_PRODUCT_BF16, _STOCH64, _STOCH32_PRODUCT, _HALF_PRODUCT_EXACT_F16, _HALF_PRODUCT_EXACT_BF16) = (
    int(p) for p in Path)
_FLOAT32_LANES = (Path.HALF_F16, Path.HALF_BF16, Path.STOCH32, Path.STOCH32_PRODUCT, Path.NATIVE32,
                  Path.HALF_PRODUCT_F16, Path.HALF_PRODUCT_BF16, Path.HALF_PRODUCT_EXACT_F16,
                  Path.HALF_PRODUCT_EXACT_BF16)


@njit(cache=True, inline="always")
def _products_into(p, k, N, get_a, a_row, a_lanes, B):
    """p[j] = a_k(j) * B[k, j] for j < N, exact in float64 (``get_a`` 0: a_k = a_row[k] for every lane;
    1: a_k(j) = a_lanes[k, j])."""
    if get_a == 0:
        ak = a_row[k]
        for j in range(N):
            p[j] = ak * B[k, j]
    else:
        for j in range(N):
            p[j] = a_lanes[k, j] * B[k, j]


#: output rows per tile of the float32 conv / matmul paths (:func:`_make_tile`), by ``kind``, in register-blocked
#: blocks of 16 columns (:mod:`kernels._vec`): NATIVE32 and HALF_F16 / BF16 6 rows (12 accumulator chains);
#: HALF_PRODUCT_F16 / BF16, whose product fix needs more registers, 4 rows (an earlier fix, bench/mac.py --avx2:
#: 6 rows 3.42 / 3.43 GMAC/s matmul / convs, 4 rows 4.34 / 4.36; rounding to odd, one thread on AVX2,
#: 1002 x 512 x 512: 6 rows no faster); the exact-product kinds 6 (there 5.07-5.14 GMAC/s in four runs, 4 rows
#: 3.94-5.18: as fast at best, steadier)
_TILE_ROWS = (6, 6, 6, 4, 4, 6, 6)


#: the float32 paths with their own tile and depthwise row functions; the position of each is its ``kind``
#: in :func:`_f32_add`, :func:`_make_tile` and :func:`_make_row_dw`
_KINDS = (_NATIVE32, _HALF_F16, _HALF_BF16, _HALF_PRODUCT_F16, _HALF_PRODUCT_BF16, _HALF_PRODUCT_EXACT_F16,
          _HALF_PRODUCT_EXACT_BF16)
_KIND_NAMES = ("native32", "f16", "bf16", "product_f16", "product_bf16", "product_exact_f16", "product_exact_bf16")


def _cached(fn, name, parallel=False):
    """``njit(cache=True)`` of a closure made by a factory, under its own ``name``. Numba names a function's
    on-disk cache (index and data files) after its qualified name and first line, which every closure of
    one factory shares; the index tells them apart by their closure values, but two processes compiling
    two of them at once (the sweep's workers) can each write an index with one entry for the same data
    file, and the later data then serves the other's key: a kernel of another path, silently (seen: a
    warm sweep's fp8 -> fp16 points changed, and NATIVE32 matmuls disagreed with the reference)."""
    fn.__name__ = fn.__qualname__ = name
    return njit(cache=True, parallel=parallel)(fn)


@njit(cache=True, inline="always")
def _f32_add(kind, x, a, b):
    """One step acc = R(acc + a * b) of a float32 path, ``kind`` (a closure constant of the caller, so
    only its branch is compiled) (its position in :data:`_KINDS`):

    * NATIVE32: IEEE float32 multiply and add, never fused (exactly R_fp32(acc + p) for exact products;
      with a float32 product format the multiply rounds first, R32(R32(a * b) + acc));
    * HALF_F16 / HALF_BF16: float32's sum rounded once more to binary16 / bfloat16 (:func:`_half_lane`);
      the products are exact, so one FMA or a multiply and an add (:func:`kernels._half.mul_add_f32`);
    * HALF_PRODUCT_F16 / BF16: the product rounded once into the format
      (:func:`kernels._half.product_f16`), then the sum of two of its values rounded (Figueroa, as
      :func:`_half_product_lane` says);
    * HALF_PRODUCT_EXACT_F16 / BF16: as HALF_PRODUCT_F16 / BF16 for a product exact in float32, which is
      rounded into the format directly."""
    if kind == 0:
        return x + a * b
    if kind == 1:
        return round_f16(mul_add_f32(a, b, x))
    if kind == 2:
        return round_bf16(mul_add_f32(a, b, x))
    if kind == 3:
        return round_f16(x + product_f16(a, b))
    if kind == 4:
        return round_bf16(x + product_bf16(a, b))
    if kind == 5:
        return round_f16(x + round_f16(a * b))
    return round_bf16(x + round_bf16(a * b))


# the register-blocked blocks of the tiles (16 or 8 columns), module globals: a closure variable holding an
# intrinsic would go into the tile's cache key, which then never matches in another process
(_block_native32, _block_f16, _block_bf16, _block_product_f16, _block_product_bf16, _block_product_exact_f16,
 _block_product_exact_bf16) = (make_block(k, _TILE_ROWS[k]) for k in range(len(_KINDS)))


@njit(cache=True, inline="always")
def _block(kind, wide, init, K, prows, pb, ldb, pc, N):
    """The block of ``kind`` (a closure constant of the caller: only that call is compiled), 16 columns where
    ``wide`` is 1 else 8: the rows of A at the addresses in the int64 table at ``prows``, B32 at ``pb`` (leading
    dimension ``ldb``) and acc at ``pc`` (leading dimension N); from acc's sums where ``init`` is 1, else from +0."""
    if kind == 0:
        _block_native32(wide, init, K, prows, pb, ldb, pc, N)
    elif kind == 1:
        _block_f16(wide, init, K, prows, pb, ldb, pc, N)
    elif kind == 2:
        _block_bf16(wide, init, K, prows, pb, ldb, pc, N)
    elif kind == 3:
        _block_product_f16(wide, init, K, prows, pb, ldb, pc, N)
    elif kind == 4:
        _block_product_bf16(wide, init, K, prows, pb, ldb, pc, N)
    elif kind == 5:
        _block_product_exact_f16(wide, init, K, prows, pb, ldb, pc, N)
    else:
        _block_product_exact_bf16(wide, init, K, prows, pb, ldb, pc, N)


def _make_tile(kind):
    """The tile function of a float32 path (``kind`` (its position in :data:`_KINDS`)): acc[p, j] = the sum over
    k = 0, 1, ..., nseg * kseg - 1 of A[p, k] * B32[k, j] for the rows p < ``ntiles * _TILE_ROWS[kind]`` (the
    rows of ``ntiles`` tiles; P and acc may have room for more), each addition by
    :func:`_f32_add`. Row p of A is read in ``nseg`` segments of ``kseg`` values: segment s (k = s * kseg + i,
    i < kseg) from the float32 values at byte address ``P[s, p] + 4 * i``, so the rows can be read where they
    lie (a convolution's input) instead of being gathered first. B32 holds B (K, N) in the column panels of
    :func:`_panels` (its shape (K, N) only for the type) and acc (rows, N) is C-contiguous float32 (the blocks
    read them through raw pointers: the kernel allocates acc); P (nseg, rows) int64, C-contiguous.

    It computes 16 columns at a time, then 8, in register-blocked blocks (:func:`kernels._vec.make_block`, the
    same arithmetic in LLVM vectors), and the last N % 8 columns here. Each column panel goes through the
    tiles one after another (so a panel of a B larger than the caches is read from memory once for all
    of them, :func:`_tiles_per_group`), each tile over the segments in order (a segment goes on from the sums
    the one before left in acc)."""
    T = _TILE_ROWS[kind]

    def tile(nseg, kseg, N, P, B32, acc, ntiles):
        pp, pb, pc = np.int64(P.ctypes.data), np.int64(B32.ctypes.data), np.int64(acc.ctypes.data)
        ks64, n64, K, R = np.int64(kseg), np.int64(N), nseg * kseg, P.shape[1]
        j0 = 0
        while j0 + 16 <= N:
            for g in range(ntiles):
                for sg in range(nseg):
                    _block(kind, np.int64(1), np.int64(sg > 0), ks64, pp + 8 * (R * sg + T * g),
                           pb + 4 * (j0 * K + sg * kseg * 16), np.int64(16), pc + 4 * (T * g * N + j0), n64)
            j0 += 16
        if j0 + 8 <= N:
            for g in range(ntiles):
                for sg in range(nseg):
                    _block(kind, np.int64(0), np.int64(sg > 0), ks64, pp + 8 * (R * sg + T * g),
                           pb + 4 * (j0 * K + sg * kseg * 8), np.int64(8), pc + 4 * (T * g * N + j0), n64)
            j0 += 8
        r = N - j0  # the last panel: B[k, j] at j0 * K + k * r + j - j0
        for p in range(T * ntiles):
            for j in range(j0, N):
                acc[p, j] = 0.0
            for sg in range(nseg):
                base = P[sg, p]
                for i in range(kseg):
                    ap = load_f32(base + 4 * i)
                    k = sg * kseg + i
                    for j in range(j0, N):
                        acc[p, j] = _f32_add(kind, acc[p, j], ap, load_f32(pb + 4 * (j0 * K + k * r + j - j0)))

    return _cached(tile, f"_tile_{_KIND_NAMES[kind]}")


def _make_sparse_tile(kind):
    """The tile function of a float32 path (``kind``) that leaves out the products of A's zeros: the sums of
    :func:`_make_tile`'s, except where one ends at -0, for rows p < ``ntiles * _TILE_ROWS[kind]`` of A given by
    their nonzero values (+0 and -0 both left out): LV[p, i] for i < cnt[p], at k = LI[p, i] (increasing), as
    :func:`_patch_lists` leaves them (the entries past cnt[p] are overwritten). B32 (K, N) in :func:`_panels`'
    column panels, acc as there.

    The sparse blocks (:func:`kernels._vec.sparse_block`) add only those products, in order of k, in
    tiles of :data:`_TILE_ROWS` rows, 16 then 8 columns at a time, the last N % 8 columns here.
    With B finite (the caller's condition: 0 * inf is NaN), a zero's product is +-0, and acc + +-0 is acc
    (the same after the rounding of any kind, fused or not, inf and NaN included) except for acc = -0 and a +0
    product, which gives +0. So the two sums can differ only while both are zero, and then the sparse one is
    -0 and the full one +0; the next nonzero or +0 product makes them equal again. The tile returns True when
    one of its sums ends at -0, and the caller computes the tile again with every product
    (:func:`_group_tiles`). A -0 sum needs a negative sum that rounds to zero (in binary16, one above minus
    half its smallest subnormal): rare. After ReLU most activations are zeros (cifar_cnn, fp8_e4m3_fp16: 69-77 % of the
    inputs of conv2-4 and fc1, 86 % of fc2's)."""
    T = _TILE_ROWS[kind]

    def tile(K, N, B32, acc, ntiles, LI, LV, cnt):
        pb, pc = np.int64(B32.ctypes.data), np.int64(acc.ctypes.data)
        pli, plv, pcn = np.int64(LI.ctypes.data), np.int64(LV.ctypes.data), np.int64(cnt.ctypes.data)
        n64 = np.int64(N)
        ldl = np.int64(LI.shape[1])
        nmax = np.empty(ntiles, dtype=np.int64)
        for g in range(ntiles):  # each group's longest list; the shorter ones padded to it with k = 0 (read, unused)
            n = np.int64(0)
            for p in range(T * g, T * (g + 1)):
                n = max(n, cnt[p])
            nmax[g] = n
            for p in range(T * g, T * (g + 1)):
                for i in range(cnt[p], n):
                    LI[p, i] = 0
                    LV[p, i] = 0.0
        j0 = 0
        while j0 + 8 <= N:  # panels of 16 columns while 16 are left, then one of 8 if 8 are
            w = 16 if j0 + 16 <= N else 8
            for g in range(ntiles):
                sparse_block(kind, T, np.int64(w // 16), nmax[g], pli + 4 * T * g * ldl, plv + 4 * T * g * ldl, ldl,
                             pcn + 8 * T * g, pb + 4 * j0 * K, np.int64(w), pc + 4 * (T * g * N + j0), n64)
            j0 += w
        r = N - j0  # the last panel: B[k, j] at j0 * K + k * r + j - j0
        for p in range(T * ntiles):
            for j in range(j0, N):
                acc[p, j] = 0.0
            for i in range(cnt[p]):
                ap = LV[p, i]
                k = np.int64(LI[p, i])
                for j in range(j0, N):
                    acc[p, j] = _f32_add(kind, acc[p, j], ap, load_f32(pb + 4 * (j0 * K + k * r + j - j0)))
        bits = acc.view(np.uint32)  # -0.0 is 0x80000000
        neg0 = False
        for p in range(T * ntiles):
            for j in range(N):
                neg0 |= bits[p, j] == np.uint32(0x80000000)
        return neg0

    return _cached(tile, f"_tile_sparse_{_KIND_NAMES[kind]}")


def _make_row_dw(kind):
    """The row function of the depthwise layout on a float32 path (``kind`` (its position in :data:`_KINDS`)). It
    computes output pixel (b, oh, ow) from X directly: lane j = c * mult + q accumulates
    X[b, ih, iw, c] * B32[k, j] over the taps k = dh * kw + dw in order, a tap outside the input reading
    ``zrow`` (zeros: the padding's +0, as the other paths' gathered operands), each addition by
    :func:`_f32_add`; the accumulators go to ``acc``."""

    def row(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, N, B32, zrow, acc, acc32):
        _, H, Wd, C = X.shape
        for j in range(N):
            acc32[j] = 0.0
        for dh in range(kh):
            ih = oh * sh + dh - pt
            for dw in range(kw):
                iw = ow * sw + dw - pl
                k = dh * kw + dw
                xrow = X[b, ih, iw] if (ih >= 0 and ih < H and iw >= 0 and iw < Wd) else zrow
                if mult == 1:
                    for j in range(N):
                        acc32[j] = _f32_add(kind, acc32[j], np.float32(xrow[j]), B32[k, j])
                else:
                    for c in range(C):
                        xc = np.float32(xrow[c])
                        for j in range(c * mult, (c + 1) * mult):
                            acc32[j] = _f32_add(kind, acc32[j], xc, B32[k, j])
        for j in range(N):
            acc[j] = acc32[j]

    return _cached(row, f"_row_dw_{_KIND_NAMES[kind]}")


(_tile_native32, _tile_f16, _tile_bf16, _tile_product_f16, _tile_product_bf16, _tile_product_exact_f16,
 _tile_product_exact_bf16) = (_make_tile(k) for k in range(len(_KINDS)))
(_tile_sparse_native32, _tile_sparse_f16, _tile_sparse_bf16, _tile_sparse_product_f16, _tile_sparse_product_bf16,
 _tile_sparse_product_exact_f16, _tile_sparse_product_exact_bf16) = (_make_sparse_tile(k) for k in range(len(_KINDS)))
(_row_dw_native32, _row_dw_f16, _row_dw_bf16, _row_dw_product_f16, _row_dw_product_bf16, _row_dw_product_exact_f16,
 _row_dw_product_exact_bf16) = (_make_row_dw(k) for k in range(len(_KINDS)))


@njit(cache=True, inline="always")
def _stoch32_step(x, y, w, L, kind):
    """One addition in a block: the rounded sum if :func:`_lane_stoch32` settles it, else NaN (which no
    later addition of the block settles either: the lane is then redone from the block's start)."""
    r, g = _lane_stoch32(x, y, w, L, kind)
    return r if g else _NAN32


@njit(cache=True, inline="always")
def _stoch32_finish(x, j, k0, k1, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA, rbits, evc, L, kind):
    """Lane j's additions k0 <= k < k1 one at a time, from its value ``x`` before k0: each in float32 when
    :func:`_lane_stoch32` settles it, else by the scalar core in float64 (the product is exact there), with
    the same word (= rand32(key, _counter(e0 + j, 1, k)))."""
    for k in range(k0, k1):
        ak64 = a_row[k] if get_a == 0 else a_lanes[k, j]
        w = word(S[j], M[j], step(k))
        r, g = _lane_stoch32(x, np.float32(ak64) * B32[k, j], w, L, kind)
        x = r if g else np.float32(_scalar_add(np.float64(x), ak64 * B[k, j], ipA, fpA, modeA, ovfA, w, rbits, evc))
    return x


@njit(cache=True, inline="always")
def _stoch32_redo(src, dst, N, k0, k1, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA, rbits, evc, L,
                  kind):
    """The lanes a pass left at NaN: their additions k0 <= k < k1 again from ``src``, one at a time."""
    for j in range(N):
        if dst[j] != dst[j]:
            dst[j] = _stoch32_finish(src[j], j, k0, k1, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA,
                                     rbits, evc, L, kind)


@njit(cache=True, inline="always")
def _stoch32_pass2(k, N, get_a, a_row, a_lanes, B32, S, M, src, dst, L, kind):
    """Additions k and k + 1 of every lane, from ``src`` into ``dst`` by :func:`_stoch32_step` with the
    constants ``L``; True when some lane was left at NaN."""
    bad = False
    c0, c1 = step(k), step(k + 1)
    if get_a == 0:
        a0, a1 = np.float32(a_row[k]), np.float32(a_row[k + 1])
        for j in range(N):
            s, m = S[j], M[j]  # word(s, m, step(k)) = rand32(key, _counter(e0 + j, 1, k))
            x = _stoch32_step(src[j], a0 * B32[k, j], word(s, m, c0), L, kind)
            x = _stoch32_step(x, a1 * B32[k + 1, j], word(s, m, c1), L, kind)
            dst[j] = x
            bad |= x != x
    else:
        for j in range(N):
            s, m = S[j], M[j]
            x = _stoch32_step(src[j], np.float32(a_lanes[k, j]) * B32[k, j], word(s, m, c0), L, kind)
            x = _stoch32_step(x, np.float32(a_lanes[k + 1, j]) * B32[k + 1, j], word(s, m, c1), L, kind)
            dst[j] = x
            bad |= x != x
    return bad


@njit(cache=True, inline="always")
def _stoch32_pass1(k, N, get_a, a_row, a_lanes, B32, S, M, src, dst, L, kind):
    """As :func:`_stoch32_pass2` for the one addition k (the last of an odd K)."""
    bad = False
    c0 = step(k)
    if get_a == 0:
        a0 = np.float32(a_row[k])
        for j in range(N):
            x = _stoch32_step(src[j], a0 * B32[k, j], word(S[j], M[j], c0), L, kind)
            dst[j] = x
            bad |= x != x
    else:
        for j in range(N):
            x = _stoch32_step(src[j], np.float32(a_lanes[k, j]) * B32[k, j], word(S[j], M[j], c0), L, kind)
            dst[j] = x
            bad |= x != x
    return bad


@njit(cache=True, inline="always")
def _stoch32_last(K, N, get_a, a_row, a_lanes, B, B32, acc2, p, ipA, fpA, modeA, ovfA, rbits, evc, S, M, L, kind):
    """The last addition of an odd K (none for an even K), from row ``p`` of acc2, with the kind ``kind``;
    returns the row of acc2 that holds the sums."""
    if K % 2 == 1:
        src, dst = acc2[p], acc2[1 - p]
        if _stoch32_pass1(K - 1, N, get_a, a_row, a_lanes, B32, S, M, src, dst, L, kind):
            _stoch32_redo(src, dst, N, K - 1, K, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA, rbits,
                          evc, L, kind)
        p = 1 - p
    return p


@njit(cache=True, inline="always")
def _stoch32_blocks(K, N, get_a, a_row, a_lanes, B, B32, acc2, ipA, fpA, modeA, ovfA, rbits, evc, S, M, L):
    """The additions of :func:`_row_stoch32` with the constants ``L`` (kind :data:`_SR_SMALL` or
    :data:`_SR_FLOAT`), in blocks of two and then the last of an odd K alone; returns the row of acc2 that
    holds the sums. The lanes a block leaves at NaN are redone one addition at a time (:func:`_stoch32_redo`)."""
    p = 0
    for k in range(0, K - 1, 2):
        src, dst = acc2[p], acc2[1 - p]
        if _stoch32_pass2(k, N, get_a, a_row, a_lanes, B32, S, M, src, dst, L, _SR_SMALL):
            _stoch32_redo(src, dst, N, k, k + 2, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA, rbits,
                          evc, L, _SR_SMALL)
        p = 1 - p
    return _stoch32_last(K, N, get_a, a_row, a_lanes, B, B32, acc2, p, ipA, fpA, modeA, ovfA, rbits, evc, S, M, L,
                         _SR_SMALL)


#: blocks that :func:`_stoch32_blocks_wide` runs with the FLOAT kind after a WIDE block left a lane at NaN:
#: the first time, and at most (doubling after each such block in a row)
_WIDE_BACKOFF, _WIDE_BACKOFF_MAX = 2, 64


@njit(cache=True, inline="always")
def _stoch32_blocks_wide(K, N, get_a, a_row, a_lanes, B, B32, acc2, ipA, fpA, modeA, ovfA, rbits, evc, S, M, L):
    """:func:`_stoch32_blocks` for constants ``L`` of the kind :data:`_SR_WIDE`. A block of two additions
    runs over every lane with WIDE; one that leaves a lane at NaN (a nonzero sum below the format's
    smallest normal, or anything the FLOAT kind also hands back) runs again over every lane with the
    kind :data:`_SR_FLOAT`, and so do the next :data:`_WIDE_BACKOFF` blocks, twice as many after each
    such block in a row, up to :data:`_WIDE_BACKOFF_MAX` (sums near zero come in runs, at the start of K
    and where a sum changes sign, and some data keeps them there). The last addition of an odd K runs with
    FLOAT. Both kinds settle a lane with the same value, so which one ran never shows in the result; lanes
    FLOAT leaves at NaN are redone one addition at a time (:func:`_stoch32_redo`)."""
    c1, c2, amaxb, zadd, topm, qbits, _ = L
    LG = (c1, c2, amaxb, zadd, topm, qbits, _SR_FLOAT)
    p = 0
    wait, backoff = 0, _WIDE_BACKOFF
    for k in range(0, K - 1, 2):
        src, dst = acc2[p], acc2[1 - p]
        bad = True
        if wait == 0:
            bad = _stoch32_pass2(k, N, get_a, a_row, a_lanes, B32, S, M, src, dst, L, _SR_WIDE)
            if bad:
                wait, backoff = backoff, min(backoff * 2, _WIDE_BACKOFF_MAX)
            else:
                backoff = _WIDE_BACKOFF
        else:
            wait -= 1
        if bad and _stoch32_pass2(k, N, get_a, a_row, a_lanes, B32, S, M, src, dst, LG, _SR_FLOAT):
            _stoch32_redo(src, dst, N, k, k + 2, get_a, a_row, a_lanes, B, B32, S, M, ipA, fpA, modeA, ovfA, rbits,
                          evc, LG, _SR_FLOAT)
        p = 1 - p
    return _stoch32_last(K, N, get_a, a_row, a_lanes, B, B32, acc2, p, ipA, fpA, modeA, ovfA, rbits, evc, S, M, LG,
                         _SR_FLOAT)


@njit(cache=True)
def _row_stoch32(K, N, get_a, a_row, a_lanes, B, B32, e0, acc, acc2, ipA, fpA, modeA, ovfA, key, rbits, evc, sm):
    """STOCH32: stochastic rounding into a float or fixed-point accumulator in float32 lanes (see
    :func:`_stoch32_lane`): the same random word per (output, k) as the float64 lanes. The additions go
    in blocks of two k per lane, kept in registers, from one row of ``acc2`` into the other. A lane
    that :func:`_lane_stoch32` cannot settle at some addition of a block ends it as NaN (the lane never
    settles a NaN: it rejects non-finite sums). For the WIDE kind the block then runs again over the row
    with the FLOAT kind (:func:`_stoch32_blocks_wide`); the lanes still NaN after that pass are redone
    one addition at a time (:func:`_stoch32_finish`), the scalar core in float64 taking the additions the
    float32 lane cannot. An accumulator the scalar core left at NaN or inf (an overflow) therefore takes
    that route in every later block (with WIDE, its row's blocks run on FLOAT and retry WIDE only every
    65th block): correct, and as slow as the float64 lanes."""
    L = _stoch32_consts(ipA, fpA, rbits)
    S, M = sm[0], sm[1]
    fill_streams(key, e0 * 4 + 1, 4, N, S, M)  # the streams of counters _counter(e0 + j, 1, .)
    for j in range(N):
        acc2[0, j] = 0.0
    if L[6] == _SR_WIDE:  # each block loop passes its kinds to the lane as constants
        p = _stoch32_blocks_wide(K, N, get_a, a_row, a_lanes, B, B32, acc2, ipA, fpA, modeA, ovfA, rbits, evc,
                                 S, M, L)
    else:
        p = _stoch32_blocks(K, N, get_a, a_row, a_lanes, B, B32, acc2, ipA, fpA, modeA, ovfA, rbits, evc, S, M, L)
    for j in range(N):
        acc[j] = acc2[p, j]


_NZ32 = np.float32(-0.0)


@njit(cache=True)
def _row_stoch32_product(K, N, get_a, a_row, a_lanes, B, B32, e0, acc, acc2, ipP, fpP, modeP, ovfP, ipA, fpA, modeA,
                         ovfA, key, rbits, evc, sm):
    """STOCH32_PRODUCT: as :func:`_row_product` with both stages stochastic, in float32 lanes (see
    :func:`_stoch32_product_lane`): per k, p = R_P(a * b) by :func:`_lane_stoch32` on the exact float32
    product (added to -0.0, which keeps every value and zero's sign), then acc = R_A(acc + p) likewise,
    with the words of counters (e0 + j, 0, k) and (e0 + j, 1, k). One k per pass over the lanes, from one
    row of ``acc2`` into the other; a lane either stage cannot settle is left NaN and redone after the
    pass from its value before it, stage by stage, the scalar core in float64 taking what the lane
    cannot (and counting the events)."""
    c1, c2, amaxb, zadd, topm, qbits, _ = _stoch32_consts(ipP, fpP, rbits)
    LP = (c1, c2, amaxb, zadd, topm, qbits, _SR_FLOAT)  # float formats only, one copy of the loop: s <= 23
    c1, c2, amaxb, zadd, topm, qbits, _ = _stoch32_consts(ipA, fpA, rbits)
    LA = (c1, c2, amaxb, zadd, topm, qbits, _SR_FLOAT)
    SP, MP, SA, MA = sm[0], sm[1], sm[2], sm[3]
    fill_streams(key, e0 * 4, 4, N, SP, MP)  # _counter(e0 + j, 0, .)
    fill_streams(key, e0 * 4 + 1, 4, N, SA, MA)  # _counter(e0 + j, 1, .)
    src, dst = acc2[0], acc2[1]
    for j in range(N):
        src[j] = 0.0
    for k in range(K):
        c = step(k)
        bad = False
        if get_a == 0:
            a0 = np.float32(a_row[k])
            for j in range(N):
                p, gp = _lane_stoch32(_NZ32, a0 * B32[k, j], word(SP[j], MP[j], c), LP, _SR_FLOAT)
                r, ga = _lane_stoch32(src[j], p, word(SA[j], MA[j], c), LA, _SR_FLOAT)
                x = r if gp & ga else _NAN32
                dst[j] = x
                bad |= x != x
        else:
            for j in range(N):
                p, gp = _lane_stoch32(_NZ32, np.float32(a_lanes[k, j]) * B32[k, j], word(SP[j], MP[j], c), LP,
                                      _SR_FLOAT)
                r, ga = _lane_stoch32(src[j], p, word(SA[j], MA[j], c), LA, _SR_FLOAT)
                x = r if gp & ga else _NAN32
                dst[j] = x
                bad |= x != x
        if bad:
            for j in range(N):
                if dst[j] != dst[j]:
                    y = (a_row[k] if get_a == 0 else a_lanes[k, j]) * B[k, j]
                    w = word(SP[j], MP[j], c)
                    p, gp = _lane_stoch32(_NZ32, np.float32(y), w, LP, _SR_FLOAT)
                    if not gp:  # -0.0 + y is y, exactly
                        p = np.float32(_scalar_add(-0.0, y, ipP, fpP, modeP, ovfP, w, rbits, evc))
                    w = word(SA[j], MA[j], c)
                    r, ga = _lane_stoch32(src[j], p, w, LA, _SR_FLOAT)
                    if not ga:
                        r = np.float32(_scalar_add(np.float64(src[j]), np.float64(p), ipA, fpA, modeA, ovfA, w,
                                                   rbits, evc))
                    dst[j] = r
        src, dst = dst, src
    for j in range(N):
        acc[j] = src[j]


@njit(cache=True)
def _row_stoch64(K, N, get_a, a_row, a_lanes, B, e0, acc, src, dst, ipA, fpA, modeA, ovfA, key, rbits, evc, sm):
    """STOCH64: stochastic rounding into a float accumulator in float64 lanes on the sum's bits
    (:func:`_lane_stoch64`, gated by :func:`_stoch64_lane`), with the same random word per (output, k)
    as every other path. One k per pass over the lanes, from ``src`` into ``dst`` (then swapped); a lane
    the lane routine cannot settle is left NaN and redone after the pass by the scalar core in
    float64 from ``src`` (the product is exact there)."""
    L = _stoch64_consts(ipA, fpA, rbits)
    S, M = sm[0], sm[1]
    fill_streams(key, e0 * 4 + 1, 4, N, S, M)  # the streams of counters _counter(e0 + j, 1, .)
    for j in range(N):
        src[j] = 0.0
    for k in range(K):
        c = step(k)
        bad = False
        if get_a == 0:
            ak = a_row[k]
            for j in range(N):
                r, g = _lane_stoch64(src[j], ak * B[k, j], word(S[j], M[j], c), L)
                dst[j] = r if g else np.nan
                bad |= not g
        else:
            for j in range(N):
                r, g = _lane_stoch64(src[j], a_lanes[k, j] * B[k, j], word(S[j], M[j], c), L)
                dst[j] = r if g else np.nan
                bad |= not g
        if bad:
            for j in range(N):
                if dst[j] != dst[j]:
                    y = (a_row[k] if get_a == 0 else a_lanes[k, j]) * B[k, j]
                    dst[j] = _scalar_add(src[j], y, ipA, fpA, modeA, ovfA, word(S[j], M[j], c), rbits, evc)
        src, dst = dst, src
    for j in range(N):
        acc[j] = src[j]


@njit(cache=True, inline="always")
def _redo(N, s, err, acc, ok, ipA, fpA, modeA, ovfA, key, e0, k, stoch, rbits, evc):
    """The lanes a float64 pass could not settle (``ok`` False): the scalar core rounds the TwoSum
    pair (s, err) exactly (no residual for a non-finite sum) and counts its events."""
    for j in range(N):
        if not ok[j]:
            x = s[j]
            res = err[j] if (x - x) == 0.0 else 0.0
            w = rand32(key, _counter(e0 + j, 1, k)) if stoch else _U0
            r, ev = C.round_scalar(x, res, ipA, fpA, modeA, ovfA, w, rbits)
            acc[j] = r
            if ev != C.EV_NONE:
                evc[ev - 1] += 1


@njit(cache=True)
def _row_nearest(K, N, get_a, a_row, a_lanes, B, acc, s, err, ok, ipA, fpA, modeA, ovfA, rbits, evc):
    """NEAREST: sequential, exact products, round to nearest even into a float accumulator: the
    rounding is Dekker's magic-constant trick, r = (t + c) - c with c = 1.5 * 2**(q + 52) for the
    quantum 2**q of t's binade in the accumulator format (float64's own round-to-nearest-even does the
    rounding; exact while |t| < 2**(q + 51)); see :func:`_lane_nearest`."""
    man = ipA[1]
    eminb = ipA[2] + 1023
    maxval = fpA[0]
    negzero = (ipA[4] & C.F_NEGZERO) != 0
    for j in range(N):
        acc[j] = 0.0
    for k in range(K):
        bad = False
        if get_a == 0:
            ak = a_row[k]
            for j in range(N):
                x = acc[j]
                y = ak * B[k, j]
                t = x + y
                r, e, g = _lane_nearest(x, y, t, man, eminb, maxval, negzero)
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        else:
            for j in range(N):
                x = acc[j]
                y = a_lanes[k, j] * B[k, j]
                t = x + y
                r, e, g = _lane_nearest(x, y, t, man, eminb, maxval, negzero)
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        if bad:
            _redo(N, s, err, acc, ok, ipA, fpA, modeA, ovfA, _U0, 0, k, False, rbits, evc)


@njit(cache=True)
def _row_lane(K, N, get_a, a_row, a_lanes, B, acc, s, err, ok, ipA, fpA, modeA, ovfA, rbits, evc):
    """LANE: sequential, exact products, deterministic rounding into a float accumulator: one pass per
    k does the product, TwoSum and the branch-free lane rounding (:func:`_lane_float`)."""
    man = ipA[1]
    emin = ipA[2]
    maxval = fpA[0]
    negzero = (ipA[4] & C.F_NEGZERO) != 0
    down = modeA == C.DOWN
    for j in range(N):
        acc[j] = 0.0
    for k in range(K):
        bad = False
        if get_a == 0:
            ak = a_row[k]
            for j in range(N):
                x = acc[j]
                y = ak * B[k, j]
                t = _zero_sum(x + y, x, y, down)
                bb = t - x
                e = (x - (t - bb)) + (y - bb)
                r, good, edge = _lane_float(t, modeA, man, emin, maxval, negzero, _U0, rbits)
                s[j] = t
                err[j] = e
                acc[j] = r
                g = good & ((e == 0.0) | (not edge))
                ok[j] = g
                bad |= not g
        else:
            for j in range(N):
                x = acc[j]
                y = a_lanes[k, j] * B[k, j]
                t = _zero_sum(x + y, x, y, down)
                bb = t - x
                e = (x - (t - bb)) + (y - bb)
                r, good, edge = _lane_float(t, modeA, man, emin, maxval, negzero, _U0, rbits)
                s[j] = t
                err[j] = e
                acc[j] = r
                g = good & ((e == 0.0) | (not edge))
                ok[j] = g
                bad |= not g
        if bad:
            _redo(N, s, err, acc, ok, ipA, fpA, modeA, ovfA, _U0, 0, k, False, rbits, evc)


@njit(cache=True)
def _row_fixed_stoch(K, N, get_a, a_row, a_lanes, B, e0, acc, p, s, err, ok, ipA, fpA, modeA, ovfA, key, rbits,
                     evc, sm):
    """FIXED_STOCH: sequential, exact products, stochastic rounding or a fixed-point accumulator: one
    pass per k (product, TwoSum, random word, lane rounding) instead of the generic loop's four."""
    kind = ipA[0]
    man = ipA[1]
    emin = ipA[2]
    maxval = fpA[0]
    negzero = (ipA[4] & C.F_NEGZERO) != 0
    sc = C.pow2(ipA[3])
    isc = C.pow2(-ipA[3])
    qmin = float(ipA[6])
    qmax = float(ipA[7])
    rlim = np.int64(1) << np.int64(rbits)
    rmul = float(rlim)
    rsh = np.uint64(32 - rbits)
    down = modeA == C.DOWN
    stoch = modeA == C.STOCHASTIC
    S, M = sm[0], sm[1]
    if stoch:
        fill_streams(key, e0 * 4 + 1, 4, N, S, M)  # the streams of counters _counter(e0 + j, 1, .)
    for j in range(N):
        acc[j] = 0.0
    for k in range(K):
        bad = False
        c = step(k)
        _products_into(p, k, N, get_a, a_row, a_lanes, B)
        if kind == C.K_FLOAT:  # stochastic (deterministic float accumulators take LANE or NEAREST)
            for j in range(N):
                x = acc[j]
                y = p[j]
                t = x + y
                bb = t - x
                e = (x - (t - bb)) + (y - bb)
                w = np.uint64(word(S[j], M[j], c))  # = rand32(key, _counter(e0 + j, 1, k))
                r, good, edge = _lane_float(t, C.STOCHASTIC, man, emin, maxval, negzero, w, rbits)
                g = good & ((e == 0.0) | (not edge))
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        elif stoch:
            for j in range(N):
                x = acc[j]
                y = p[j]
                t = x + y
                bb = t - x
                e = (x - (t - bb)) + (y - bb)
                w = np.uint64(word(S[j], M[j], c))
                r, g0 = _lane_fixed(t, C.STOCHASTIC, sc, isc, qmin, qmax, w, rmul, rlim, rsh)
                g = g0 & (e == 0.0)
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        else:
            for j in range(N):
                x = acc[j]
                y = p[j]
                t = _zero_sum(x + y, x, y, down)
                bb = t - x
                e = (x - (t - bb)) + (y - bb)
                r, g0 = _lane_fixed(t, modeA, sc, isc, qmin, qmax, _U0, rmul, rlim, rsh)
                g = g0 & (e == 0.0)
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        if bad:
            _redo(N, s, err, acc, ok, ipA, fpA, modeA, ovfA, key, e0, k, stoch, rbits, evc)


@njit(cache=True)
def _row_product(K, N, get_a, a_row, a_lanes, B, e0, acc, p, y, s, err, ok, ipP, fpP, modeP, ovfP, ipA, fpA, modeA,
                 ovfA, key, rbits, evc, sm):
    """PRODUCT: sequential order; per k, the exact product y = a * b (float64 holds it: MacSpec keeps
    the operand precisions within 53 bits) is rounded into the product format P (stage 0), then
    acc = R_A(acc + p) (stage 1), each stage to nearest even (:func:`kernels.quantize.rne_lane`, the
    magic constant) or stochastically (:func:`_stoch64_sum` on the float64 bits, the word of counter
    (e0 + j, stage, k)),
    in one pass over the lanes per stage with the mode fixed outside the loop, so the loops vectorise.
    A lane a pass cannot settle (overflow, NaN / inf, a tie the TwoSum error decides) is redone by
    the scalar core, which also counts the events. The same results as the generic per-stage loop."""
    manP = ipP[1]
    eminP = ipP[2]
    maxP = fpP[0]
    negzP = (ipP[4] & C.F_NEGZERO) != 0
    manA = ipA[1]
    eminA = ipA[2]
    maxA = fpA[0]
    negzA = (ipA[4] & C.F_NEGZERO) != 0
    stochP = modeP == C.STOCHASTIC
    stochA = modeA == C.STOCHASTIC
    LP = _stoch64_consts(ipP, fpP, rbits)
    LA = _stoch64_consts(ipA, fpA, rbits)
    SP, MP, SA, MA = sm[0], sm[1], sm[2], sm[3]
    if stochP:
        fill_streams(key, e0 * 4, 4, N, SP, MP)  # _counter(e0 + j, 0, .)
    if stochA:
        fill_streams(key, e0 * 4 + 1, 4, N, SA, MA)  # _counter(e0 + j, 1, .)
    for j in range(N):
        acc[j] = 0.0
    for k in range(K):
        c = step(k)
        _products_into(y, k, N, get_a, a_row, a_lanes, B)
        bad = False
        if stochP:
            for j in range(N):
                r, good = _stoch64_sum(y[j], 0.0, word(SP[j], MP[j], c), LP)  # rand32(key, _counter(e0 + j, 0, k))
                p[j] = r
                ok[j] = good
                bad |= not good
        else:
            for j in range(N):
                v, r, h, good = rne_lane(y[j], manP, eminP + 1023, maxP, negzP)
                p[j] = v
                ok[j] = good
                bad |= not good
        if bad:
            for j in range(N):
                if not ok[j]:
                    w = rand32(key, _counter(e0 + j, 0, k)) if stochP else _U0
                    r, ev = C.round_scalar(y[j], 0.0, ipP, fpP, modeP, ovfP, w, rbits)
                    p[j] = r
                    if ev != C.EV_NONE:
                        evc[ev - 1] += 1
        bad = False
        if stochA:
            for j in range(N):
                t, e = _two_sum(acc[j], p[j])
                r, g = _stoch64_sum(t, e, word(SA[j], MA[j], c), LA)  # rand32(key, _counter(e0 + j, 1, k))
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        else:
            for j in range(N):
                x = acc[j]
                yy = p[j]
                t = x + yy
                r, e, g = _lane_nearest(x, yy, t, manA, eminA + 1023, maxA, negzA)
                s[j] = t
                err[j] = e
                acc[j] = r
                ok[j] = g
                bad |= not g
        if bad:
            _redo(N, s, err, acc, ok, ipA, fpA, modeA, ovfA, key, e0, k, stochA, rbits, evc)


@njit(cache=True)
def _row_generic(K, N, get_a, a_row, a_lanes, B, e0, wk, ok, occupied, idx,
                 has_prod, ipP, fpP, modeP, ovfP, vecP, ipA, fpA, modeA, ovfA, vecA, ipI, fpI, modeI, ovfI, vecI,
                 order, chunk, key, rbits, evc):
    """GENERIC: the per-stage loop. Each product (rounded into the product format when there is one)
    and each addition goes through :func:`_round_lanes`; ``order`` 0 sequential, 1 pairwise (a stack of
    tree nodes per level, binary-counter insertion), 2 chunked. ``wk`` (nws, N) float64, ``occupied``
    (nlev,) bool and ``idx`` (nlev,) int64 are the caller's scratch buffers; the accumulators end in
    ``wk[1]``."""
    p = wk[0]
    acc = wk[1]
    s = wk[2]
    err = wk[3]
    part = wk[4]
    zero = wk[5]
    for j in range(N):
        acc[j] = 0.0
        zero[j] = 0.0
    nlev = 1
    while (1 << (nlev - 1)) < max(K, 1):
        nlev += 1
    stack = wk[6:6 + nlev]
    for lev in range(nlev):
        occupied[lev] = False
        idx[lev] = 0
    cidx = 0
    for k in range(K):
        _products_into(p, k, N, get_a, a_row, a_lanes, B)
        if has_prod:
            _round_lanes(p, zero, s, N, ipP, fpP, modeP, ovfP, vecP, key, rbits, e0, 0, k, ok, evc)
            for j in range(N):
                p[j] = s[j]
        if order == 0:
            _add(acc, p, N, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, k, evc)
        elif order == 2:
            if k % chunk == 0:
                for j in range(N):
                    part[j] = 0.0
            _add(part, p, N, s, err, ok, ipI, fpI, modeI, ovfI, vecI, key, rbits, e0, k, evc)
            if (k + 1) % chunk == 0 or k == K - 1:
                _add(acc, part, N, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, K + cidx, evc)
                cidx += 1
        else:
            # binary-counter insertion of the leaf p at level 0
            lev = 0
            carry = p
            while occupied[lev]:
                node = stack[lev]
                t = (lev << 24) + idx[lev]
                idx[lev] += 1
                _add(node, carry, N, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, t, evc)
                occupied[lev] = False
                carry = node
                lev += 1
            for j in range(N):
                stack[lev][j] = carry[j]
            occupied[lev] = True
    if order == 1 and K > 0:
        # merge what is left, from the lowest level up; the odd node moves up unchanged
        have = False
        for lev in range(nlev):
            if occupied[lev]:
                if not have:
                    for j in range(N):
                        acc[j] = stack[lev][j]
                    have = True
                else:
                    t = (lev << 24) + idx[lev]
                    idx[lev] += 1
                    node = stack[lev]
                    _add(node, acc, N, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, t, evc)
                    for j in range(N):
                        acc[j] = node[j]
        if K == 1:
            # a single term is rounded once (t = 0): z + x == x exactly for every x, zeros included, with
            # z = -0 (round-to-nearest float64 add) or +0 under ``down`` (see _zero_sum)
            zsign = 0.0 if modeA == C.DOWN else -0.0
            for j in range(N):
                zero[j] = zsign
            _add(zero, acc, N, s, err, ok, ipA, fpA, modeA, ovfA, vecA, key, rbits, e0, 0, evc)
            for j in range(N):
                acc[j] = zero[j]


_BLOCKS = 256  # output-row tasks per call: enough for load balance, few enough to amortise allocations


def _workspace_levels(K):
    nlev = 1
    while (1 << (nlev - 1)) < max(K, 1):
        nlev += 1
    return 6 + nlev


@njit(cache=True, inline="always")
def _scratch(nws, N):
    """The scratch buffers of the row functions for N lanes (wk, row, ok, acc2, occupied, idx, sm; acc2 holds
    two float32 rows, sm the random streams (s, m) of two stages, :func:`kernels.rng.fill_streams`)."""
    return (np.empty((nws, N)), np.empty(N), np.empty(N, dtype=np.uint8), np.empty((2, N), dtype=np.float32),
            np.empty(nws - 6, dtype=np.bool_), np.empty(nws - 6, dtype=np.int64), np.empty((4, N), dtype=np.uint32))


_CONV, _DEPTHWISE = 0, 1


@njit(cache=True, inline="always")
def _patch(X, r, OH, OW, kh, kw, sh, sw, pt, pl, a):
    """a[(dh * kw + dw) * C + c] = X[b, oh * sh + dh - pt, ow * sw + dw - pl, c] for output pixel r = (b, oh, ow)
    of the _CONV layout, zero where the window leaves the input (the zero padding): its GEMM row."""
    _, H, Wd, Cin = X.shape
    b = r // (OH * OW)
    oh = (r // OW) % OH
    ow = r % OW
    for q in range(kh * kw * Cin):
        a[q] = 0.0
    for dh in range(kh):
        ih = oh * sh + dh - pt
        if ih < 0 or ih >= H:
            continue
        for dw in range(kw):
            iw = ow * sw + dw - pl
            if iw < 0 or iw >= Wd:
                continue
            base = (dh * kw + dw) * Cin
            for c in range(Cin):
                a[base + c] = X[b, ih, iw, c]


@njit(cache=True, inline="always")
def _patch_rows(X, r, r_last, OH, OW, kh, kw, sh, sw, pt, pl, P, Z, MP):
    """For the tile of output pixels min(r + q, r_last), q < T (P's second axis), of the _CONV layout on a
    C-contiguous float32 X: P[dh, q] = the byte address of the kw * Cin values of the patch's window row dh
    (its GEMM row's k = dh * kw * Cin, ...): in X itself where that window row lies inside the input, the
    zeros Z where it lies wholly in the padding above or below, else MP[q, dh] filled with it (the padding's
    zeros included), as :func:`_patch` gathers it."""
    _, H, Wd, Cin = X.shape
    px, pz, pm = np.int64(X.ctypes.data), np.int64(Z.ctypes.data), np.int64(MP.ctypes.data)
    seg = kw * Cin
    for q in range(P.shape[1]):
        rr = min(r + q, r_last)
        b = rr // (OH * OW)
        oh = (rr // OW) % OH
        ow = rr % OW
        iw0 = ow * sw - pl
        inside = iw0 >= 0 and iw0 + kw <= Wd
        for dh in range(kh):
            ih = oh * sh + dh - pt
            if ih < 0 or ih >= H:
                P[dh, q] = pz
            elif inside:
                P[dh, q] = px + 4 * (((b * H + ih) * Wd + iw0) * Cin)
            else:
                m = MP[q, dh]
                for i in range(seg):
                    m[i] = 0.0
                for dw in range(kw):
                    iw = iw0 + dw
                    if iw >= 0 and iw < Wd:
                        for c in range(Cin):
                            m[dw * Cin + c] = X[b, ih, iw, c]
                P[dh, q] = pm + 4 * (q * kh + dh) * seg


@njit(cache=True, parallel=True)
def _pixel_lists(X2, XI, XV, XC):
    """Each pixel's (row of X2 (pixels, Cin), float32) nonzero values (+0 and -0 left out) in order of channel:
    XV[q, i] for i < XC[q], at channel XI[q, i] (int32)."""
    npx, Cin = X2.shape
    for q in prange(npx):
        c = 0
        for ch in range(Cin):
            v = X2[q, ch]
            XI[q, c] = ch
            XV[q, c] = v
            c += np.int64(v != 0.0)
        XC[q] = c


@njit(cache=True, inline="always")
def _patch_lists(X, XI, XV, XC, H, Wd, r, r_last, OH, OW, kh, kw, sh, sw, pt, pl, rows, LI, LV, cnt):
    """For the output pixels min(r + q, r_last), q < ``rows``, of the _CONV layout: row q's nonzero patch values
    LV[q, :cnt[q]] at their k = (dh * kw + dw) * Cin + c (LI, increasing), gathered from the per-pixel lists of
    :func:`_pixel_lists` (the padding holds only zeros, left out as the input's are), or for a 1 x 1 window from X
    itself (float32; the pixel lists are then not made: each pixel is read once)."""
    Cin = X.shape[3]
    for q in range(rows):
        rr = min(r + q, r_last)
        b = rr // (OH * OW)
        oh = (rr // OW) % OH
        ow = rr % OW
        c = 0
        if kh == 1 and kw == 1:  # one pixel per patch, used once: its values read from X directly
            ih = oh * sh - pt
            iw = ow * sw - pl
            if ih >= 0 and ih < H and iw >= 0 and iw < Wd:
                for ch in range(Cin):
                    v = X[b, ih, iw, ch]
                    LI[q, c] = ch
                    LV[q, c] = v
                    c += np.int64(v != 0.0)
            cnt[q] = c
            continue
        iw0 = ow * sw - pl  # the window's columns dw in [dw_lo, dw_hi) lie inside the input
        dw_lo, dw_hi = max(0, -iw0), min(kw, Wd - iw0)
        for dh in range(kh):
            ih = oh * sh + dh - pt
            if ih < 0 or ih >= H:
                continue
            for dw in range(dw_lo, dw_hi):
                px = (b * H + ih) * Wd + iw0 + dw
                k0 = (dh * kw + dw) * Cin
                m = XC[px]
                for i in range(m):
                    LI[q, c + i] = k0 + XI[px, i]
                    LV[q, c + i] = XV[px, i]
                c += m
        cnt[q] = c


@njit(cache=True, inline="always")
def _group_tiles(path, X, r, r_hi, OH, OW, kh, kw, sh, sw, pt, pl, Ptab, Z, MP, NC, W32, acc4, G, T, sparse, XI, XV,
                 XC, LI, LV, cnt):
    """The rows r, r + 1, ... of the next group of up to ``G`` tiles of ``T`` rows, before ``r_hi``, into acc4's
    first rows, by the tile of ``path`` (a closure constant of the caller: only that call is compiled) on the
    patches :func:`_patch_rows` finds (a group past r_hi repeats its last row); returns how many rows are valid.
    Where ``sparse``, by the sparse tile first (:func:`_make_sparse_tile`) on the rows' nonzero values
    (:func:`_patch_lists` from X's per-pixel lists XI, XV, XC of :func:`_pixel_lists`; scratch LI, LV, cnt), and
    again by the tile where that one ends a sum at -0."""
    Cin = X.shape[3]
    K = kh * kw * Cin
    nt = min(G, -(-(r_hi - r) // T))
    dense = True
    if sparse:
        _patch_lists(X, XI, XV, XC, X.shape[1], X.shape[2], r, r_hi - 1, OH, OW, kh, kw, sh, sw, pt, pl, nt * T, LI,
                     LV, cnt)
        if path == _NATIVE32:
            dense = _tile_sparse_native32(K, NC, W32, acc4, nt, LI, LV, cnt)
        elif path == _HALF_F16:
            dense = _tile_sparse_f16(K, NC, W32, acc4, nt, LI, LV, cnt)
        elif path == _HALF_BF16:
            dense = _tile_sparse_bf16(K, NC, W32, acc4, nt, LI, LV, cnt)
        elif path == _HALF_PRODUCT_F16:
            dense = _tile_sparse_product_f16(K, NC, W32, acc4, nt, LI, LV, cnt)
        elif path == _HALF_PRODUCT_BF16:
            dense = _tile_sparse_product_bf16(K, NC, W32, acc4, nt, LI, LV, cnt)
        elif path == _HALF_PRODUCT_EXACT_F16:
            dense = _tile_sparse_product_exact_f16(K, NC, W32, acc4, nt, LI, LV, cnt)
        else:
            dense = _tile_sparse_product_exact_bf16(K, NC, W32, acc4, nt, LI, LV, cnt)
    if dense:
        _patch_rows(X, r, r_hi - 1, OH, OW, kh, kw, sh, sw, pt, pl, Ptab, Z, MP)
        if path == _NATIVE32:
            _tile_native32(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        elif path == _HALF_F16:
            _tile_f16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        elif path == _HALF_BF16:
            _tile_bf16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        elif path == _HALF_PRODUCT_F16:
            _tile_product_f16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        elif path == _HALF_PRODUCT_BF16:
            _tile_product_bf16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        elif path == _HALF_PRODUCT_EXACT_F16:
            _tile_product_exact_f16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
        else:
            _tile_product_exact_bf16(kh, kw * Cin, NC, Ptab, W32, acc4, nt)
    return min(nt * T, r_hi - r)


def _make_kernel(layout, path, has_out):
    """The parallel kernel for one (operand layout, path, output stage); every argument is a closure
    constant, so Numba prunes the other branches before typing and compiles only this path's row
    function (and the output rounding only when ``has_out``).

    ``layout`` _CONV: X (n, H, W, C) float64 (float32 on the float32 paths), W2 (kh*kw*C, NC); output
    pixel r = (b, oh, ow) is the GEMM row of its zero-padded patch, k = (dh * kw + dw) * C + c (a matmul is the 1x1 convolution of an
    (M, 1, 1, K) input). _DEPTHWISE: W2 (kh*kw, C*mult), lane j = c*mult + q reads channel c = j // mult,
    k = dh * kw + dw. out (n, OH, OW, NC). Output (r, j) has stochastic counter element ``offset + r * NC
    + j``; each task handles a block of rows with scratch buffers allocated once per block. The float32
    paths (:data:`_KINDS`) compute the _CONV layout's rows in tiles of _TILE_ROWS (:func:`_make_tile`), each
    output still accumulating alone, in order k = 0, 1, ..., the patches read one window row after another
    where :func:`_patch_rows` finds them, up to ``group`` tiles at a time (:func:`_tiles_per_group`; the
    tasks then hold about ``group`` tiles each, or fewer where that gives each of the ``nthr`` threads
    one: scheduling only, every output is computed the same way); W32 holds the weights in
    :func:`_panels`' column panels. Where ``sparse`` is 1, on the sparse tiles (:func:`_make_sparse_tile`,
    the same sums) from X's per-pixel lists of nonzero values XI, XV, XC (:func:`_pixel_lists`; dummies where
    the window is 1 x 1 or ``sparse`` is 0). Without an output stage a group of tiles goes from its scratch
    rows into ``out`` directly (one copy per row, no other work per output row). In the
    _DEPTHWISE layout they read X directly (:func:`_make_row_dw`) instead of gathering lanes.
    """
    tiled = int(layout == _CONV and path in _KINDS)
    T = _TILE_ROWS[_KINDS.index(path)] if tiled else 1

    def kernel(X, W2, W32, mult, out, kh, kw, sh, sw, pt, pl, offset, P, key, rbits, order, chunk, evc_rows, nws,
               group, nthr, sparse, XI, XV, XC):
        n, H, Wd, Cin = X.shape
        _, OH, OW, NC = out.shape
        (has_prod, ipP, fpP, modeP, ovfP, vecP, ipA, fpA, modeA, ovfA, vecA,
         has_outp, ipO, fpO, modeO, ovfO, vecO, ipI, fpI, modeI, ovfI, vecI) = P
        K = kh * kw
        if layout == _CONV:
            K = K * Cin
        npix = n * OH * OW
        # the tiled paths hand out whole tiles (only the last tile of all may be cut short: it computes its last
        # row again), the others rows
        units = -(-npix // T)
        per = T
        nblk = min(units, _BLOCKS)
        G = group if tiled == 1 else 1
        if G > 1:  # tasks of about G tiles, or fewer where that gives each thread one
            nblk = min(nblk, max(-(-units // G), min(units, nthr)))
        # the operand a layout does not use is a dummy, shaped from run-time values: Numba's branch
        # pruning leaves constant True / False conditions here, and a constant (1, 1) shape was then
        # conflated with (True, True) in the LLVM IR
        dummy_row = np.zeros(kh)
        dummy_lanes = np.zeros((kh, kw))
        for bi in prange(nblk):
            wk, row, ok, acc2, occupied, idx, sm = _scratch(nws, NC)
            acc32 = acc2[0]
            if layout == _CONV:
                a_row = np.empty(K)
                lanes = dummy_lanes
            else:
                a_row = dummy_row
                lanes = np.empty((K, NC))
            acc = wk[1]
            zrow = np.zeros_like(X[0, 0, 0])  # X's dtype
            if tiled == 1:  # the tile's row addresses per window row, zeros, and border window rows
                Ptab = np.empty((kh, G * T), dtype=np.int64)
                Z = np.zeros(kw * Cin, dtype=np.float32)
                MP = np.empty((G * T, kh, kw * Cin), dtype=np.float32)
                acc4 = np.empty((G * T, NC), dtype=np.float32)
                ns = G * T if sparse else 1  # the sparse tiles' lists
                LI = np.empty((ns, K if sparse else 1), dtype=np.int32)
                LV = np.empty((ns, K if sparse else 1), dtype=np.float32)
                cnt = np.empty(ns, dtype=np.int64)
            else:
                Ptab = np.empty((1, 1), dtype=np.int64)
                Z = np.empty(1, dtype=np.float32)
                MP = np.empty((1, 1, 1), dtype=np.float32)
                acc4 = np.empty((1, 1), dtype=np.float32)
                LI = np.zeros((1, 1), dtype=np.int32)
                LV = np.empty((1, 1), dtype=np.float32)
                cnt = np.empty(1, dtype=np.int64)
            r_lo = bi * units // nblk * per
            r_hi = min((bi + 1) * units // nblk * per, npix)
            if tiled == 1 and has_out == 0:  # each group of tiles straight into out (a row copy per output row)
                out2 = out.reshape((npix, NC))
                for r in range(r_lo, r_hi, G * T):
                    m = _group_tiles(path, X, r, r_hi, OH, OW, kh, kw, sh, sw, pt, pl, Ptab, Z, MP, NC, W32, acc4,
                                     G, T, sparse, XI, XV, XC, LI, LV, cnt)
                    for i in range(m):
                        for j in range(NC):
                            out2[r + i, j] = acc4[i, j]
                continue
            for r in range(r_lo, r_hi):
                b = r // (OH * OW)
                oh = (r // OW) % OH
                ow = r % OW
                e0 = offset + r * NC
                evc = evc_rows[r]
                if tiled == 1:
                    t = (r - r_lo) % (G * T)
                    if t == 0:  # the group's patches (the last one repeated past the block's end), then its rows
                        _group_tiles(path, X, r, r_hi, OH, OW, kh, kw, sh, sw, pt, pl, Ptab, Z, MP, NC, W32, acc4,
                                     G, T, sparse, XI, XV, XC, LI, LV, cnt)
                    for j in range(NC):
                        acc[j] = acc4[t, j]
                elif layout == _CONV:
                    _patch(X, r, OH, OW, kh, kw, sh, sw, pt, pl, a_row)
                elif path == _NATIVE32:
                    _row_dw_native32(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_F16:
                    _row_dw_f16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_BF16:
                    _row_dw_bf16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_PRODUCT_F16:
                    _row_dw_product_f16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_PRODUCT_BF16:
                    _row_dw_product_bf16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_PRODUCT_EXACT_F16:
                    _row_dw_product_exact_f16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                elif path == _HALF_PRODUCT_EXACT_BF16:
                    _row_dw_product_exact_bf16(X, b, oh, ow, kh, kw, sh, sw, pt, pl, mult, NC, W32, zrow, acc, acc32)
                else:
                    for k in range(K):
                        for j in range(NC):
                            lanes[k, j] = 0.0
                    for dh in range(kh):
                        ih = oh * sh + dh - pt
                        if ih < 0 or ih >= H:
                            continue
                        for dw in range(kw):
                            iw = ow * sw + dw - pl
                            if iw < 0 or iw >= Wd:
                                continue
                            k = dh * kw + dw
                            for j in range(NC):
                                lanes[k, j] = X[b, ih, iw, j // mult]
                if tiled == 1 or path == _NATIVE32 or path == _HALF_F16 or path == _HALF_BF16 \
                        or path == _HALF_PRODUCT_F16 or path == _HALF_PRODUCT_BF16 or path == _HALF_PRODUCT_EXACT_F16 \
                        or path == _HALF_PRODUCT_EXACT_BF16:
                    pass
                elif path == _STOCH32:
                    _row_stoch32(K, NC, layout, a_row, lanes, W2, W32, e0, acc, acc2, ipA, fpA, modeA, ovfA,
                                 key, rbits, evc, sm)
                elif path == _STOCH32_PRODUCT:
                    _row_stoch32_product(K, NC, layout, a_row, lanes, W2, W32, e0, acc, acc2, ipP, fpP, modeP, ovfP,
                                         ipA, fpA, modeA, ovfA, key, rbits, evc, sm)
                elif path == _STOCH64:
                    _row_stoch64(K, NC, layout, a_row, lanes, W2, e0, acc, wk[2], wk[3], ipA, fpA, modeA, ovfA, key,
                                 rbits, evc, sm)
                elif path == _NEAREST:
                    _row_nearest(K, NC, layout, a_row, lanes, W2, acc, wk[2], wk[3], ok, ipA, fpA, modeA, ovfA,
                                 rbits, evc)
                elif path == _LANE:
                    _row_lane(K, NC, layout, a_row, lanes, W2, acc, wk[2], wk[3], ok, ipA, fpA, modeA, ovfA, rbits,
                              evc)
                elif path == _PRODUCT:
                    _row_product(K, NC, layout, a_row, lanes, W2, e0, acc, wk[0], wk[4], wk[2], wk[3], ok, ipP, fpP,
                                 modeP, ovfP, ipA, fpA, modeA, ovfA, key, rbits, evc, sm)
                elif path == _FIXED_STOCH:
                    _row_fixed_stoch(K, NC, layout, a_row, lanes, W2, e0, acc, wk[0], wk[2], wk[3], ok, ipA, fpA,
                                     modeA, ovfA, key, rbits, evc, sm)
                else:
                    _row_generic(K, NC, layout, a_row, lanes, W2, e0, wk, ok, occupied, idx, has_prod, ipP, fpP,
                                 modeP, ovfP, vecP, ipA, fpA, modeA, ovfA, vecA, ipI, fpI, modeI, ovfI, vecI, order,
                                 chunk, key, rbits, evc)
                if has_out == 1:
                    zero = wk[5]
                    for j in range(NC):
                        zero[j] = 0.0
                    _round_lanes(acc, zero, row, NC, ipO, fpO, modeO, ovfO, vecO, key, rbits, e0, 2, 0, ok, evc)
                    for j in range(NC):
                        out[b, oh, ow, j] = row[j]
                else:
                    for j in range(NC):
                        out[b, oh, ow, j] = acc[j]

    name = f"_kernel_{('conv', 'depthwise')[layout]}_{Path(path).name.lower()}_{has_out}"
    return _cached(kernel, name, parallel=True)


_KERNELS: dict = {}

#: float32 weight bytes above which the tiles share B's column panels in groups of :data:`_GROUP` tiles
#: (:func:`_tiles_per_group`)
_GROUP_BYTES, _GROUP = 1 << 19, 8


def _tiles_per_group(size):
    """Tiles per group of a float32-path call whose B has ``size`` values: 1 while B (float32) fits the L2
    cache with room to spare, so each tile reads it from there; else :data:`_GROUP`, each column panel then
    going through the group's tiles in turn (:func:`_make_tile`), read from memory once per group instead
    of once per tile. A 64 x 2304 x 512 matmul (cifar_cnn's fc1 on the network runner's slices of 64 images;
    its weights are 4.7 MB), three runs each, best of 7 calls, two threads, --avx2 on an Intel Xeon (2 MB of
    L2 per core): fp8_e4m3_fp16 9.2-11.1 GMAC/s in tiles, 13.5-14.2 in groups; bf16_fp32 22.0-22.8 and 24.2-25.0;
    500 rows fp8_e4m3_fp16 16.1-16.5 and 21.6-22.3."""
    return _GROUP if 4 * size > _GROUP_BYTES else 1


#: the sparse tiles (:func:`_make_sparse_tile`) take a call whose A has at least a fraction
#: ``_SPARSE_MIN_ZEROS + _SPARSE_PER_COLUMN / N`` of zeros (N output columns) in a sample of
#: :data:`_SPARSE_SAMPLE` values at hashed positions. Speed only: both tiles give the same sums. Their lists cost
#: about the same per row whatever N, so fewer columns need more zeros. Measured (fp8_e4m3_fp16, two threads,
#: --avx2, AMD EPYC Zen 4; random zeros; sparse / dense time): 3 x 3 x 32 -> 32 1.00 at 50 % zeros, 0.75 at 75 %;
#: -> 64 0.75 at 50 %; 3 x 3 x 32 -> 16 1.02 at 75 %; 1 x 1 x 144 -> 48 0.85 at 50 %; 1 x 1 x 96 -> 24 1.03 at 50 %,
#: 0.83 at 75 %; 2304 -> 512 0.61 at 50 %; with no zeros, cifar_cnn's conv2-4 and fc1 shapes 1.06-1.39.
_SPARSE_MIN_ZEROS, _SPARSE_PER_COLUMN = 0.3, 8.0
_SPARSE_SAMPLE = 4096


def _mostly_zeros(X, N):
    """Whether A (the operand X of a call with N output columns) has zeros enough for the sparse tiles
    (:data:`_SPARSE_MIN_ZEROS`)."""
    flat = X.reshape(-1)
    if flat.size == 0 or N == 0:
        return False
    # positions by a multiplicative hash: a plain stride is often a multiple of the channel count (conv2's
    # input: 2**21 values in rows of 32) and would read one channel only
    h = np.arange(_SPARSE_SAMPLE, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps modulo 2**64
    sample = flat[(h >> np.uint64(16)) % np.uint64(flat.size)]
    return np.count_nonzero(sample == 0) >= (_SPARSE_MIN_ZEROS + _SPARSE_PER_COLUMN / N) * sample.size


def _kernel(layout, path, has_out):
    """The compiled kernel for (layout, path, has_out), made on first use (and then cached on disk by
    Numba, keyed by the closure constants)."""
    key = (int(layout), int(path), int(bool(has_out)))
    fn = _KERNELS.get(key)
    if fn is None:
        fn = _KERNELS[key] = _make_kernel(*key)
    return fn


def _run_kernel(layout, X, W, path, spec, out, geometry, mult, offset, seed, K, evc):
    """Launch the kernel of ``path`` on prepared operands (float32 or float64 values of their formats; W the
    2-D weights W2 of :func:`_make_kernel`); ``geometry`` (kh, kw, sh, sw, pt, pl)."""
    P, rbits = _params(spec)
    kh, kw, sh, sw, pt, pl = geometry
    # the float32 paths read X as float32 (exact: their gates admit only operands float32 holds), half the bytes;
    # the tiles and depthwise rows of _KINDS read only the float32 weights; STOCH32 / STOCH32_PRODUCT read both
    # (the float64 ones where the scalar core redoes a lane), the other paths the float64 ones
    xdt = np.float32 if path in _FLOAT32_LANES else np.float64
    W64 = _NO_W64 if path in _KINDS else _memo.derived(W, "float64", _float64)
    X = np.ascontiguousarray(X, dtype=xdt)
    # the sparse tiles leave out zeros' products: +-0 only with finite weights (NATIVE32's gate for float32
    # products does not look at the data: an fp32 weight may be inf or NaN, and 0 * inf is NaN)
    sparse = (layout == _CONV and path in _KINDS and _mostly_zeros(X, out.shape[3])
              and math.isfinite(_abs_range(W)[1]))
    if sparse and geometry[0] * geometry[1] > 1:  # each input pixel's nonzero values, for the patches' lists
        X2 = X.reshape(-1, X.shape[3])
        XI, XV, XC = np.empty(X2.shape, np.int32), np.empty(X2.shape, np.float32), np.empty(len(X2), np.int64)
        _pixel_lists(X2, XI, XV, XC)
    else:
        XI, XV, XC = np.zeros((1, 1), np.int32), np.empty((1, 1), np.float32), np.zeros(1, np.int64)
    _kernel(layout, path, P[11])(X, W64, _lanes32(W, path, layout), np.int64(mult),
                                 out, np.int64(kh), np.int64(kw), np.int64(sh), np.int64(sw), np.int64(pt),
                                 np.int64(pl), np.int64(offset), P, _key(spec, seed), rbits,
                                 np.int64(_ORDER[spec.order]), np.int64(spec.chunk or 1), evc, _workspace_levels(K),
                                 np.int64(_tiles_per_group(W.shape[0] * W.shape[1])), np.int64(get_num_threads()),
                                 np.int64(sparse), XI, XV, XC)


@njit(cache=True, parallel=True)
def _add_rounded_kernel(acc, b, out, ip, fp, mode, ovf, key, rbits, e0, fast, slane, man, emin, maxval, negzero):
    """``fast``: round to nearest even by :func:`kernels.quantize.rne_lane`; ``slane``: stochastic
    rounding by the branch-free lane routine; either way a lane whose result the TwoSum residual could
    change, or that overflows / is not finite, is redone by the scalar core (as every lane is when
    neither applies)."""
    nb = b.size
    stoch = mode == C.STOCHASTIC
    eminb = emin + 1023
    for r in prange(acc.size // nb):
        base = r * nb
        bad = not (fast or slane)
        if fast:  # branch-free pass (vectorised); lanes it cannot settle are redone below
            for j in range(nb):
                t, e = _two_sum(acc[base + j], b[j])
                v, rr, h, ok = rne_lane(t, man, eminb, maxval, negzero)
                out[base + j] = v
                bad |= not (ok & ((e == 0.0) | (abs(t - rr) != h)))
        elif slane:
            for j in range(nb):
                t, e = _two_sum(acc[base + j], b[j])
                w = rand32(key, np.uint64((e0 + base + j) * 4 + 3) << np.uint64(32))
                v, good, edge = _lane_float(t, C.STOCHASTIC, man, emin, maxval, negzero, w, rbits)
                out[base + j] = v
                bad |= not (good & ((e == 0.0) | (not edge)))
        if bad:
            for j in range(nb):
                x = acc[base + j]
                y = b[j]
                t = x + y
                e = 0.0
                if t - t == 0.0:  # finite: TwoSum's exact error (inf / NaN sums are rounded as they are)
                    bb = t - x
                    e = (x - (t - bb)) + (y - bb)
                w = rand32(key, np.uint64((e0 + base + j) * 4 + 3) << np.uint64(32)) if stoch else _U0
                if fast:
                    v, rr, h, ok = rne_lane(t, man, eminb, maxval, negzero)
                    if ok & ((e == 0.0) | (abs(t - rr) != h)):
                        continue
                elif slane:
                    v, good, edge = _lane_float(t, C.STOCHASTIC, man, emin, maxval, negzero, w, rbits)
                    if good & ((e == 0.0) | (not edge)):
                        continue
                v2, ev = C.round_scalar(t, e, ip, fp, mode, ovf, w, rbits)
                out[base + j] = v2


def add_rounded(acc, bias, fmt, rounding="nearest", overflow=None, rand_bits=None, seed=None, offset=0):
    """``R(acc + bias)`` element-wise into float format ``fmt``: one correctly rounded addition per
    element (the exact sum, from TwoSum), ``bias`` broadcast along the last axis of ``acc`` (both
    values of ``fmt``, float32 or float64 arrays). Stochastic rounding draws the word of counter
    ``((offset + i) * 4 + 3) << 32`` for flat element ``i`` (the bias stage of a MAC layer whose
    outputs before this batch number ``offset``). Returns float64.

    fp32 with round to nearest and IEEE overflow is float32 hardware addition (exactly that rounding
    when both addends are float32 values, which is checked; else the kernel below runs)."""
    fmt = parse_format(fmt)
    if not isinstance(fmt, FloatFormat):
        raise ValueError(f"add_rounded needs a float format, got {fmt.name}")
    acc = np.asarray(acc)
    b = np.ascontiguousarray(bias, dtype=np.float64).reshape(-1)
    if acc.ndim == 0 or b.size != acc.shape[-1]:
        raise ValueError(f"bias of {b.size} values does not match the last axis of an accumulator of shape {acc.shape}")
    mode = rounding_code(rounding)
    ovf = overflow_code(fmt, overflow)
    if fmt == _FP32 and mode == C.NEAREST and ovf == C.IEEE and acc.size:
        with np.errstate(over="ignore", invalid="ignore"):
            b32 = b.astype(np.float32)
            a32 = acc if acc.dtype == np.float32 else acc.astype(np.float32)
            if np.array_equal(b32, b) and (a32 is acc or np.array_equal(a32, acc, equal_nan=True)):
                return np.add(a32, b32).astype(np.float64)
    acc = np.ascontiguousarray(acc, dtype=np.float64)
    ip, fp = C.encode(fmt)
    out = np.empty_like(acc)
    fast = mode == C.NEAREST and rne_lane_applies(fmt)
    slane = mode == C.STOCHASTIC and _stage_params(fmt, rounding, overflow, 32)[4]
    if acc.size:
        key = make_key(seed) if mode == C.STOCHASTIC else np.uint64(0)
        _add_rounded_kernel(acc.reshape(-1), b, out.reshape(-1), ip, fp, np.int64(mode), np.int64(ovf), key,
                            np.int64(rand_bits_value(rand_bits)), np.int64(offset), fast, slane, np.int64(fmt.man),
                            np.int64(fmt.emin), float(fmt.max), bool(fmt.has_negative_zero))
    return out


# ------------------------------------------------------------------------------------------------
# Python API
# ------------------------------------------------------------------------------------------------

_ORDER = {"sequential": 0, "pairwise": 1, "chunked": 2}


def _params(spec: MacSpec):
    rbits = rand_bits_value(spec.rand_bits)
    if spec.product is not None:
        ipP, fpP, mP, oP, vP = _stage_params(spec.product, spec.product_rounding, spec.overflow_for(spec.product), rbits)
    else:
        ipP, fpP, mP, oP, vP = _stage_params(spec.accum, "nearest", None, rbits)
    ipA, fpA, mA, oA, vA = _stage_params(spec.accum, spec.accum_rounding, spec.overflow_for(spec.accum), rbits)
    if spec.out is not None:
        ipO, fpO, mO, oO, vO = _stage_params(spec.out, spec.accum_rounding, spec.overflow_for(spec.out), rbits)
    else:
        ipO, fpO, mO, oO, vO = ipA, fpA, mA, oA, vA
    if spec.inner is not None:  # the partial sums' accumulator (order chunked)
        ipI, fpI, mI, oI, vI = _stage_params(spec.inner, spec.inner_rounding, spec.inner_overflow_for(), rbits)
    else:
        ipI, fpI, mI, oI, vI = ipA, fpA, mA, oA, vA
    return (spec.product is not None, ipP, fpP, mP, oP, vP, ipA, fpA, mA, oA, vA,
            spec.out is not None, ipO, fpO, mO, oO, vO, ipI, fpI, mI, oI, vI), np.int64(rbits)


def _out_dtype(spec):
    return np.float32 if spec.out_format.fits_float32 else np.float64


def _prepare(x, fmt, axis):
    """Round an operand into its format (nearest); float32 or float64 as kernels.quantize returns."""
    x = check_real_array(x, "operand")
    if isinstance(fmt, MXFormat):
        return quantize(x, fmt, axis=axis)
    return quantize(x, fmt)  # float32 when the format fits it (the exact BLAS path uses it as is)


def _key(spec, seed):
    return make_key(seed) if spec.is_stochastic else np.uint64(0)


def _max_abs(fmt):
    f = fmt.elem if isinstance(fmt, MXFormat) else fmt
    return max(abs(f.max), abs(getattr(f, "min", -f.max)))


def _exact_path(spec: MacSpec, K: int, stats: bool):
    """(dtype, wrap) if the exact BLAS path applies, else None. See the module docstring."""
    a, b, acc = spec.a, spec.b, spec.accum
    if not (isinstance(a, FixedFormat) and isinstance(b, FixedFormat) and isinstance(acc, FixedFormat)):
        return None
    if spec.product is not None or acc.frac < a.frac + b.frac:
        return None
    if spec.out is not None and (spec.accum_rounding == "stochastic" or stats):
        return None  # the output rounding draws from the MAC counter layout / reports its events
    inner = spec.inner
    if inner is not None:  # partial sums in a narrower accumulator: exact only if they can neither round nor overflow
        part = spec.chunk * _max_abs(a) * _max_abs(b)
        if not (isinstance(inner, FixedFormat) and inner.frac >= a.frac + b.frac and part <= inner.max
                and part <= -inner.min):
            return None
    quanta = K * (_max_abs(a) * 2.0 ** a.frac) * (_max_abs(b) * 2.0 ** b.frac)  # in product quanta
    if quanta >= 2.0 ** 53:
        return None
    no_overflow = K * _max_abs(a) * _max_abs(b) <= acc.max and K * _max_abs(a) * _max_abs(b) <= -acc.min
    if no_overflow:
        wrap = False
    elif spec.overflow_for(acc) == "wrap" and not stats:
        wrap = True
    else:
        return None
    return (np.float32 if quanta < 2.0 ** 24 else np.float64), wrap


def _finish_exact(sums, spec: MacSpec, wrap: bool):
    """The spec's result from the exact sums (float32 or float64 BLAS output, exact either way)."""
    acc = spec.accum
    if not wrap and spec.out is None:
        return sums.astype(_out_dtype(spec), copy=False)  # one conversion, no float64 round trip
    sums = sums.astype(np.float64, copy=False)
    if wrap:
        q = sums * 2.0 ** acc.frac
        span = 2.0 ** acc.bits
        q = np.where((q > acc.qmax) | (q < acc.qmin), (q - acc.qmin) % span + acc.qmin, q)
        sums = q * 2.0 ** -acc.frac
    if spec.out is not None:
        sums = quantize(sums.astype(np.float64), spec.out, rounding=spec.accum_rounding,
                        overflow=spec.overflow_for(spec.out))
    return sums.astype(_out_dtype(spec), copy=False)


_FP32 = FloatFormat(8, 23)


def _paths(spec: MacSpec, A, B, stats=False) -> Path:
    """The :class:`Path` of a call with operands A, B (already rounded into their formats).

    NATIVE32: float32 hardware arithmetic is exactly the spec: fp32 accumulator, round to nearest,
    sequential, products exact and exactly representable in float32 (checked on the data: finite,
    nonzero magnitudes in [2**-60, 2**60], operand precisions adding up to at most 24 bits), or a
    float32 product rounding then a float32 add. PRODUCT: sequential order with each product rounded
    into a float product format (:func:`_product_lane`). Else, for sequential order without product rounding
    and an accumulator the branch-free lanes handle (:func:`_stage_params`): HALF_F16 / HALF_BF16
    (:func:`_half_lane`), STOCH32 (:func:`_stoch32_lane`), FIXED_STOCH (stochastic rounding or a
    fixed-point accumulator), NEAREST (round to nearest even into a float format with mantissa bits),
    LANE (other deterministic float roundings). Everything else: GENERIC."""
    seq = spec.order == "sequential" and spec.product is None
    det = spec.accum_rounding != "stochastic"
    native = False
    if spec.order == "sequential" and not stats and spec.accum == _FP32 and spec.accum_rounding == "nearest" \
            and spec.out in (None, _FP32) and spec.overflow_for(spec.accum) == "ieee":
        if spec.product is None:
            from .mac import precision_bits
            if precision_bits(spec.a) + precision_bits(spec.b) <= 24:
                native = all(_in_safe_range(z) for z in (A, B))
        elif spec.product == _FP32 and spec.product_rounding == "nearest" and spec.overflow_for(_FP32) == "ieee":
            # float32 multiply then float32 add: exactly R32(R32(a*b) + acc) for float32 operands
            native = spec.a.fits_float32 and spec.b.fits_float32 and not isinstance(spec.a, MXFormat) \
                and not isinstance(spec.b, MXFormat)
    if native:
        return Path.NATIVE32
    if _product_lane(spec):
        if _stoch32_product_lane(spec, A, B):
            return Path.STOCH32_PRODUCT
        return _half_product_lane(spec, A, B, stats) or Path.PRODUCT
    acc = spec.accum
    if not seq or not _stage_params(acc, "nearest", None, 32)[4]:
        return Path.GENERIC
    half = _half_lane(spec, A, B, stats)
    if half:
        return half
    if _stoch32_lane(spec, A, B):
        return Path.STOCH32
    if _stoch64_lane(spec, A, B):
        return Path.STOCH64
    if not (det and isinstance(acc, FloatFormat)):
        return Path.FIXED_STOCH
    return Path.NEAREST if (spec.accum_rounding == "nearest" and rne_lane_applies(acc)) else Path.LANE


def kernel_path(spec, a=None, b=None) -> str:
    """The name of the way a call with operands ``a``, ``b`` computes (a :class:`Path` name, or "exact"
    for the BLAS integer path); without operands, benign ones (ones) stand in, so data-dependent gates
    are assumed to pass."""
    spec = as_spec(spec)
    a = np.ones((1, 1)) if a is None else _prepare(a, spec.a, 1)
    b = np.ones((1, 1)) if b is None else _prepare(b, spec.b, 0)
    if _exact_path(spec, a.shape[1], False) is not None:
        return "exact"
    return _paths(spec, a, b).name


def _product_lane(spec: MacSpec) -> bool:
    """Path.PRODUCT applies: sequential order, a float product format and a float accumulator the
    branch-free lanes handle (subnormals, a zero, a sign; :func:`_stage_params`), each stage rounding
    to nearest even (where :func:`kernels.quantize.rne_lane` is exact for its format) or
    stochastically. Overflow, NaN / inf and ties the residual decides go to the scalar core inside the
    path, so no data condition is needed."""
    if spec.order != "sequential" or spec.product is None:
        return False
    for fmt, mode in ((spec.product, spec.product_rounding), (spec.accum, spec.accum_rounding)):
        if not (isinstance(fmt, FloatFormat) and _stage_params(fmt, mode, None, 32)[4]):
            return False
        if not (mode == "stochastic" or (mode == "nearest" and rne_lane_applies(fmt))):
            return False
    return True


_FP16 = FloatFormat(5, 10)
_BF16 = FloatFormat(8, 7)


def _half_lane(spec: MacSpec, A, B, stats=False):
    """Path.HALF_F16 (binary16) or Path.HALF_BF16 (bfloat16) when the sequential accumulation can run in float32 with one
    rounding to the 16-bit format per add (:mod:`kernels._half`); else 0.

    Every step of the spec is R(acc + p), acc a value of the accumulator format (precision P: 11 bits for
    binary16, 8 for bfloat16) and p an exact product of at most P significant bits. Then rounding
    float32's sum s = fl32(acc + p) again to the 16-bit format is R(acc + p). For p a value of the
    format that is Figueroa's theorem (double rounding of a sum of two P-bit numbers through at least
    2P + 2 bits is innocuous: S. A. Figueroa, "When is double rounding innocuous?", ACM SIGNUM Newsletter
    30(3), 1995); p need not be one (it may lie below the format's smallest subnormal or above its
    largest value). The double rounding can only go wrong where s is a midpoint m of the format (every
    midpoint is a float32 value) and acc + p != m: delta = acc + p - m has 0 < |delta| <= 2**(E - 24), E
    being m's exponent (take m > 0; the other sign is the mirror image). Let 2**g be the format's quantum at m (m an odd multiple of 2**(g - 1), g >= E - P + 1).
    If acc's quantum is at least 2**g, p = (m - acc) + delta with m - acc a nonzero multiple of
    2**(g - 1): p's bits run from at least 2**(g - 2) down to delta's lowest, at most 2**(E - 24), which
    is more than P bits. Otherwise |acc| < 2**E, and delta's lowest bit is at least the smaller of acc's
    and p's quanta: if p's is at most 2**(E - 24), |p| < 2**(E - 24 + P) cannot bring acc to within
    2**(E - 24) of m (m >= 2**E + 2**(g - 1)); if acc's is, |acc| < 2**(E - 24 + P) while p, a multiple of
    2**g, is at least 2**(g - 1) = 2**(E - P) from m. Each step needs P <= 11. Results in the format's
    subnormal range take the first case (their midpoints are odd multiples of half its smallest
    quantum, of which acc is a multiple), and overflow is decided on the same rounded value (65520 is
    binary16's overflow midpoint).
    tests/test_mac_half_lanes.py checks it for every binary16 accumulator and every product of fp8
    operands, and finds the failures at P + 1 product bits.

    So the path needs: IEEE binary16 / bfloat16 accumulator, round to nearest, IEEE overflow (inf),
    sequential, exact products, no event counters, operand precisions adding up to at most P, finite
    operands float32 holds (:func:`_f32_normal`) whose nonzero products are float32 normals (exact in
    float32): max|a| * max|b| <= float32's largest value, min|a| * min|b| >= 2**-126 (on the data)."""
    from .mac import precision_bits

    acc = spec.accum
    if stats or spec.order != "sequential" or spec.product is not None or spec.accum_rounding != "nearest":
        return 0
    kind = _half_kind(spec, Path.HALF_F16, Path.HALF_BF16)
    if not kind or precision_bits(spec.a) + precision_bits(spec.b) > acc.man + 1:
        return 0
    lo_a, hi_a = _abs_range(A)
    lo_b, hi_b = _abs_range(B)
    if not (hi_a * hi_b <= _F32_MAX and lo_a * lo_b >= 2.0 ** -126 and _f32_normal(lo_a, hi_a)
            and _f32_normal(lo_b, hi_b)):
        return 0  # NaN / inf operands fail here too
    return kind


def _half_kind(spec: MacSpec, f16, bf16):
    """``f16`` for an IEEE binary16 accumulator (with F16C), ``bf16`` for bfloat16, with IEEE overflow (inf);
    else 0."""
    acc = spec.accum
    if spec.overflow_for(acc) != "ieee":
        return 0
    return f16 if (acc == _FP16 and HAVE_F16C) else bf16 if acc == _BF16 else 0


def _half_product_lane(spec: MacSpec, A, B, stats=False):
    """Path.HALF_PRODUCT_EXACT_F16 / BF16 or HALF_PRODUCT_F16 / BF16 when every step R(acc + R(a * b)) can run
    in float32 lanes; else 0. The product and accumulator formats are the same IEEE binary16 (with F16C) or
    bfloat16, both stages round to nearest even with IEEE overflow (inf), sequential order, no event counters; operands
    float32 holds (:func:`_f32_normal`), with products no larger than float32's largest value; and the
    product stage one rounding of the exact product (:func:`kernels._half.product_f16`, overflow to inf
    included): either the product is exact in float32 (operand precisions adding up to at most 24 bits,
    nonzero product magnitudes in float32's normal range: HALF_PRODUCT_EXACT_*), or the host has FMA and every nonzero
    product magnitude is at least 2**-100, where the FMA's product error is exact (checked on the data:
    the smallest nonzero magnitudes). The accumulator stage adds two values of the format, which
    :func:`_half_lane`'s double-rounding argument covers; inf + -inf is NaN in both."""
    from .mac import precision_bits

    acc = spec.accum
    if stats or spec.order != "sequential" or spec.product != acc \
            or spec.product_rounding != "nearest" or spec.accum_rounding != "nearest":
        return 0
    exact = precision_bits(spec.a) + precision_bits(spec.b) <= 24
    kind = _half_kind(spec, Path.HALF_PRODUCT_EXACT_F16, Path.HALF_PRODUCT_EXACT_BF16) if exact \
        else _half_kind(spec, Path.HALF_PRODUCT_F16, Path.HALF_PRODUCT_BF16)
    if not kind:
        return 0
    if not (exact or HAVE_FMA):
        return 0
    lo_a, hi_a = _abs_range(A)
    lo_b, hi_b = _abs_range(B)
    if not (hi_a * hi_b <= _F32_MAX and lo_a * lo_b >= (2.0 ** -126 if exact else 2.0 ** -100)
            and _f32_normal(lo_a, hi_a) and _f32_normal(lo_b, hi_b)):
        return 0  # NaN / inf operands fail the first test
    return kind


_F32_MAX = float(np.finfo(np.float32).max)


def _f32_normal(lo, hi) -> bool:
    """Every nonzero magnitude of an operand in float32's normal range [2**-126, max] (``lo``, ``hi`` from
    :func:`_abs_range`; a NaN fails): its values, of at most 24 significant bits, are then float32 values,
    so the float32 lanes read them exactly (an MX operand's block scale or a wide exponent can leave it)."""
    return bool(hi <= _F32_MAX and lo >= 2.0 ** -126)


def _stoch32_lane(spec: MacSpec, A, B):
    """True when the sequential stochastic accumulation can run in float32 lanes (:func:`_lane_stoch32`):
    exact products (no product format) of operands whose precisions add up to at most 16 bits, every
    nonzero operand magnitude in [2**-60, 2**60] (so each product is exact in float32; NaN / inf
    operands fail), and a float accumulator the branch-free lanes handle (subnormals, signed, a zero)
    whose values float32 holds, with 2 to 16 bits of precision, quanta up to 2**126 and no normal
    value below float32's (emin >= -126: the lane reads a float32-subnormal sum's quantum off its bits,
    which holds only where such a sum is a subnormal of the format too), or a signed fixed-point
    accumulator with at most 16 bits of precision and a quantum in [2**-126, 2**126]. The lane checks
    the rest per addition (exact float32 sum, no overflow, not too far below the smallest quantum; with
    the WIDE kind, fp16 / bf16 / e5m2, not below the smallest normal) and hands those lanes back (WIDE's
    to a FLOAT-kind pass over the row first, then to the scalar core). The precision limits are for speed, not exactness: the float32 sum of the accumulator
    and a product is exact while it spans at most 24 bits, so with 16-bit products a term 2**8 times
    smaller than the running sum still stays in the lane (fp8 products: 2**16 times), while a float32
    accumulator would hand back nearly every addition that rounds."""
    acc = spec.accum
    if spec.order != "sequential" or spec.product is not None or spec.accum_rounding != "stochastic":
        return False
    from .mac import precision_bits
    if isinstance(acc, FloatFormat):
        if not _stoch32_float(acc):
            return False
    elif not (isinstance(acc, FixedFormat) and acc.signed and -126 <= acc.frac <= 126):
        return False
    if precision_bits(spec.a) + precision_bits(spec.b) > 16 or precision_bits(acc) > 16:
        return False  # exact in float32 only while the sum spans <= 24 bits: wider terms fall back too often
    return _in_safe_range(A) and _in_safe_range(B)


def _stoch64_lane(spec: MacSpec, A, B):
    """True when the sequential stochastic accumulation can run in float64 lanes (:func:`_lane_stoch64`):
    exact products (no product format; MacSpec keeps the operand precisions within float64's 53 bits),
    every nonzero operand magnitude in [2**-60, 2**60] (so each product is an exact float64 normal; NaN /
    inf operands fail), and a float accumulator the branch-free lanes handle (:func:`_stage_params`:
    subnormals, signed, a zero, every value a float64 normal or zero).
    The lane checks the rest per addition (overflow, inexact sums near a decision boundary, sums below
    the smallest quantum) and hands those lanes to the scalar core."""
    acc = spec.accum
    if spec.order != "sequential" or spec.product is not None or spec.accum_rounding != "stochastic":
        return False
    if not (isinstance(acc, FloatFormat) and _stage_params(acc, "stochastic", None, 32)[4]):
        return False  # the lanes' formats: every value a float64 normal or zero (emin - man >= -1022)
    return _in_safe_range(A) and _in_safe_range(B)


def _stoch32_float(fmt) -> bool:
    """A float format :func:`_lane_stoch32` rounds into: values float32 holds, 2 to 16 bits of precision,
    quanta up to 2**126, no normal value below float32's (emin >= -126), and one the branch-free lanes
    handle (subnormals, signed, a zero); see :func:`_stoch32_lane`."""
    from .mac import precision_bits
    return (isinstance(fmt, FloatFormat) and fmt.fits_float32 and fmt.man >= 1 and fmt.emax - fmt.man <= 126
            and fmt.emin >= -126 and precision_bits(fmt) <= 16 and _stage_params(fmt, "stochastic", None, 32)[4])


def _stoch32_product_lane(spec: MacSpec, A, B) -> bool:
    """Path.STOCH32_PRODUCT: a product-rounded sequential MAC (:func:`_product_lane`) with both stages
    stochastic into float formats :func:`_lane_stoch32` handles (:func:`_stoch32_float`), operand
    precisions adding up to at most 24 bits and every nonzero operand magnitude in [2**-60, 2**60] (each
    product exact in float32; NaN / inf operands fail). The sum of the accumulator and a rounded product
    (both of at most 16 bits) is then exact in float32 unless their exponents lie far apart; the lane
    hands such additions, overflow and sums below the smallest quantum to the scalar core."""
    from .mac import precision_bits
    if not (_product_lane(spec) and spec.product_rounding == "stochastic" and spec.accum_rounding == "stochastic"):
        return False
    if not (_stoch32_float(spec.product) and _stoch32_float(spec.accum)):
        return False
    if precision_bits(spec.a) + precision_bits(spec.b) > 24:
        return False
    return _in_safe_range(A) and _in_safe_range(B)


def _abs_range(z):
    """(smallest nonzero magnitude, largest magnitude) of z; (inf, 0) when all zero or empty; NaN as
    the largest when z holds a NaN. Once per prepared weight array inside :func:`kernels._memo.reuse_weights`."""
    return _memo.derived(np.asarray(z), "abs_range", _abs_range_of)


def _abs_range_of(z):
    """:func:`_abs_range`, computed."""
    if z.size == 0:
        return np.inf, 0.0
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    flat = np.ascontiguousarray(z).reshape(-1)
    if z.dtype == np.float32:
        ut = np.uint32
        lo, hi = _abs_range_kernel32(flat.view(ut))
    else:
        ut = np.uint64
        lo, hi = _abs_range_kernel(flat.view(ut), ut(np.iinfo(ut).max >> 1))
    lo_f = np.array(lo, dtype=ut).view(z.dtype) if lo else np.inf
    return float(lo_f), float(np.array(hi, dtype=ut).view(z.dtype))


@njit(cache=True)
def _abs_range_kernel(u, mask):
    """Over float bit patterns ``u`` (sign cleared by ``mask``): magnitudes order as their patterns
    (a NaN above inf), so integer min / max reductions, which vectorise, find them; zero drops out of
    the minimum by the wrap-around of ``bits - 1``. Returns (min nonzero pattern or 0, max pattern)."""
    lo = np.uint64(0xFFFFFFFFFFFFFFFF)
    hi = np.uint64(0)
    one = np.uint64(1)
    for i in range(u.size):
        b = np.uint64(u[i] & mask)
        lo = min(lo, b - one)
        hi = max(hi, b)
    return lo + one, hi


@njit(cache=True)
def _abs_range_kernel32(u):
    """:func:`_abs_range_kernel` on float32 bit patterns, every step in uint32 (the wrap-around of
    ``bits - 1`` at 32 bits), so that it vectorises on AVX2, which has no unsigned 64-bit min / max: on
    2 M values, 0.27 ms against 0.98 ms (2.05 -> 7.38 G values/s, one thread, --avx2, Intel Xeon with
    AVX-512 hidden); the activation operands of a depthwise layer took as long here as its MACs."""
    lo = np.uint32(0xFFFFFFFF)
    hi = np.uint32(0)
    one = np.uint32(1)
    mask = np.uint32(0x7FFFFFFF)
    for i in range(u.size):
        b = np.uint32(u[i] & mask)
        lo = min(lo, np.uint32(b - one))
        hi = max(hi, b)
    return np.uint32(lo + one), hi


_NO_LANES32 = np.zeros((1, 1), dtype=np.float32)
_NO_W64 = np.zeros((1, 1), dtype=np.float64)


def _lanes32(B, path, layout=None):
    """B as float32 for the float32 lanes (exact there: their gates admit only operands float32 holds), in
    the column panels of :func:`_panels` for the tiles (``layout`` _CONV and a path of :data:`_KINDS`), else
    a dummy the kernel never reads. Once per prepared weight view inside :func:`kernels._memo.reuse_weights`."""
    if path not in _FLOAT32_LANES:
        return _NO_LANES32
    if layout == _CONV and path in _KINDS:
        return _memo.derived(B, "panels", _panels)
    return _memo.derived(B, "float32", _float32)


def _float32(z):
    return np.ascontiguousarray(z, dtype=np.float32)


def _float64(z):
    return np.ascontiguousarray(z, dtype=np.float64)


def _panels(B):
    """B (K, N) as float32 in the column panels the tiles read (:func:`_make_tile`): the panel of columns
    j0 <= j < j0 + w (w = 16 while 16 columns are left, then 8 if 8 are, then the rest) is the K x w
    row-major block at offset j0 * K. A tile's block then reads its 16 (or 8) columns of B as one
    contiguous stream instead of one cache line per row of a long B: a dense layer of 2304 x 512 float32
    weights (4.7 MB, over the L2 cache) read as rows 2 KB apart ran at a third of the convolutions' MAC
    rate (bench/network.py, cifar_cnn's fc1; see :func:`_make_tile` for the layout's reader). Returned
    with the shape (K, N), which the panels fill exactly, for the kernels' argument type."""
    B = np.asarray(B, dtype=np.float32)
    K, N = B.shape
    out = np.empty(K * N, dtype=np.float32)
    n16 = N // 16 * 16
    out[:K * n16].reshape(N // 16, K, 16)[...] = B[:, :n16].reshape(K, N // 16, 16).transpose(1, 0, 2)
    j0 = n16
    if N - j0 >= 8:
        out[j0 * K:(j0 + 8) * K] = B[:, j0:j0 + 8].reshape(-1)
        j0 += 8
    out[j0 * K:] = B[:, j0:].reshape(-1)
    return out.reshape(K, N)


def _in_safe_range(z):
    """Finite, with every nonzero magnitude in [2**-60, 2**60] (so products are exact in float32)."""
    lo, hi = _abs_range(z)
    return bool(hi <= 2.0 ** 60 and lo >= 2.0 ** -60)  # a NaN fails the first comparison


def _evc_to_stats(evc) -> MacStats:
    tot = evc.sum(axis=0) if evc.size else np.zeros(4, dtype=np.int64)
    return MacStats(saturated=int(tot[0]), wrapped=int(tot[1]), overflowed=int(tot[2]), invalid=int(tot[3]))


def _check_offset(offset):
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    return int(offset)


def matmul(a, b, spec, seed=None, offset=0, stats=False):
    """``a @ b`` on the emulated MAC unit ``spec`` (a :class:`MacSpec` or preset name).

    ``a`` is (M, K), ``b`` is (K, N). Operands are first rounded into ``spec.a`` / ``spec.b``
    (nearest). Output element (i, j) is the accumulation over k of a[i, k] * b[k, j] with the
    spec's semantics (:mod:`kernels.mac`); its stochastic counter index is ``e + offset`` with
    ``e = i * N + j``, so a block of rows processed separately with ``offset`` = (its first row) * N
    equals the whole. Returns float32 when the output format fits
    float32, else float64; with ``stats=True`` returns ``(out, MacStats)``.
    """
    spec = as_spec(spec)
    offset = _check_offset(offset)
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.ndim != 2 or b_arr.ndim != 2:
        raise ValueError(f"matmul needs 2-D operands (M, K) and (K, N); got shapes {a_arr.shape} and {b_arr.shape}")
    if a_arr.shape[1] != b_arr.shape[0]:
        raise ValueError(f"matmul shape mismatch: a is {a_arr.shape}, b is {b_arr.shape}; "
                         f"a's second dimension ({a_arr.shape[1]}) must equal b's first ({b_arr.shape[0]})")
    M, K = a_arr.shape
    N = b_arr.shape[1]
    A = _prepare(a_arr, spec.a, axis=1)
    B = _memo.rounded(b_arr, spec.b, 0, _prepare)
    exact = _exact_path(spec, K, stats)
    if exact is not None:
        dt, wrap = exact
        res = _finish_exact(A.astype(dt, copy=False) @ B.astype(dt, copy=False), spec, wrap)
        return (res, MacStats()) if stats else res
    out = np.empty((M, N), dtype=_out_dtype(spec))
    evc = np.zeros((M, 4), dtype=np.int64)
    if M and N:
        # the convolution kernel on an (M, 1, 1, K) input with a 1x1 window: row i is output pixel i
        _run_kernel(_CONV, np.reshape(A, (M, 1, 1, K)), B,
                    _paths(spec, A, B, stats), spec, out.reshape(M, 1, 1, N), (1, 1, 1, 1, 0, 0), 1, offset, seed,
                    K, evc)
    return (out, _evc_to_stats(evc)) if stats else out


def _pair(v, what):
    """A positive int or a pair of positive ints (numpy integers accepted); anything else is an error."""
    def ok(i):
        return isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 1
    if ok(v):
        return (int(v), int(v))
    if isinstance(v, (tuple, list, np.ndarray)) and len(v) == 2 and all(ok(i) for i in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {v!r}")


def conv_output_size(n, k, s, padding):
    """Output length of a window op (TensorFlow's rules)."""
    if padding == "same":
        return -(-n // s)
    if padding == "valid":
        return max((n - k) // s + 1, 0)
    raise ValueError(f"unknown padding {padding!r}; valid: 'valid', 'same'")


def same_padding(n, k, s, padding):
    """(pad_before, pad_after) along one axis (TensorFlow: the extra pixel goes after)."""
    if padding == "valid":
        return 0, 0
    out = conv_output_size(n, k, s, padding)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv_setup(x, w, stride, padding, name, depthwise):
    x_arr, w_arr = np.asarray(x), np.asarray(w)
    if x_arr.ndim != 4:
        raise ValueError(f"{name} needs NHWC input (4-D); got shape {x_arr.shape}")
    if w_arr.ndim != 4:
        kind = "(kh, kw, C, multiplier)" if depthwise else "HWIO (kh, kw, Cin, Cout)"
        raise ValueError(f"{name} needs {kind} weights (4-D); got shape {w_arr.shape}")
    if x_arr.shape[3] != w_arr.shape[2]:
        raise ValueError(f"{name} channel mismatch: input {x_arr.shape} has {x_arr.shape[3]} channels, "
                         f"weights {w_arr.shape} expect {w_arr.shape[2]}")
    if padding not in ("valid", "same"):
        raise ValueError(f"unknown padding {padding!r}; valid: 'valid', 'same'")
    sh, sw = _pair(stride, "stride")
    n, H, W, _ = x_arr.shape
    kh, kw = w_arr.shape[:2]
    if kh == 0 or kw == 0:
        raise ValueError(f"{name} weights of shape {w_arr.shape} have a {kh}x{kw} window; it needs at least one tap "
                         "(kh, kw >= 1). Zero channels are fine: they give zeros or an empty output")
    if padding == "valid" and (kh > H or kw > W):
        raise ValueError(f"{name}: the {kh}x{kw} kernel is larger than the {H}x{W} input with padding='valid', so "
                         "the output would be empty; use padding='same' or a kernel no larger than the input")
    OH, OW = conv_output_size(H, kh, sh, padding), conv_output_size(W, kw, sw, padding)
    pt, _ = same_padding(H, kh, sh, padding)
    pl, _ = same_padding(W, kw, sw, padding)
    return x_arr, w_arr, sh, sw, OH, OW, pt, pl


def conv2d(x, w, spec, stride=1, padding="valid", seed=None, offset=0, stats=False):
    """2-D convolution (cross-correlation, as TensorFlow) of NHWC ``x`` with HWIO ``w`` on ``spec``.

    Output (n, oh, ow, co) accumulates over k = (dh * kw + dw) * Cin + ci, zero padding included
    (TensorFlow 'same' padding: the odd extra pixel after). Stochastic counter index of an output is
    its flat NHWC index plus ``offset`` (for a batch starting at image ``b``: ``b * OH * OW * Cout``).
    Returns float32/float64 as :func:`matmul`; ``stats=True`` adds a :class:`MacStats`.
    """
    spec = as_spec(spec)
    offset = _check_offset(offset)
    x_arr, w_arr, sh, sw, OH, OW, pt, pl = _conv_setup(x, w, stride, padding, "conv2d", False)
    n, H, W, Cin = x_arr.shape
    kh, kw, _, Cout = w_arr.shape
    K = kh * kw * Cin
    X = _prepare(x_arr, spec.a, axis=3)
    Wq = _memo.rounded(w_arr, spec.b, 2, _prepare)
    exact = _exact_path(spec, K, stats)
    if exact is not None:
        dt, wrap = exact
        res = _finish_exact(_conv_exact(X, Wq, sh, sw, OH, OW, pt, pl, dt), spec, wrap)
        return (res, MacStats()) if stats else res
    out = np.empty((n, OH, OW, Cout), dtype=_out_dtype(spec))
    evc = np.zeros((n * OH * OW, 4), dtype=np.int64)
    if out.size:
        _run_kernel(_CONV, X, Wq.reshape(K, Cout), _paths(spec, X, Wq, stats),
                    spec, out, (kh, kw, sh, sw, pt, pl), 1, offset, seed, K, evc)
    return (out, _evc_to_stats(evc)) if stats else out


#: im2col bytes per GEMM of the exact conv path. bench/mac.py, int8 convs together, runs alternated:
#: 1 MB 0.45-0.48x numpy (3 runs), 2 MB 0.52-0.59x (5 runs), 4 MB 0.54x (2 runs); 1 MB was 32 -> 41 GMAC/s
#: over one unblocked GEMM on conv2.
_IM2COL_BYTES = 2 ** 21


def _conv_exact(X, Wq, sh, sw, OH, OW, pt, pl, dt):
    """Exact sums of a convolution with BLAS (im2col in blocks of images).

    Each block's im2col matrix (about :data:`_IM2COL_BYTES`, so it stays in cache for the GEMM) and
    GEMM result are written into buffers allocated once per call: fresh allocations per block cost
    page faults."""
    n, H, W, Cin = X.shape
    kh, kw, _, Cout = Wq.shape
    K = kh * kw * Cin
    pb = max((OH - 1) * sh + kh - H - pt, 0)
    pr = max((OW - 1) * sw + kw - W - pl, 0)
    Xp = np.pad(X.astype(dt, copy=False), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    W2 = Wq.reshape(K, Cout).astype(dt)
    out = np.empty((n, OH, OW, Cout), dtype=np.float64)
    if out.size == 0:
        return out
    per_img = OH * OW * K * np.dtype(dt).itemsize
    step = min(n, max(1, int(_IM2COL_BYTES // max(per_img, 1))))
    cols = np.empty((step, OH, OW, kh, kw, Cin), dtype=dt)
    sums = np.empty((step * OH * OW, Cout), dtype=dt)
    s = Xp.strides
    for i in range(0, n, step):
        m = min(step, n - i)
        np.copyto(cols[:m], np.lib.stride_tricks.as_strided(
            Xp[i:i + m], (m, OH, OW, kh, kw, Cin), (s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3])))
        res = sums[:m * OH * OW]
        np.matmul(cols[:m].reshape(-1, K), W2, out=res)
        out[i:i + m] = res.reshape(m, OH, OW, Cout)
    return out


def depthwise_conv2d(x, w, spec, stride=1, padding="valid", seed=None, offset=0, stats=False):
    """Depthwise convolution of NHWC ``x`` with weights (kh, kw, C, m) on ``spec``.

    Output channel c * m + q of pixel (n, oh, ow) accumulates over k = dh * kw + dw the products
    x[n, oh*sh+dh-pt, ow*sw+dw-pl, c] * w[dh, dw, c, q] (zero padding included). Counters, dtype and
    ``stats`` as :func:`conv2d`.
    """
    spec = as_spec(spec)
    offset = _check_offset(offset)
    x_arr, w_arr, sh, sw, OH, OW, pt, pl = _conv_setup(x, w, stride, padding, "depthwise_conv2d", True)
    n, H, W, C_ = x_arr.shape
    kh, kw, _, m = w_arr.shape
    K = kh * kw
    X = _prepare(x_arr, spec.a, axis=3)
    Wq = _memo.rounded(w_arr, spec.b, 2, _prepare)
    exact = _exact_path(spec, K, stats)
    if exact is not None:
        dt, wrap = exact
        pb = max((OH - 1) * sh + kh - H - pt, 0)
        pr = max((OW - 1) * sw + kw - W - pl, 0)
        Xp = np.pad(X.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        acc = np.zeros((n, OH, OW, C_, m), dtype=np.float64)
        for dh in range(kh):
            for dw in range(kw):
                xs = Xp[:, dh:dh + (OH - 1) * sh + 1:sh, dw:dw + (OW - 1) * sw + 1:sw, :]
                acc += xs[..., None] * Wq[dh, dw]
        res = _finish_exact(acc.reshape(n, OH, OW, C_ * m), spec, wrap)
        return (res, MacStats()) if stats else res
    out = np.empty((n, OH, OW, C_ * m), dtype=_out_dtype(spec))
    evc = np.zeros((n * OH * OW, 4), dtype=np.int64)
    if out.size:
        _run_kernel(_DEPTHWISE, X, Wq.reshape(K, C_ * m),
                    _paths(spec, X, Wq, stats), spec, out, (kh, kw, sh, sw, pt, pl), m, offset, seed, K, evc)
    return (out, _evc_to_stats(evc)) if stats else out
