"""kernels.formats: parse_format, format attributes against ml_dtypes.finfo / gfloat / the definitions,
error messages; and the input-handling contract of kernels.quantize (errors, dtypes, shapes)."""

import math

import gfloat.formats as gf
import ml_dtypes
import numpy as np
import pytest

import kernels
from kernels.formats import E8M0, FixedFormat, FloatFormat, MXFormat, parse_format

# hwsim name -> ml_dtypes / numpy dtype
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
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "fp32": np.float32,
}


# --------------------------------------------------------------------------------------------
# parse_format


@pytest.mark.parametrize(
    "name, want",
    [
        ("int8", FixedFormat(8, 0)),
        ("int2", FixedFormat(2, 0)),
        ("int32", FixedFormat(32, 0)),
        ("uint1", FixedFormat(1, 0, signed=False)),
        ("uint8", FixedFormat(8, 0, signed=False)),
        ("fixed16.8", FixedFormat(16, 8)),
        ("fixed8.-2", FixedFormat(8, -2)),
        ("ufixed8.8", FixedFormat(8, 8, signed=False)),
        ("e4m3", FloatFormat(4, 3)),  # the generic form is IEEE-style, not OCP e4m3fn
        ("e5m10", FloatFormat(5, 10)),
        ("e8m0", E8M0),
        ("fp8_e4m3", FloatFormat(4, 3, specials="fn")),
        ("float8_e4m3fn", FloatFormat(4, 3, specials="fn")),
        ("float8_e4m3fnuz", FloatFormat(4, 3, bias=8, specials="fnuz")),
        ("float8_e4m3b11fnuz", FloatFormat(4, 3, bias=11, specials="fnuz")),
        ("fp8_e5m2", FloatFormat(5, 2)),
        ("float8_e5m2fnuz", FloatFormat(5, 2, bias=16, specials="fnuz")),
        ("float8_e3m4", FloatFormat(3, 4)),
        ("fp6_e2m3", FloatFormat(2, 3, specials="none")),
        ("float6_e3m2fn", FloatFormat(3, 2, specials="none")),
        ("fp4_e2m1", FloatFormat(2, 1, specials="none")),
        ("bfloat16", FloatFormat(8, 7)),
        ("half", FloatFormat(5, 10)),
        ("float32", FloatFormat(8, 23)),
        ("fp64", FloatFormat(11, 52)),
        ("  INT8 ", FixedFormat(8, 0)),
        ("BF16", FloatFormat(8, 7)),
    ],
)
def test_parse_format_names(name, want):
    got = parse_format(name)
    assert got == want
    assert type(got) is type(want)


def test_parse_format_passes_objects_through():
    for f in (FloatFormat(3, 3), FixedFormat(12, 4), parse_format("mxfp4_e2m1")):
        assert parse_format(f) is f


def test_default_names():
    assert parse_format("e4m3").name == "e4m3"
    assert parse_format("int8").name == "int8"
    assert parse_format("uint4").name == "uint4"
    assert parse_format("fixed16.8").name == "fixed16.8"
    assert FloatFormat(4, 3, specials="fn").name == "e4m3(specials=fn)"


@pytest.mark.parametrize(
    "name",
    ["int1", "int33", "uint0", "uint33", "int0", "e0m3", "e12m3", "e4m53", "fixed8.65",
     "fixed40.2", "float8", "foo", "", "fp8_e4m3x", "mxfp9", "e4m", "int-8", "fixed8", "e4m3fn"],
)
def test_parse_format_rejects_with_valid_forms(name):
    with pytest.raises(ValueError) as ei:
        parse_format(name)
    msg = str(ei.value)
    assert repr(name) in msg, f"message does not name the input: {msg}"
    assert "valid" in msg.lower(), f"message does not give the valid forms: {msg}"


def test_parse_format_e1_ieee_message():
    # E=1 has no finite normal exponent with IEEE specials; the message names the input and the fix
    with pytest.raises(ValueError) as ei:
        parse_format("e1m3")
    assert "'e1m3'" in str(ei.value) and "exp >= 2" in str(ei.value)


