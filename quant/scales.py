"""Scales and zero points: how a real range ``[lo, hi]`` lands on a number format.

A :class:`QParams` maps real values ``x`` to *format values* ``v`` (values of ``fmt``: integers for
``int<N>``, ``k * 2**-F`` for ``fixed<W>.<F>``, float-format values for fp8/fp6/fp4/...) and back:

* quantize:   ``v = clip(Q_fmt(x / scale + zero_point), vmin, vmax)``
* dequantize: ``x ~ (v - zero_point) * scale``

where ``x / scale`` is a float64 division (correctly rounded), ``+ zero_point`` a float64 addition,
``Q_fmt`` is :func:`kernels.quantize` into ``fmt`` with ``rounding="nearest"`` (ties to even) and
``overflow="saturate"``, and ``[vmin, vmax]`` the stored range below. ``scale`` and ``zero_point``
are float64 arrays: shape ``()`` per tensor, ``(C,)`` per channel (broadcast against the last axis).

Schemes (``scheme``):

* ``"symmetric"``: ``zero_point = 0``; ``amax = max(|lo|, |hi|)`` is mapped to the format's largest
  value ``fmt.max`` (``scale = amax / fmt.max``). Signed integer / fixed formats use the **narrow**
  (restricted) range ``[-fmt.max, fmt.max]`` (int8: [-127, 127], as TF-Lite's symmetric weights), so
  zero sits in the middle; unsigned formats use ``[0, fmt.max]`` and need ``lo >= 0``; float formats
  are symmetric by construction (``[-max, max]``).
* ``"asymmetric"`` (integer / fixed formats only): the range is first widened to hold zero,
  ``lo' = min(lo, 0)``, ``hi' = max(hi, 0)``; ``scale = (hi' - lo') / (fmt.max - fmt.min)`` and
  ``zero_point = fmt.min - rint(lo' / scale / q) * q`` (``q = 2**-frac``, the format's step; for
  ``int<N>``: ``zp = qmin - rint(lo' / scale)``), clamped to ``[fmt.min, fmt.max]``; stored range is
  the full ``[fmt.min, fmt.max]``. Real zero is then exactly the format value ``zero_point``.

Scale kinds (``kind``):

* ``"real"``: the float64 scale above;
* ``"pow2"``: ``2**ceil(log2(real scale))`` -- rounded **up**, so the power-of-two grid never clips
  more of the range than the real scale would (shift-only rescaling hardware);
* ``"none"``: ``scale = 1``, ``zero_point = 0``: the format used as is (fixed point with its own
  binary point, fp8/bf16 values unscaled); symmetric only;
* ``"mx"``: OCP MX block formats only: ``scale = 1`` here, the kernels apply the per-block E8M0
  scales along the reduction axis (:mod:`kernels.quantize`); symmetric only.

A zero range (``amax == 0``, or ``hi' == lo'``) gets ``scale = 1`` (every value is 0 anyway).

Validity (:func:`check_scheme`, all ``ValueError`` naming the value and what would be valid): a zero
point needs an integer / fixed-point format of at least 2 bits (a float grid is not uniform, a
1-bit format cannot hold both a zero point and a nonzero value on either side); MX formats take
``kind="mx"`` and only MX formats do; ``kind="none"`` has no zero point; formats without a zero
(E8M0) cannot hold weights or activations. A power-of-two scale on a float format is allowed: it is
an exponent-bias shift, what FP8 hardware with a shared power-of-two (E8M0) tensor scale does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels.quantize import quantize as kquantize
from kernels.formats import FixedFormat, FloatFormat, MXFormat, parse_format

__all__ = ["SCHEMES", "SCALE_KINDS", "QParams", "check_scheme", "compute_qparams", "pow2_scale"]

SCHEMES = ("symmetric", "asymmetric")
SCALE_KINDS = ("real", "pow2", "none", "mx")


def check_scheme(fmt, scheme: str, kind: str, what: str = "tensor"):
    """Validate a (format, scheme, scale kind) combination; returns the parsed format."""
    fmt = parse_format(fmt)
    if scheme not in SCHEMES:
        raise ValueError(f"{what}: unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if kind not in SCALE_KINDS:
        raise ValueError(f"{what}: unknown scale kind {kind!r}; valid: {', '.join(SCALE_KINDS)}")
    if isinstance(fmt, MXFormat):
        if kind != "mx":
            raise ValueError(f"{what}: {fmt.name} is an MX block format, whose scales are its per-block E8M0 "
                             f"scales; scale={kind!r} is not valid, use scale='mx'")
        if scheme != "symmetric":
            raise ValueError(f"{what}: MX format {fmt.name} has no zero point; scheme={scheme!r} is not valid, "
                             "use 'symmetric'")
        return fmt
    if kind == "mx":
        raise ValueError(f"{what}: scale='mx' needs an MX block format (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, "
                         f"mxfp6_e3m2, mxfp4_e2m1, mxint8), not {fmt.name}")
    if isinstance(fmt, FloatFormat) and not fmt.has_zero:
        raise ValueError(f"{what}: {fmt.name} has no zero and cannot hold weights or activations; "
                         "use an integer, fixed-point, float or MX format")
    if scheme == "asymmetric":
        if not isinstance(fmt, FixedFormat):
            raise ValueError(f"{what}: scheme='asymmetric' (a zero point) needs an integer / fixed-point format; "
                             f"{fmt.name} is a float format, whose grid is not uniform: use scheme='symmetric'")
        if fmt.bits < 2:
            raise ValueError(f"{what}: {fmt.name} is too narrow for scheme='asymmetric' (a zero point needs at least "
                             "2 bits); use scheme='symmetric' or a wider format")
        if kind == "none":
            raise ValueError(f"{what}: scale='none' uses the format as is, without a zero point; "
                             "scheme='asymmetric' needs scale='real' or 'pow2'")
    return fmt


def pow2_scale(s):
    """``2**ceil(log2(s))`` elementwise for positive finite ``s`` (exact: via frexp)."""
    s = np.asarray(s, dtype=np.float64)
    m, e = np.frexp(s)  # s = m * 2**e, 0.5 <= m < 1
    e = np.where(m == 0.5, e - 1, e)  # s is already a power of two
    return np.ldexp(1.0, e)


def _bounds(fmt, scheme):
    """Stored range [vmin, vmax] in format values."""
    if isinstance(fmt, FixedFormat):
        if scheme == "symmetric":
            return (-fmt.max if fmt.signed else 0.0), fmt.max
        return fmt.min, fmt.max
    if isinstance(fmt, FloatFormat):
        return (-fmt.max if fmt.signed else 0.0), fmt.max
    return -math.inf, math.inf  # MX: the kernel saturates per block


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale, zero point and stored range of one tensor (or of each channel along the last axis)."""

    fmt: object
    scheme: str
    kind: str
    scale: np.ndarray
    zero_point: np.ndarray
    vmin: float
    vmax: float

    @property
    def per_channel(self) -> bool:
        return np.ndim(self.scale) > 0

    def quantize(self, x) -> np.ndarray:
        """Format values (float64) of real ``x``: ``clip(Q_fmt(x / scale + zp), vmin, vmax)``."""
        if isinstance(self.fmt, MXFormat):
            raise ValueError("MX tensors are quantized by the kernels along the reduction axis, not by QParams")
        t = np.asarray(x)
        if not (self.kind == "none" and t.dtype == np.float32 and not isinstance(self.fmt, FixedFormat)):
            t = t.astype(np.float64, copy=False)  # float32 input into a float format as is: the same values
        if self.kind != "none":
            t = t / self.scale
            if np.any(self.zero_point != 0):
                t = t + self.zero_point
        if isinstance(self.fmt, FixedFormat):
            # kernels.quantize(nearest, saturate) on a fixed-point grid, written out (much faster on float64):
            # round t * 2**frac to the nearest integer, ties to even, then clamp -- the same values
            if np.isnan(t).any():
                raise ValueError(f"cannot quantize NaN into {self.fmt.name}: the input holds "
                                 f"{int(np.isnan(t).sum())} NaN value(s)")
            f = self.fmt.frac
            v = np.rint(t * 2.0 ** f if f else t)
            if f:
                v *= 2.0 ** -f
        else:
            v = kquantize(t, self.fmt, rounding="nearest", overflow="saturate").astype(np.float64, copy=False)
        return np.clip(v, self.vmin, self.vmax, out=v)

    def dequantize(self, v) -> np.ndarray:
        """``(v - zero_point) * scale`` in float64."""
        return (np.asarray(v, dtype=np.float64) - self.zero_point) * self.scale

    def fake_quantize(self, x) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    def describe(self) -> dict:
        s = np.asarray(self.scale)
        z = np.asarray(self.zero_point)
        d = {"format": self.fmt.name, "scheme": self.scheme, "scale_kind": self.kind}
        if s.ndim:
            d.update(scale_min=float(s.min()), scale_max=float(s.max()), channels=int(s.size))
        else:
            d.update(scale=float(s), zero_point=float(z))
        return d


