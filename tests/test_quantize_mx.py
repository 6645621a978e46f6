"""OCP MX formats (mxfp8_e4m3, mxfp8_e5m2, mxfp6_e2m3, mxfp6_e3m2, mxfp4_e2m1, mxint8) bit-exact against
gfloat 0.5.2's block quantizer: ``quantize_block(format_info_mx*, block, compute_scale_amax, round)``,
which computes the scale ``2**clip(floor(log2(amax)) - emax_elem, -127, 127)`` (OCP MX v1.0 sec. 6.3;
``2**-127`` for an all-zero block), divides, rounds each element with the given mode and saturation,
encodes and decodes. Blocks are 32 consecutive elements along ``axis``; a last partial block is
quantized alone (gfloat is simply called on the shorter slice).

gfloat's own choices that are not compared: a block holding +-inf gets the scale ``2**127`` and the
infinity saturates to ``elem.max * 2**127`` (the rest of the block flushes toward zero); hwsim returns
NaN for the whole block (its documented rule; tested separately).
"""

import numpy as np
import pytest
from gfloat import RoundMode, compute_scale_amax, quantize_block
from gfloat import formats as gf

import kernels
from kernels.formats import FixedFormat, MXFormat, parse_format

GF = {"mxfp8_e4m3": gf.format_info_mxfp8_e4m3, "mxfp8_e5m2": gf.format_info_mxfp8_e5m2,
      "mxfp6_e2m3": gf.format_info_mxfp6_e2m3, "mxfp6_e3m2": gf.format_info_mxfp6_e3m2,
      "mxfp4_e2m1": gf.format_info_mxfp4_e2m1, "mxint8": gf.format_info_mxint8}
GF_MODE = {"nearest": RoundMode.TiesToEven, "nearest_away": RoundMode.TiesToAway,
           "toward_zero": RoundMode.TowardZero, "up": RoundMode.TowardPositive, "down": RoundMode.TowardNegative}
MODES = list(GF_MODE)


def gfloat_mx(x, name, mode, axis=-1, block=32):
    """gfloat's MX quantize-dequantize, block by block along ``axis``."""
    bfi, rnd = GF[name], GF_MODE[mode]
    xm = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(xm)
    for idx in np.ndindex(xm.shape[:-1]):
        row = xm[idx]
        for j in range(0, row.size, block):
            out[idx + (slice(j, j + block),)] = quantize_block(bfi, row[j:j + block], compute_scale_amax, rnd)
    return np.moveaxis(out, -1, axis)


def mx_inputs(name, rng, rows=24, cols=32 * 3 + 7):
    """Rows of blocks with very different magnitudes (2**-125 .. 2**60), exact element ties, zeros,
    -0.0, an all-zero block, a block whose scale clamps at 2**-127, one that clamps at 2**127."""
    f = parse_format(name)
    x = rng.standard_normal((rows, cols)) * np.exp2(rng.uniform(-40, 40, (rows, 1)))
    x[0] *= 2.0**-80  # tiny: scale clamps at 2**-127 for the fp8 formats
    x[1] = 0.0
    x[1, 5] = -0.0  # all-zero block with a negative zero
    # element ties: v = (k + 1/2) * quantum * scale inside a block with a known amax
    e = f.elem
    for r in range(3, 9):
        amax_exp = int(rng.integers(-20, 20))
        scale = 2.0 ** (amax_exp - f.emax_elem)
        blk = slice(32, 64)
        grid = _elem_values(e)
        pos = grid[grid > 0]
        mids = (pos[:-1] + pos[1:]) / 2
        v = rng.choice(mids, 32) * rng.choice([-1, 1], 32)
        v[0] = 2.0**amax_exp / scale * 1.0  # sets amax exactly to 2**amax_exp
        x[r, blk] = v * scale
    x[9, :] = x[9, :] * 0 + rng.choice([-1, 1], cols) * 2.0**-126 * rng.uniform(0, 1, cols)
    x[10, 3] = -0.0
    x = x.astype(np.float32).astype(np.float64)
    x[2, :40] = rng.standard_normal(40) * 2.0**140  # float64 only: the scale clamps at 2**127
    return x


def _elem_values(e):
    if isinstance(e, FixedFormat):
        return np.arange(e.qmin, e.qmax + 1) * 2.0**-e.frac
    import ml_dtypes  # the element value sets, for building ties
    t = {"float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
         "float6_e2m3fn": ml_dtypes.float6_e2m3fn, "float6_e3m2fn": ml_dtypes.float6_e3m2fn,
         "float4_e2m1fn": ml_dtypes.float4_e2m1fn}[e.name]
    with np.errstate(all="ignore"):
        v = np.arange(1 << e.bits, dtype=np.uint8).view(t).astype(np.float64)
    return np.unique(v[np.isfinite(v)])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(GF))
