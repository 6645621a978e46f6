"""kernels.quantize bit-exact against ml_dtypes' casts (``x.astype(t)``) for every ml_dtypes float type
and float16 / bfloat16: every float16 and every bfloat16 bit pattern as input, plus 10**6 float32
values per format (random bit patterns -- NaN, inf, subnormals --, log-uniform magnitudes, and ties
built deliberately: the exact midpoint between every pair of neighbouring values of the target format,
and the float32 values just either side of each midpoint; the overflow boundary likewise).

Results are compared as bit patterns of the float32 output: NaN against NaN (its sign ignored), the
sign of zero counted. Default rounding / overflow are used (``nearest``, and ml_dtypes' own overflow
behaviour is the hwsim default), except E8M0, which ml_dtypes rounds ties away from zero:
``rounding="nearest_away"``.

Needs ml_dtypes >= 0.7.0 (the dev lock pins it). Older releases had two bugs, fixed in 0.7.0, which
the tests no longer work around: the E8M0 cast of float32 *subnormals* ``f * 2**-126`` with
``0.5 < f < 0.75`` gave ``2**-126`` (the nearest E8M0 value is ``2**-127``), and float64 inputs were
rounded twice, through float32. Both cases are compared with ml_dtypes directly, and also pinned by
expected values derived by hand (exact rationals), so the tests hold whether or not an oracle drifts.
"""

import gfloat
import ml_dtypes
import numpy as np
import pytest
from gfloat import Domain, FormatInfo, RoundMode

import kernels
from kernels.formats import parse_format

ML = {
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz,
    "float8_e4m3": ml_dtypes.float8_e4m3,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e3m4": ml_dtypes.float8_e3m4,
    "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
    "float6_e2m3fn": ml_dtypes.float6_e2m3fn,
    "float6_e3m2fn": ml_dtypes.float6_e3m2fn,
    "float4_e2m1fn": ml_dtypes.float4_e2m1fn,
    "bfloat16": ml_dtypes.bfloat16,
    "float16": np.float16,
}
NAMES = list(ML)
TINY = 2.0**-126


def _rounding(name):
    return "nearest_away" if name == "float8_e8m0fnu" else "nearest"


def ml_cast(x, name):
    """ml_dtypes' (numpy's for float16) cast, widened back to float32 (exact)."""
    with np.errstate(all="ignore"):
        return np.asarray(x).astype(ML[name]).astype(np.float32)


def finite_values(name):
    """All finite values of the format, sorted, from ml_dtypes' own decoding of every code."""
    t = ML[name]
    nbits = ml_dtypes.finfo(t).bits
    codes = np.arange(1 << nbits, dtype=np.uint8 if nbits <= 8 else np.uint16)
    with np.errstate(all="ignore"):
        v = codes.view(t).astype(np.float64)
    return np.unique(v[np.isfinite(v)])


def tie_inputs(name):
    """float32 inputs at and around every midpoint between neighbouring values of the format,
    including the midpoint between max and the next value of the unbounded grid (the overflow tie)."""
    v = finite_values(name)
    mids = (v[:-1] + v[1:]) / 2
    if name == "float8_e8m0fnu":
        top = [v[-1] * 1.5, v[-1] * 1.25, v[-1] * 1.75]
    else:
        q = v[-1] - v[-2]
        top = [v[-1] + q / 2, v[-1] + q, v[-1] + q / 4, v[-1] + 3 * q / 4, v[-1] * 2]
    top = np.array(top)
    t = np.concatenate([mids, top, -top])
    t = t[np.abs(t) <= np.finfo(np.float32).max]
    t32 = t.astype(np.float32)
    assert (t32.astype(np.float64) == t).all(), "midpoints must be float32-representable"
    up = np.nextafter(t32, np.float32(np.inf))
    dn = np.nextafter(t32, np.float32(-np.inf))
    return np.concatenate([t32, up, dn, -t32, -up, -dn])