@pytest.mark.parametrize("obj", [8, 3.5, None, np.float32, ("e", 4)])
def test_parse_format_rejects_non_strings(obj):
    with pytest.raises(ValueError) as ei:
        parse_format(obj)
    assert repr(obj) in str(ei.value)


@pytest.mark.parametrize(
    "ctor",
    [lambda: FloatFormat(4, 3, specials="bogus"), lambda: FloatFormat(1, 3),
     lambda: FloatFormat(4, 3, specials="fnuz", signed=False), lambda: FloatFormat(8, 1, has_zero=False),
     lambda: FloatFormat(11, 52, bias=0), lambda: FixedFormat(1, 0), lambda: FixedFormat(8, 65),
     lambda: MXFormat(FixedFormat(8, 6), 0), lambda: MXFormat("int8")],
)
def test_impossible_format_objects(ctor):
    with pytest.raises(ValueError):
        ctor()


# --------------------------------------------------------------------------------------------
# Attributes against ml_dtypes.finfo and the value sets ml_dtypes decodes


@pytest.mark.parametrize("name", sorted(ML))
def test_float_attributes_match_ml_dtypes_finfo(name):
    f, t = parse_format(name), ML[name]
    fi = ml_dtypes.finfo(t)
    assert f.kind == "float"
    assert f.bits == fi.bits
    assert f.exp == fi.nexp
    assert f.man == fi.nmant
    assert f.max == float(fi.max)
    assert f.min_normal == float(fi.smallest_normal)
    assert f.emin == fi.minexp
    assert f.emax == fi.maxexp - 1
    if name == "float8_e8m0fnu":
        assert f.min_subnormal is None and f.min_positive == 2.0**-127
    else:
        assert f.min_subnormal == float(fi.smallest_subnormal)
    assert f.fits_float32
    with np.errstate(all="ignore"):
        probe = np.array([np.inf, np.nan, -0.0], np.float32).astype(t).astype(np.float64)
    assert f.has_inf == bool(np.isinf(probe[0]))
    assert f.has_nan == bool(np.isnan(probe[1]))
    if name != "float8_e8m0fnu":  # e8m0 maps -0 to NaN
        assert f.has_negative_zero == bool(probe[2] == 0 and np.signbit(probe[2]))


@pytest.mark.parametrize("name", [n for n in sorted(ML) if n not in ("fp32",)])
def test_value_set_matches_ml_dtypes(name, all_codes):
    """Decoding every code from the FloatFormat fields gives exactly ml_dtypes' values, code by code."""
    f, t = parse_format(name), ML[name]
    codes, vals, _ = all_codes(f)
    raw = codes.astype(np.uint8 if f.bits <= 8 else np.uint16)
    with np.errstate(all="ignore"):
        ref = raw.view(t).astype(np.float64)
    same = (vals == ref) & (np.signbit(vals) == np.signbit(ref)) | (np.isnan(vals) & np.isnan(ref))
    assert same.all(), (codes[~same][:8], vals[~same][:8], ref[~same][:8])


OCP = [("float8_e5m2", gf.format_info_ocp_e5m2), ("float8_e4m3fn", gf.format_info_ocp_e4m3),
       ("float6_e2m3fn", gf.format_info_ocp_e2m3), ("float6_e3m2fn", gf.format_info_ocp_e3m2),
       ("float4_e2m1fn", gf.format_info_ocp_e2m1), ("float8_e8m0fnu", gf.format_info_ocp_e8m0),
       ("fp16", gf.format_info_binary16), ("bf16", gf.format_info_bfloat16), ("fp32", gf.format_info_binary32)]


@pytest.mark.parametrize("name, gi", OCP, ids=[n for n, _ in OCP])
def test_float_attributes_match_gfloat(name, gi):
    f = parse_format(name)
    assert f.bits == gi.k
    assert f.man == gi.tSignificandBits
    assert f.bias == gi.bias
    assert f.max == gi.max
    assert f.emax == gi.emax
    assert f.subnormals == gi.has_subnormals
    assert f.has_inf == (gi.num_infs > 0)
    assert f.has_nan == (gi.num_nans > 0)