def test_mx_vs_gfloat(name, mode, rng, assert_same):
    x = mx_inputs(name, rng)
    want = gfloat_mx(x, name, mode)
    got = kernels.quantize(x, name, rounding=mode)
    assert got.dtype == np.float64 and got.shape == x.shape
    assert_same(got, want, inputs=x, what=f"{name} {mode} vs gfloat")


@pytest.mark.parametrize("name", list(GF))
def test_mx_float32_input_same(name, rng, assert_same):
    x = np.delete(mx_inputs(name, rng), 2, axis=0)  # row 2 is beyond float32's range
    want = gfloat_mx(x, name, "nearest")
    got = kernels.quantize(x.astype(np.float32), name)
    assert got.dtype == np.float64
    assert_same(got, want, inputs=x, what=f"{name} float32 input")


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp4_e2m1", "mxint8"])
def test_mx_axis(name, rng, assert_same):
    """Blocks run along ``axis``: quantizing along axis 0 equals quantizing the transpose along -1."""
    x = rng.standard_normal((70, 5, 3)) * np.exp2(rng.integers(-10, 10, (1, 5, 3)))
    got = kernels.quantize(x, name, axis=0)
    want = np.moveaxis(gfloat_mx(np.moveaxis(x, 0, -1), name, "nearest"), -1, 0)
    assert_same(got, want, inputs=x, what=f"{name} axis=0")
    got1 = kernels.quantize(x, name, axis=-3)
    assert_same(got1, want, what="axis=-3")
    got2 = kernels.quantize(np.moveaxis(x, 0, 1), name, axis=1)
    assert_same(np.moveaxis(got2, 1, 0), want, what="axis=1 of a moved view")


def test_mx_blocks_are_independent(rng):
    x = rng.standard_normal(96)
    y = x.copy()
    y[40] = 1e6  # block 1 only
    a, b = kernels.quantize(x, "mxfp8_e4m3"), kernels.quantize(y, "mxfp8_e4m3")
    np.testing.assert_array_equal(a[:32], b[:32])
    np.testing.assert_array_equal(a[64:], b[64:])
    assert not np.array_equal(a[32:64], b[32:64])


def test_mx_partial_block_alone(rng):
    """A last partial block is a block of its own (not padded with the next row's values)."""
    x = rng.standard_normal((4, 40))
    got = kernels.quantize(x, "mxfp6_e2m3")
    for r in range(4):
        np.testing.assert_array_equal(got[r, 32:], kernels.quantize(x[r, 32:], "mxfp6_e2m3"))
        np.testing.assert_array_equal(got[r, :32], kernels.quantize(x[r, :32], "mxfp6_e2m3"))


@pytest.mark.parametrize("name", list(GF))
def test_mx_nan_block(name):
    x = np.arange(64, dtype=np.float64)
    x[37] = np.nan
    got = kernels.quantize(x, name)
    assert np.isnan(got[32:]).all()
    assert not np.isnan(got[:32]).any()


@pytest.mark.parametrize("name", list(GF))
def test_mx_inf_block_is_nan(name):
    """hwsim's documented rule (gfloat saturates instead: module docstring)."""
    x = np.arange(64, dtype=np.float64)
    x[3] = -np.inf
    got = kernels.quantize(x, name)
    assert np.isnan(got[:32]).all()
    assert not np.isnan(got[32:]).any()


@pytest.mark.parametrize("name", list(GF))
def test_mx_all_zero_block(name):
    got = kernels.quantize(np.zeros(40), name)
    assert (got == 0).all() and not np.signbit(got).any()


def test_mx_scale_is_ocp(rng):
    """amax 1.9 in e4m3 (emax_elem 8): scale 2**(0 - 8), so 1.0 -> 256 * 2**-8 exactly; 448 * 2**-8 = 1.75
    is the largest element and 1.9 (486.4 scaled) saturates to it (elements saturate, no NaN);
    0.001 -> 0.256 scaled -> 0.25 (quantum 2**-5 in [0.25, 0.5)) -> 2**-10."""
    x = np.array([1.9, 1.0, 0.001, -1.9] + [0.0] * 28)
    got = kernels.quantize(x, "mxfp8_e4m3")
    assert got[0] == 1.75 and got[1] == 1.0 and got[3] == -1.75
    assert got[2] == 2.0**-10


def test_mx_custom_block_size(rng, assert_same):
    """MXFormat(elem, block=k) blocks by k."""
    x = rng.standard_normal(100) * np.exp2(rng.integers(-8, 8, 100))
    fmt = MXFormat(parse_format("fp8_e4m3"), block=10)
    got = kernels.quantize(x, fmt)
    want = gfloat_mx(x, "mxfp8_e4m3", "nearest", block=10)
    assert_same(got, want, inputs=x, what="block=10")


@pytest.mark.parametrize("kw", [dict(overflow="wrap"), dict(overflow="ieee"), dict(axis=2), dict(axis=-3)])
def test_mx_bad_arguments(kw):
    with pytest.raises(ValueError):
        kernels.quantize(np.ones((4, 40)), "mxfp8_e4m3", **kw)