def float32_inputs(name, n=10**6, seed=0):
    rng = np.random.default_rng(seed)
    parts = [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, TINY, -TINY,
                       np.finfo(np.float32).max, np.finfo(np.float32).smallest_subnormal], np.float32),
             np.array([0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FC00001, 0xFFFFFFFF], np.uint32).view(np.float32)]
    ties = tie_inputs(name)
    parts.append(ties)
    n_rest = n - sum(len(p) for p in parts)
    # uniformly random bit patterns: every exponent, NaNs, infinities, subnormals
    parts.append(rng.integers(0, 2**32, n_rest // 3, dtype=np.uint64).astype(np.uint32).view(np.float32))
    # log-uniform magnitudes over the format's range and beyond (underflow and overflow)
    v = finite_values(name)
    pos = v[v > 0]
    lo, hi = np.log2(pos[0]) - 6, min(np.log2(pos[-1]) + 3, 127.9)
    m = n - sum(len(p) for p in parts)
    mags = np.exp2(rng.uniform(lo, hi, m))
    parts.append((mags * rng.choice([-1.0, 1.0], m)).astype(np.float32))
    x = np.concatenate(parts)
    assert len(x) == n
    return x


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src", [np.float16, ml_dtypes.bfloat16], ids=["from_fp16", "from_bf16"])
@pytest.mark.parametrize("name", NAMES)
def test_every_16bit_pattern(name, src, assert_same):
    x = np.arange(1 << 16, dtype=np.uint16).view(src)
    got = kernels.quantize(x, name, rounding=_rounding(name))
    assert got.dtype == np.float32 and got.shape == x.shape
    assert_same(got, ml_cast(x, name), inputs=x, what=f"{name} from every {np.dtype(src).name} pattern")


@pytest.fixture(scope="module", params=NAMES)
def fmt_inputs(request):
    return request.param, float32_inputs(request.param, seed=NAMES.index(request.param))


def test_million_float32(fmt_inputs, assert_same):
    name, x = fmt_inputs
    got = kernels.quantize(x, name, rounding=_rounding(name))
    assert got.dtype == np.float32
    assert_same(got, ml_cast(x, name), inputs=x, what=f"{name}, 10**6 float32")


def test_million_float32_fed_as_float64(fmt_inputs, assert_same):
    """The same values as float64 (they are float32-representable, so ml_dtypes' detour through
    float32 is exact): the float64 path must agree too, and return float64."""
    name, x = fmt_inputs
    x = x[::4]
    got = kernels.quantize(x.astype(np.float64), name, rounding=_rounding(name))
    assert got.dtype == np.float64
    assert_same(got, ml_cast(x, name), inputs=x, what=f"{name}, float32 values as float64")


def test_ties_are_in_the_inputs():
    """Guard on the construction: ties really are exact midpoints (so the tests above see them)."""
    for name in ("float8_e4m3fn", "float4_e2m1fn", "bfloat16", "float8_e8m0fnu"):
        t = tie_inputs(name).astype(np.float64)
        v = finite_values(name)
        i = np.clip(np.searchsorted(v, t), 1, len(v) - 1)
        exact_mid = (t == (v[i - 1] + v[i]) / 2)
        assert exact_mid.sum() >= len(v) - 2


def test_nan_into_formats_without_nan():
    """float6 / float4 have no NaN: ml_dtypes maps a NaN whose sign bit is clear to -0.0 and a NaN whose
    sign bit is set to +0.0 (payload irrelevant); hwsim does the same."""
    nans = np.array([0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0xFFC00000, 0xFF800001, 0xFFFFFFFF], np.uint32).view(np.float32)
    for name in ("float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"):
        want = ml_cast(nans, name)
        assert list(np.signbit(want)) == [True] * 3 + [False] * 3 and (want == 0).all()  # the oracle's behaviour
        got = kernels.quantize(nans, name)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_e8m0_subnormal_inputs_round_correctly():
    """float32 subnormals f * 2**-126 into E8M0 (ties away): the values 2**-127 and 2**-126 have their
    midpoint at 0.75 * 2**-126, so f < 0.75 gives 2**-127 (also below 0.5: E8M0 has no smaller value)
    and f >= 0.75 gives 2**-126. Expected values from that rule, exact in float64; ml_dtypes (< 0.7.0
    gave 2**-126 for 0.5 < f < 0.75) must agree too."""
    f = np.array([0.5, 0.5 + 2**-23, 0.6, 0.7, 0.75 - 2**-23, 0.75, 0.8, 2**-23, 0.25])
    f = np.round(f * 2**23) / 2**23  # float32 subnormals are multiples of 2**-149 = 2**-23 * TINY
    x = (f * TINY).astype(np.float32)
    assert ((x.astype(np.float64) / TINY) == f).all()
    want = np.where(f >= 0.75, 2.0**-126, 2.0**-127)
    got = kernels.quantize(x, "float8_e8m0fnu", rounding="nearest_away")
    np.testing.assert_array_equal(got.astype(np.float64), want)
    np.testing.assert_array_equal(ml_cast(x, "float8_e8m0fnu").astype(np.float64), want)


def _gfloat_info(f):
    nhn = {"ieee": (1 << f.man) - 1, "fn": 1, "fnuz": 0, "none": 0}[f.specials]
    return FormatInfo(f.name, k=f.bits, precision=f.man + 1, bias=f.bias, is_signed=f.signed,
                      domain=Domain.Extended if f.specials == "ieee" else Domain.Finite,
                      has_nz=f.specials != "fnuz", num_high_nans=nhn, has_subnormals=f.subnormals,
                      is_twos_complement=False)


def test_float64_rounds_once():
    """A float64 input is rounded once: 1.0625 + 2**-40 lies above the e4m3 tie 1.0625 (between 1.0 and
    1.125), so it rounds up to 1.125; 1.0625 - 2**-40 rounds down to 1.0. Rounding through float32 first
    (ml_dtypes < 0.7.0) makes the first the tie itself, which rounds to even, 1.0. ml_dtypes >= 0.7.0
    rounds once and must agree."""
    x = np.array([1.0625 + 2**-40, -(1.0625 + 2**-40), 1.0625 - 2**-40], np.float64)
    want = [1.125, -1.125, 1.0]
    got = kernels.quantize(x, "float8_e4m3fn")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ml_cast(x, "float8_e4m3fn"), want)


def near_ties(name, seed):
    """(midpoints between neighbouring values of the format, at most 4096 of them, and offsets 2**-30
    relative to them): mids +- eps are float64 values just off each tie, not float32-representable."""
    v = finite_values(name)
    i = np.arange(len(v) - 1)
    if len(i) > 4096:
        i = np.random.default_rng(seed).choice(i, 4096, replace=False)
    mids = (v[i] + v[i + 1]) / 2
    return mids, np.abs(mids) * 2.0**-30 + 2.0**-160


@pytest.mark.parametrize("name", NAMES)
def test_float64_near_ties_against_mldtypes(name, assert_same):
    """float64 inputs within 2**-30 relative of every tie (not float32-representable) against ml_dtypes'
    own float64 cast, which rounds once since 0.7.0."""
    mids, eps = near_ties(name, seed=2)
    x = np.concatenate([mids + eps, mids - eps, -(mids + eps), -(mids - eps)])
    x = x[np.isfinite(x)]
    assert (x.astype(np.float32).astype(np.float64) != x).mean() > 0.99  # really float64-only values
    got = kernels.quantize(x, name, rounding=_rounding(name))
    assert got.dtype == np.float64
    with np.errstate(all="ignore"):
        want = x.astype(ML[name]).astype(np.float64)
    assert_same(got, want, inputs=x, what=f"{name} float64 near ties vs ml_dtypes")


@pytest.mark.parametrize("name", [n for n in NAMES if n != "float8_e8m0fnu"])
def test_float64_near_ties_against_gfloat(name, assert_same):
    """float64 inputs within 2**-30 relative of every tie (not float32-representable): hwsim against
    gfloat's exact round_ndarray (RNE, no saturation) -- the correct single rounding."""
    f = parse_format(name)
    mids, eps = near_ties(name, seed=1)
    x = np.concatenate([mids + eps, mids - eps, mids])
    x = x[np.isfinite(x)]
    want = gfloat.round_ndarray(_gfloat_info(f), x, RoundMode.TiesToEven, sat=(f.specials == "none"))
    got = kernels.quantize(x, name)
    assert_same(got, want, inputs=x, what=f"{name} float64 near ties")
