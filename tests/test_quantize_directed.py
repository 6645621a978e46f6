"""kernels.quantize bit-exact against APyTypes 0.5.1 and gfloat 0.5.2 in every deterministic rounding
mode (nearest, nearest_away, toward_zero, up, down), for float formats (IEEE-style, fn, fnuz, none)
and integer / fixed-point formats, with saturation, IEEE overflow and two's complement wrap.

Oracle semantics / known oracle defects (found here, worked around, each pinned by a test):

* APyFloatArray.cast(exp_bits, man_bits, bias, quantization): IEEE-style formats (top exponent code =
  inf/NaN), the IEEE overflow rule for directed modes (TO_ZERO, TO_POS for negatives and TO_NEG for
  positives give +-max, otherwise inf). DEFECT: when ``|x|`` is below the smallest normal and the
  correctly rounded result is the smallest normal (a carry out of the subnormal range), it returns
  +-0 instead. Inputs with ``max_subnormal < |x| < min_normal`` are left out of the APyTypes
  comparison (gfloat covers them).
* APyFixedArray.cast(int_bits, frac_bits, quantization, overflow=WRAP): the stored bits
  (``to_bits()``) are the correct wrapped two's complement code, but when the SOURCE array is wider
  than 64 bits, ``to_numpy()`` / ``float()`` of the cast result return the UNWRAPPED value (e.g. 300
  from a 25.40 source -> int8 gives bits 44 but to_numpy 300). Codes are read with ``to_bits()``.
* gfloat.round_ndarray(fi, v, rnd, sat): exact for float64 inputs (works on the significand as an
  exact float64 integer + fraction); formats with subnormals only (it does not flush below min_normal);
  ``sat=False`` raises for formats without inf/NaN, so those use ``sat=True`` (hwsim's default for them).
"""

import apytypes as apy
import numpy as np
import pytest
from gfloat import Domain, FormatInfo, RoundMode, round_ndarray
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.formats import FixedFormat, FloatFormat, parse_format

MODES = ["nearest", "nearest_away", "toward_zero", "up", "down"]
APY_Q = {"nearest": apy.QuantizationMode.RND_CONV, "nearest_away": apy.QuantizationMode.RND_INF,
         "toward_zero": apy.QuantizationMode.TRN_ZERO, "up": apy.QuantizationMode.TRN_INF,
         "down": apy.QuantizationMode.TRN}
APY_FQ = {"nearest": apy.QuantizationMode.TIES_EVEN, "nearest_away": apy.QuantizationMode.TIES_AWAY,
          "toward_zero": apy.QuantizationMode.TO_ZERO, "up": apy.QuantizationMode.TO_POS,
          "down": apy.QuantizationMode.TO_NEG}
GF_MODE = {"nearest": RoundMode.TiesToEven, "nearest_away": RoundMode.TiesToAway,
           "toward_zero": RoundMode.TowardZero, "up": RoundMode.TowardPositive, "down": RoundMode.TowardNegative}


def gfloat_info(f: FloatFormat) -> FormatInfo:
    """gfloat's description of a hwsim FloatFormat (subnormals, a zero and a sign assumed)."""
    assert f.subnormals and f.has_zero and f.signed
    nhn = {"ieee": (1 << f.man) - 1, "fn": 1, "fnuz": 0, "none": 0}[f.specials]
    return FormatInfo(f.name, k=f.bits, precision=f.man + 1, bias=f.bias, is_signed=True,
                      domain=Domain.Extended if f.specials == "ieee" else Domain.Finite,
                      has_nz=f.specials != "fnuz", num_high_nans=nhn, has_subnormals=True,
                      is_twos_complement=False)


def grid_inputs(f: FloatFormat, rng, n=4000):
    """float32-representable values (as float64) around the format: exact values, ties, values one
    float32 ulp off each, log-uniform magnitudes, random bit patterns, overflow, specials."""
    emin, emax, man = f.emin, f.emax, f.man
    e = rng.integers(emin, emax + 1, n)
    m = rng.integers(0, 2**man, n)
    normal = np.ldexp(1.0 + m / 2**man, e)
    tie = np.ldexp(1.0 + (m + 0.5) / 2**man, e)
    sub = np.ldexp((rng.integers(0, 2**man, n) + rng.choice([0.0, 0.5, 0.25, 0.75], n)) / 2**man, emin)
    hi = min(emax + 3, 127.9)
    logu = np.exp2(rng.uniform(emin - man - 5, hi, n))
    q = 2.0 ** (emax - man)
    over = np.array([f.max, f.max + q / 2, f.max + q / 4, f.max + q, f.max * 4, np.inf])
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32).astype(np.float64)
    x = np.concatenate([normal, tie, sub, logu, over, bits, [0.0, 2.0**emin]])
    x = x[~(np.abs(x) > np.finfo(np.float32).max) | np.isinf(x)]
    x = x.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    x = x * rng.choice(np.array([-1.0, 1.0], np.float32), x.size)
    return np.concatenate([x, np.array([-0.0, np.nan], np.float32)]).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# floats against APyTypes (IEEE-style formats)