@pytest.mark.parametrize(
    "name, gi",
    [("mxfp8_e4m3", gf.format_info_mxfp8_e4m3), ("mxfp8_e5m2", gf.format_info_mxfp8_e5m2),
     ("mxfp6_e2m3", gf.format_info_mxfp6_e2m3), ("mxfp6_e3m2", gf.format_info_mxfp6_e3m2),
     ("mxfp4_e2m1", gf.format_info_mxfp4_e2m1), ("mxint8", gf.format_info_mxint8)],
)
def test_mx_attributes_match_gfloat(name, gi):
    f = parse_format(name)
    assert f.kind == "mx"
    assert f.block == gi.k == 32
    assert f.bits == gi.etype.k
    assert f.emax_elem == gi.etype.emax  # exponent of the element format's largest power of two
    assert f.elem.max == gi.etype.max
    assert f.scale_format == E8M0 and E8M0.max == gi.stype.max and E8M0.min_normal == gi.stype.min
    assert f.bits_per_element == gi.etype.k + 8 / 32
    assert not f.fits_float32


@pytest.mark.parametrize("bits, frac, signed", [(8, 0, True), (8, 4, True), (16, 8, True), (4, -2, True),
                                                 (8, 0, False), (1, 0, False), (8, 10, True), (32, 0, True)])
def test_fixed_attributes(bits, frac, signed):
    f = FixedFormat(bits, frac, signed=signed)
    qmin = -(2 ** (bits - 1)) if signed else 0
    qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    assert (f.qmin, f.qmax) == (qmin, qmax)
    assert f.max == qmax * 2.0**-frac and f.min == qmin * 2.0**-frac
    assert f.min_subnormal == f.min_normal == 2.0**-frac
    assert f.kind == ("int" if frac == 0 else "fixed")
    assert f.fits_float32 == ((bits - signed) <= 24)


def test_fits_float32():
    assert parse_format("fp32").fits_float32 and parse_format("tf32").fits_float32
    assert not parse_format("fp64").fits_float32
    assert not FloatFormat(9, 3).fits_float32  # emax 256
    assert not FloatFormat(8, 24).fits_float32
    assert FloatFormat(8, 3, bias=147).fits_float32  # min subnormal 2**-149: float32's
    assert not FloatFormat(8, 3, bias=148).fits_float32  # min subnormal 2**-150


# --------------------------------------------------------------------------------------------
# kernels.quantize: the input-handling contract


@pytest.mark.parametrize("kw", [dict(rounding="nearest_even"), dict(rounding="stoch"), dict(rounding="Nearest "),
                                dict(overflow="clamp"), dict(overflow="inf")])
def test_quantize_rejects_unknown_modes(kw):
    bad = next(iter(kw.values()))
    with pytest.raises(ValueError) as ei:
        kernels.quantize(np.ones(3, np.float32), "float8_e4m3fn", **kw)
    assert repr(bad) in str(ei.value) or str(bad) in str(ei.value)


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "bf16", "float4_e2m1fn", "e3m3"])
def test_quantize_rejects_wrap_on_floats(fmt):
    with pytest.raises(ValueError):
        kernels.quantize(np.ones(3, np.float32), fmt, overflow="wrap")


@pytest.mark.parametrize("rb", [0, 33, -1])
def test_quantize_rejects_bad_rand_bits(rb):
    with pytest.raises(ValueError):
        kernels.quantize(np.ones(3, np.float32), "int8", rounding="stochastic", seed=1, rand_bits=rb)


def test_quantize_rejects_unknown_format():
    with pytest.raises(ValueError, match="valid"):
        kernels.quantize(np.ones(3, np.float32), "float7_e3m3")


@pytest.mark.parametrize("fmt", ["int8", "uint4", "fixed16.8"])
def test_quantize_nan_into_integer_raises(fmt):
    with pytest.raises(ValueError):
        kernels.quantize(np.array([1.0, np.nan], np.float32), fmt)