def compute_qparams(lo, hi, fmt, scheme: str = "symmetric", kind: str = "real", what: str = "tensor") -> QParams:
    """The :class:`QParams` for the real range ``[lo, hi]`` (scalars, or arrays: one range per channel).

    See the module docstring for the exact formulas. Raises ``ValueError`` for an invalid
    combination, non-finite or inverted ranges, and negative values into an unsigned symmetric format.
    """
    fmt = check_scheme(fmt, scheme, kind, what)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"{what}: lo and hi have different shapes {lo.shape} and {hi.shape}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"{what}: calibration range must be finite, got lo={lo}, hi={hi}")
    if np.any(lo > hi):
        raise ValueError(f"{what}: calibration range has lo > hi (lo={lo}, hi={hi})")
    vmin, vmax = _bounds(fmt, scheme)
    zero = np.zeros(lo.shape)
    if kind in ("none", "mx"):
        return QParams(fmt, scheme, kind, np.ones(lo.shape), zero, vmin, vmax)
    if scheme == "symmetric":
        if vmin == 0.0 and np.any(lo < 0):
            raise ValueError(f"{what}: {fmt.name} is unsigned and cannot hold the negative values observed "
                             f"(min {float(lo.min())!r}) with scheme='symmetric'; use scheme='asymmetric' or a "
                             "signed format")
        amax = np.maximum(np.abs(lo), np.abs(hi))
        s = amax / fmt.max
    else:
        lo = np.minimum(lo, 0.0)
        hi = np.maximum(hi, 0.0)
        s = (hi - lo) / (fmt.max - fmt.min)
    if np.any(s < 0) or not np.isfinite(s).all():  # pragma: no cover - guarded above
        raise ValueError(f"{what}: invalid scale {s}")
    s = np.where(s > 0, s, 1.0)
    if kind == "pow2":
        s = pow2_scale(s)
    if scheme == "asymmetric":
        q = fmt.scale  # the format's step 2**-frac
        zp = fmt.min - np.rint(lo / s / q) * q
        zp = np.clip(zp, fmt.min, fmt.max)
    else:
        zp = zero
    return QParams(fmt, scheme, kind, s, zp, vmin, vmax)