APY_FLOATS = ["float8_e4m3", "float8_e5m2", "float8_e3m4", "fp16", "bf16", "e3m2", "e6m5", "e2m4", "e5m6",
              FloatFormat(4, 3, bias=4), FloatFormat(5, 2, bias=20)]


def _id(f):
    return f if isinstance(f, str) else f.name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", APY_FLOATS, ids=_id)
def test_float_vs_apytypes(fmt, mode, rng, assert_same):
    f = parse_format(fmt)
    assert f.specials == "ieee"
    x = grid_inputs(f, rng)
    # APyTypes defect: carries from the subnormal range into min_normal come back as 0 (module docstring)
    max_sub = f.min_normal - f.min_subnormal
    x = x[~((np.abs(x) > max_sub) & (np.abs(x) < f.min_normal))]
    a = apy.APyFloatArray.from_array(x, exp_bits=11, man_bits=52)
    want = a.cast(exp_bits=f.exp, man_bits=f.man, bias=f.bias, quantization=APY_FQ[mode]).to_numpy()
    got = kernels.quantize(x, f, rounding=mode)
    assert_same(got, want, inputs=x, what=f"{f.name} {mode} vs APyTypes")
    # the float32 path gives the same (x is float32-representable)
    got32 = kernels.quantize(x.astype(np.float32), f, rounding=mode)
    assert_same(got32, want, inputs=x, what=f"{f.name} {mode} (float32 input) vs APyTypes")


def test_apytypes_subnormal_carry_defect_is_real():
    """Pins the excluded APyTypes defect, and that hwsim (and gfloat) give min_normal there."""
    x = np.array([0.0155, -0.0155])  # e4m3 (ieee): max subnormal 0.013671875 < |x| < min normal 0.015625
    a = apy.APyFloatArray.from_array(x, exp_bits=11, man_bits=52)
    assert (a.cast(exp_bits=4, man_bits=3, quantization=APY_FQ["nearest"]).to_numpy() == 0).all()
    f = parse_format("float8_e4m3")
    want = round_ndarray(gfloat_info(f), x, RoundMode.TiesToEven)
    np.testing.assert_array_equal(want, [0.015625, -0.015625])
    np.testing.assert_array_equal(kernels.quantize(x, f), want)


# ------------------------------------------------------------------------------------------------
# floats against gfloat (every specials convention, saturation and IEEE overflow)

GF_FLOATS = ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e4m3", "float8_e5m2",
             "float8_e5m2fnuz", "float8_e3m4", "float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn", "bf16",
             "fp16", "e3m2", FloatFormat(3, 2, specials="none"), FloatFormat(5, 3, specials="fn"),
             FloatFormat(4, 2, bias=3, specials="fnuz"), FloatFormat(2, 2, specials="none"),
             FloatFormat(1, 3, specials="none"), FloatFormat(6, 9, specials="fn")]