@pytest.mark.parametrize(
    "dtype, fmt, want",
    [(np.float32, "float8_e4m3fn", np.float32), (np.float64, "float8_e4m3fn", np.float64),
     (np.float16, "float8_e5m2", np.float32), (ml_dtypes.bfloat16, "int8", np.float32),
     (np.int32, "int8", np.float32), (np.float32, "fp64", np.float64), (np.float32, "int32", np.float64),
     (np.float32, "mxfp8_e4m3", np.float64), (np.float64, "bf16", np.float64)],
)
def test_quantize_output_dtype(dtype, fmt, want):
    x = np.arange(-3, 4).astype(dtype)
    assert kernels.quantize(x, fmt).dtype == want


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5, 2)])
@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "int8", "mxfp4_e2m1"])
def test_quantize_empty(shape, fmt):
    y = kernels.quantize(np.zeros(shape, np.float32), fmt)
    assert y.shape == shape


@pytest.mark.parametrize("fmt, want", [("float8_e4m3fn", 1.25), ("int8", 1.0), ("fixed8.2", 1.25), ("float4_e2m1fn", 1.5)])
def test_quantize_zero_d(fmt, want):
    y = kernels.quantize(np.array(1.3, np.float32), fmt)
    assert np.shape(y) == () and float(y) == want


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16])
@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float8_e5m2", "int4", "uint8", "fixed8.2", "bf16"])
def test_quantize_integer_dtypes(dtype, fmt):
    info = np.iinfo(dtype)
    x = np.arange(max(info.min, -300), min(info.max, 300) + 1).astype(dtype)
    want = kernels.quantize(x.astype(np.float64), fmt)
    got = kernels.quantize(x, fmt)
    np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("fmt, rounding", [("float8_e4m3fn", "nearest"), ("int8", "toward_zero"),
                                           ("fixed16.8", "up"), ("float6_e3m2fn", "down"),
                                           ("mxfp6_e2m3", "nearest"), ("bf16", "nearest_away")])
def test_quantize_non_contiguous(fmt, rounding, rng):
    base = (rng.standard_normal((64, 96)) * 4).astype(np.float32)
    for view in (base[::2, ::3], base.T, base[:, ::-1], base[5:40, 7:90:5], np.asfortranarray(base)):
        got = kernels.quantize(view, fmt, rounding=rounding)
        want = kernels.quantize(np.ascontiguousarray(view), fmt, rounding=rounding)
        assert got.shape == view.shape
        np.testing.assert_array_equal(got, want)


def test_quantize_does_not_modify_input(rng):
    x = rng.standard_normal(1000).astype(np.float32)
    x0 = x.copy()
    kernels.quantize(x, "float4_e2m1fn")
    kernels.quantize(x, "int8", rounding="stochastic", seed=3)
    np.testing.assert_array_equal(x, x0)


def test_quantize_format_object_same_as_name(rng):
    x = (rng.standard_normal(1000) * 100).astype(np.float32)
    for name in ("float8_e4m3fn", "int8", "fixed12.4", "mxfp8_e5m2"):
        np.testing.assert_array_equal(kernels.quantize(x, name), kernels.quantize(x, parse_format(name)))


def test_quantize_keeps_shape(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for fmt in ("float8_e5m2", "uint3", "mxint8"):
        assert kernels.quantize(x, fmt).shape == x.shape


def test_encoded_parameters_are_the_callers_own():
    """``kernels._core.encode`` works each format out once; what it returns are copies, so a caller that
    changes them (a test forcing a flag, say) changes nothing for the next one."""
    from kernels import _core as C

    f = parse_format("fp8_e4m3")
    ip, fp = C.encode(f)
    want = (ip.copy(), fp.copy())
    ip[:] = -1
    fp[:] = np.nan
    again = C.encode(f)
    assert np.array_equal(again[0], want[0]) and np.array_equal(again[1], want[1])
    with pytest.raises(TypeError, match="cannot encode"):
        C.encode("fp8_e4m3")
