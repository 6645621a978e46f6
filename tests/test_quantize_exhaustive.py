"""Exhaustive checks on every format of 8 bits or fewer: the named ones, a sweep of e<E>m<M> with
E + M <= 7 (IEEE-style specials; E = 1 with no specials), specials / subnormal variants, int2..int8,
uint1..uint8 and several fixed8.F / ufixed formats.

Each format's value set is enumerated from its definition (``decode_all_codes`` in conftest.py: every
code decoded from exp / man / bias / specials / ... or bits / frac, independently of the quantizer):

* round trip: every value quantizes to itself (bit pattern, sign of zero included) in every rounding
  mode, stochastic too, from float64 and from float32; NaN codes give NaN, infinities stay;
* ties: the midpoint of two neighbouring values goes to the one with the EVEN code (``nearest``;
  the magnitude code's last bit, or the integer code's for fixed point) and to the larger magnitude
  (``nearest_away``); the directed modes go to their side;
* monotone: on a dense sorted grid spanning the range (values, midpoints, points just around them,
  beyond the overflow threshold, infinities), outputs are non-decreasing in every deterministic mode.
"""

import numpy as np
import pytest

import kernels
from kernels.formats import FORMATS, FixedFormat, FloatFormat, parse_format

from conftest import decode_all_codes  # the definition-based enumeration shared with test_formats

DET_MODES = ["nearest", "nearest_away", "toward_zero", "up", "down"]

NAMED_FLOATS = sorted({n for n, f in FORMATS.items() if isinstance(f, FloatFormat) and f.bits <= 8
                       and n == f.name})
SWEEP = [f"e{e}m{m}" for e in range(2, 8) for m in range(0, 8 - e)]
E1 = [FloatFormat(1, m, specials="none") for m in range(0, 7)]
VARIANTS = [FloatFormat(4, 3, subnormals=False), FloatFormat(3, 2, subnormals=False, specials="none"),
            FloatFormat(5, 2, subnormals=False, specials="fn"), FloatFormat(4, 3, bias=3, specials="fnuz"),
            FloatFormat(3, 4, specials="fn"), FloatFormat(2, 5, specials="none"), FloatFormat(4, 3, bias=12),
            FloatFormat(3, 3, specials="fnuz", subnormals=False), FloatFormat(6, 1, specials="none")]
FIXED = ([f"int{b}" for b in range(2, 9)] + [f"uint{b}" for b in range(1, 9)]
         + [f"fixed8.{f}" for f in (-2, 1, 3, 4, 7, 8, 10)] + ["ufixed8.4", "ufixed4.6", "fixed3.-1"])
ALL = NAMED_FLOATS + SWEEP + E1 + VARIANTS + FIXED


def _id(f):
    return f if isinstance(f, str) else f.name


def _value_table(f):
    """(values, mag_codes) of the finite values, one entry per distinct value (the +0 code for zero),
    sorted by value."""
    codes, vals, mag = decode_all_codes(f)
    fin = np.isfinite(vals)
    vals, mag = vals[fin], mag[fin]
    # one entry per value: prefer +0.0 over -0.0
    order = np.lexsort((np.signbit(vals), vals))
    vals, mag = vals[order], mag[order]
    keep = np.concatenate([[True], vals[1:] != vals[:-1]])
    return vals[keep], mag[keep]


def _same(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    return ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))


@pytest.mark.parametrize("fmt", ALL, ids=_id)
def test_every_code_round_trips(fmt):
    f = parse_format(fmt)
    _, x, _ = decode_all_codes(f)
    want = x  # NaN codes -> NaN, inf -> inf (default overflow), -0.0 -> -0.0
    for mode in DET_MODES + ["stochastic"]:
        for dtype in (np.float64, np.float32):
            xx = x.astype(dtype)
            got = kernels.quantize(xx, f, rounding=mode, seed=1)
            same = _same(got, want)
            assert same.all(), (f.name, mode, dtype.__name__, x[~same][:6], got[~same][:6])


def _neighbours(f):
    vals, mag = _value_table(f)
    a, b = vals[:-1], vals[1:]
    ma, mb = mag[:-1], mag[1:]
    return a, b, ma, mb, (a + b) / 2


@pytest.mark.parametrize("fmt", ALL, ids=_id)
def test_ties(fmt):
    f = parse_format(fmt)
    a, b, ma, mb, mid = _neighbours(f)
    is_fixed = isinstance(f, FixedFormat)
    neg_zero = (not is_fixed) and f.has_negative_zero

    def signed_zero_fix(res):
        # a zero result carries the sign of the input where the format has -0
        return np.where(res == 0, np.copysign(0.0, mid) if neg_zero else 0.0, res)

    # the even code: integer code k for fixed point, the magnitude code for floats
    even_a = (ma & 1) == 0
    even_b = (mb & 1) == 0
    skip = even_a == even_b  # only for {0, min_normal} in formats without subnormals (n = 0 vs 1 quantum)
    if not is_fixed:
        assert (~skip | ((np.minimum(np.abs(a), np.abs(b)) == 0) & ~np.bool_(f.subnormals))).all()
    want = {
        "nearest": np.where(skip, np.where(np.abs(a) < np.abs(b), a, b), np.where(even_a, a, b)),
        "nearest_away": np.where(np.abs(a) > np.abs(b), a, b),
        "toward_zero": np.where(np.abs(a) < np.abs(b), a, b),
        "up": b,
        "down": a,
    }
    for mode, w in want.items():
        w = signed_zero_fix(w)
        for dtype in (np.float64, np.float32):
            got = kernels.quantize(mid.astype(dtype), f, rounding=mode)
            same = _same(got, w)
            assert same.all(), (f.name, mode, dtype.__name__, list(zip(mid[~same][:6], got[~same][:6], w[~same][:6])))


def _dense_grid(f):
    vals, _ = _value_table(f)
    top = vals[-1]
    span_hi = np.abs(vals).max()
    pts = [vals]
    d = np.diff(vals)
    for t in np.linspace(0, 1, 9)[1:-1]:
        pts.append(vals[:-1] + t * d)
    mids = (vals[:-1] + vals[1:]) / 2
    pts += [np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), np.nextafter(vals, np.inf),
            np.nextafter(vals, -np.inf)]
    pts.append(np.linspace(-4 * span_hi, 4 * span_hi, 4001))
    pts.append(np.array([np.inf, -np.inf, top * 1.5, -top * 1.5, 0.0, -0.0]))
    x = np.concatenate(pts)
    if isinstance(f, FloatFormat) and not f.signed:
        x = x[x > 0]
    return np.sort(x)


@pytest.mark.parametrize("fmt", ALL, ids=_id)
def test_monotone(fmt):
    f = parse_format(fmt)
    x = _dense_grid(f)
    overflows = ["saturate"]
    if isinstance(f, FloatFormat) and f.specials == "ieee":
        overflows.append("ieee")
    for ovf in overflows:
        for mode in DET_MODES:
            for dtype in (np.float64, np.float32):
                xx = x.astype(dtype)
                y = kernels.quantize(xx, f, rounding=mode, overflow=ovf).astype(np.float64)
                assert not np.isnan(y).any(), (f.name, mode, ovf)
                dec = np.flatnonzero(np.diff(y) < 0)
                assert dec.size == 0, (f.name, mode, ovf, dtype.__name__,
                                       [(xx[i], xx[i + 1], y[i], y[i + 1]) for i in dec[:4]])
