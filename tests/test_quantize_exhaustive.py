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


# float32 formats whose nearest-even rounding from float32 takes the adder kernel (kernels.quantize._q_f32_nearest)
ADDER = ["fp8_e4m3", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "fp8_e5m2", "float8_e5m2fnuz", "float8_e3m4", "fp6_e2m3",
         "fp6_e3m2", "fp4_e2m1", "fp16", "e6m5", "e7m9", "e2m2", FloatFormat(4, 3, bias=12), FloatFormat(3, 4, specials="fn")]


@pytest.mark.parametrize("fmt", ADDER, ids=_id)
def test_adder_kernel_equals_the_significand_kernel(fmt):
    """The nearest-even float32 kernel that rounds by float32's adder equals the kernel that shifts the
    significand (:func:`kernels.quantize._f32_round`) bit for bit: every float32 bit pattern whose low 12
    bits are 0x000, 0x7FF, 0x800 or 0x801 (each binade's ties and their neighbours for every mantissa width,
    as the higher bits run through all 2**20 values: subnormals, overflow, inf, NaN and both signs), and
    2**20 random patterns. (All 2**32 inputs agreed for each format named here by a string when it was written.)"""
    import importlib

    from kernels import _core as C

    q = importlib.import_module("kernels.quantize")
    f = parse_format(fmt)
    hi = np.arange(1 << 20, dtype=np.uint32) << np.uint32(12)
    u = np.concatenate([hi | np.uint32(low) for low in (0, 0x7FF, 0x800, 0x801)]
                       + [np.random.default_rng(7).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)])
    ip, _ = C.encode(f)
    args = (np.int64(f.man), np.int64(f.emin), float(f.max), np.int64(ip[4]))
    ovf = np.int64(q.overflow_code(f, None))
    want, got = np.empty_like(u), np.empty_like(u)
    q._make_q_f32_float(0)(u, want, *args, ovf, np.uint64(0), np.int64(32), np.int64(0), np.int64(f.bias))
    calls, real = [], q._q_f32_nearest
    try:
        q._q_f32_nearest = lambda *a: calls.append(a) or real(*a)
        q._q_f32_float(u, got, *args, np.int64(C.NEAREST), ovf, np.uint64(0), np.int64(32), np.int64(0),
                       np.int64(f.bias))
    finally:
        q._q_f32_nearest = real
    assert len(calls) == 1, "the adder kernel did not run"
    nan = np.isnan(want.view(np.float32)) & np.isnan(got.view(np.float32))
    bad = np.flatnonzero((want != got) & ~nan)
    assert bad.size == 0, (u[bad[:5]].view(np.float32), want[bad[:5]].view(np.float32), got[bad[:5]].view(np.float32))


def test_adder_kernel_takes_only_the_formats_it_rounds():
    """bf16 and tf32 (emax 127: the adder's constant would pass float32's range), fp32 (23 mantissa bits)
    and e3m0 (no mantissa bits: ties go to the even exponent code) keep the significand kernel; they
    still round correctly (the round trip and tie tests above, ml_dtypes in test_quantize_mldtypes.py)."""
    import importlib

    q = importlib.import_module("kernels.quantize")
    calls = []
    real = q._q_f32_nearest
    try:
        q._q_f32_nearest = lambda *a: calls.append(a) or real(*a)
        for name in ("bf16", "tf32", "fp32", "e3m0"):
            x = np.array([1.0, 3.3e38, -2.5e-40, 0.1], np.float32)
            kernels.quantize(x, name)
        assert calls == []
        kernels.quantize(np.array([0.1], np.float32), "fp8_e4m3")
        assert len(calls) == 1
    finally:
        q._q_f32_nearest = real