@pytest.mark.parametrize("overflow", ["default", "saturate"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", GF_FLOATS, ids=_id)
def test_float_vs_gfloat(fmt, mode, overflow, rng, assert_same):
    f = parse_format(fmt)
    x = grid_inputs(f, rng, n=2000)
    if f.specials == "none":  # gfloat gives NaN; hwsim follows ml_dtypes (tested in test_quantize_mldtypes)
        x = x[~np.isnan(x)]
    sat = overflow == "saturate" or f.specials == "none"
    want = round_ndarray(gfloat_info(f), x, GF_MODE[mode], sat=sat)
    got = kernels.quantize(x, f, rounding=mode, overflow="saturate" if overflow == "saturate" else None)
    assert_same(got, want, inputs=x, what=f"{f.name} {mode} overflow={overflow} vs gfloat")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(x=st.floats(allow_nan=False, allow_infinity=True, width=64),
       mode=st.sampled_from(MODES),
       fmt=st.sampled_from(["float8_e4m3fn", "float8_e5m2", "float6_e3m2fn", "bf16", "fp16", "e4m10", "e7m6"]))
def test_float64_any_value_vs_gfloat(x, mode, fmt):
    """Arbitrary float64 values (not float32-representable in general): one exact rounding."""
    f = parse_format(fmt)
    want = round_ndarray(gfloat_info(f), np.array([x]), GF_MODE[mode], sat=f.specials == "none")[0]
    got = kernels.quantize(np.array([x]), f, rounding=mode)[0]
    assert (got == want and np.signbit(got) == np.signbit(want)) or (np.isnan(got) and np.isnan(want)), (x, got, want)


# ------------------------------------------------------------------------------------------------
# integer / fixed point against APyTypes APyFixed


def apy_fixed(x, f: FixedFormat, mode, overflow):
    """APyFixed cast of the exact inputs (multiples of 2**-40, |x| < 2**12) into ``f``; the code is read
    from the stored bits (to_numpy does not wrap: module docstring). Unsigned formats: a signed
    format one bit wider, then clamped (saturate) or reduced mod 2**bits (wrap)."""
    W = f.bits + (0 if f.signed else 1)
    a = apy.APyFixedArray.from_array(x, int_bits=24, frac_bits=40)
    assert (a.to_numpy() == x).all()
    ovf = apy.OverflowMode.SAT if overflow == "saturate" else apy.OverflowMode.WRAP
    r = a.cast(int_bits=W - f.frac, frac_bits=f.frac, quantization=APY_Q[mode], overflow=ovf)
    b = np.asarray(r.to_bits(), dtype=np.int64)
    k = np.where(b >= 2 ** (W - 1), b - 2**W, b)
    if not f.signed:
        k = np.clip(k, 0, 2**f.bits - 1) if overflow == "saturate" else np.mod(k, 2**f.bits)
    return np.ldexp(k.astype(np.float64), -f.frac)


FIXED = ["int2", "int4", "int8", "int16", "fixed8.4", "fixed8.7", "fixed16.8", "fixed12.-2", "fixed6.8",
         "uint1", "uint4", "uint8", "ufixed8.4", "ufixed10.12"]


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FIXED)
def test_fixed_vs_apytypes(fmt, mode, overflow, rng, assert_same):
    f = parse_format(fmt)
    q = 2.0**-f.frac
    n = 3000
    span = (f.qmax - f.qmin + 1) * q
    k = rng.integers(f.qmin - 40, f.qmax + 40, n)
    x = np.concatenate([rng.uniform(f.min - 3 * span, f.max + 3 * span, n),  # several wraps
                        (k + 0.5) * q, k * q, (k + 0.25) * q, (k + 0.75) * q,
                        np.exp2(rng.uniform(-f.frac - 12, np.log2(f.max + 1) + 2, n)) * rng.choice([-1, 1], n),
                        [0.0, -0.0, q / 2, -q / 2, f.max + q / 2, f.min - q / 2]])
    x = np.clip(x, -(2.0**12) + 1, 2.0**12 - 1)
    x = np.round(x * 2.0**40) / 2.0**40  # exact in APyFixed(int 24, frac 40) and in float64
    want = apy_fixed(x, f, mode, overflow)
    got = kernels.quantize(x, f, rounding=mode, overflow=overflow)
    assert_same(got, want, inputs=x, what=f"{f.name} {mode} {overflow} vs APyFixed")  # +0.0 only: zero sign counted
    got32 = kernels.quantize(x.astype(np.float32), f, rounding=mode, overflow=overflow)
    keep = x.astype(np.float32).astype(np.float64) == x
    assert_same(got32[keep], want[keep], inputs=x[keep], what=f"{f.name} {mode} {overflow} float32 in")


def test_apytypes_wrap_to_numpy_defect_is_real():
    a = apy.APyFixedArray.from_array(np.array([300.0]), int_bits=25, frac_bits=40)  # 65-bit source
    r = a.cast(int_bits=8, frac_bits=0, quantization=apy.QuantizationMode.RND_CONV, overflow=apy.OverflowMode.WRAP)
    assert list(np.asarray(r.to_bits())) == [44] and r.to_numpy()[0] == 300.0
    assert kernels.quantize(np.array([300.0]), "int8", overflow="wrap")[0] == 44.0


@pytest.mark.parametrize("fmt", ["int8", "fixed8.4", "uint8"])
def test_wrap_rejects_inf(fmt):
    with pytest.raises(ValueError):
        kernels.quantize(np.array([1.0, np.inf]), fmt, overflow="wrap")


@pytest.mark.parametrize("fmt", ["int8", "fixed8.4", "uint4"])
def test_fixed_saturates_inf(fmt):
    f = parse_format(fmt)
    np.testing.assert_array_equal(kernels.quantize(np.array([np.inf, -np.inf]), f), [f.max, f.min])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["float8_e4m3", "float8_e5m2", "fp16", "bf16"])
def test_inf_input_stays_inf(fmt, mode, dtype):
    """IEEE: converting an infinity is exact in every rounding direction (no overflow): +-inf -> +-inf.
    (The +-max rule of the directed modes is for finite values beyond max.)"""
    got = kernels.quantize(np.array([np.inf, -np.inf], dtype), fmt, rounding=mode)
    np.testing.assert_array_equal(got, [np.inf, -np.inf])


@pytest.mark.parametrize("mode, x, want", [("toward_zero", 1e6, 448.0), ("toward_zero", -1e6, -448.0),
                                           ("up", -1e6, -448.0), ("down", 1e6, 448.0),
                                           ("toward_zero", 480.0, 448.0)])
def test_directed_overflow_in_fn_format(mode, x, want):
    """e4m3fn, overflow='ieee' (the default): a directed mode that rounds toward the finite range gives
    +-max, as gfloat does and as IEEE 754 7.4 prescribes for the rounding directions that never round
    past max; only the modes rounding away give the overflow value (NaN: the format has no inf)."""
    assert kernels.quantize(np.array([x]), "float8_e4m3fn", rounding=mode)[0] == want
    assert kernels.quantize(np.array([x], np.float32), "float8_e4m3fn", rounding=mode)[0] == want
