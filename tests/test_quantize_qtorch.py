"""kernels.quantize bit-exact against qtorch 0.3.0 (CPU extension, quant_cpu/*.cpp).

What qtorch computes, read from its source and confirmed by the tests below:

``float_quantize(x, exp=E, man=M, rounding="nearest")`` (float32 in, float32 out):

* rounding is round-half-AWAY-from-zero, not ties-to-even: ``round_bitwise`` adds half an ulp
  (``1 << (22 - M)``) to the float32 bit pattern and truncates the low ``23 - M`` bits, i.e. it rounds
  the magnitude half-up. -> hwsim ``rounding="nearest_away"``.
* exponent range: ``min_exp = 2 - 2**(E-1)`` = ``1 - bias`` with the usual ``bias = 2**(E-1) - 1``;
  no code is reserved for inf/NaN: the largest exponent is ``2**(E-1)`` = ``bias + 1`` (clip_exponent:
  ``max_exponent_store = 2**(E-1) + 127``), so ``max = 2**(bias+1) * (2 - 2**-M)``
  -> hwsim ``FloatFormat(E, M, specials="none")`` (subnormals on).
* overflow (E < 8): a result whose exponent exceeds the maximum is replaced by ``+-max`` (the sign of
  the input); +-inf inputs therefore give +-max -> ``overflow="saturate"``. (NaN also becomes +-max:
  not compared; hwsim's float formats without NaN follow ml_dtypes there.)
* E = 8: nothing is clipped (``max_exponent_store`` = 255): the exponent range is float32's, results
  that round past float32's max become +-inf, infs stay inf, NaN stays NaN
  -> hwsim ``FloatFormat(8, M)`` with IEEE specials and ``overflow="ieee"``.
* subnormals (``|x| < 2**min_exp``): ``s = sign(x) * 2**min_exp``; ``((x + s) rounded) - s``, where the
  float32 addition ``x + s`` itself rounds (to nearest even) onto multiples of ``2**(min_exp - 23)``
  before the half-away rounding onto multiples of ``2**(min_exp - M)``: a DOUBLE rounding. A value
  just below a tie can become the tie and round away. Inputs in that range are therefore snapped to
  multiples of ``2**(min_exp - 23)`` for the bit-exact comparison (then the addition is exact);
  ``test_float_subnormal_double_rounding`` pins the difference (hwsim rounds once, correctly).
* the subnormal path returns ``(x + s) - s``, which is +0.0 for -0.0 and for negative values that
  round to zero: qtorch loses the sign of zero; hwsim keeps -0.0 (the format has one). Zeros are
  compared by value.

``fixed_point_quantize(x, wl, fl, clamp=True, symmetric=False, rounding="nearest")``: ``ldexp(x, fl)``,
``nearbyint(a + 0.5 - 0.5)`` (round half to EVEN under the default FE_TONEAREST mode; the float
``a + 0.5`` is exact for the magnitudes that are not clamped anyway), ``ldexp(., -fl)``, then
clamped to ``[-2**(wl-fl-1), 2**(wl-fl-1) - 2**-fl]``: two's complement ``wl``-bit codes with ``fl``
fractional bits, saturating -> hwsim ``FixedFormat(wl, fl)``, ``nearest``, ``saturate``. Negative values
rounding to zero give -0.0 in qtorch (nearbyint keeps the sign); hwsim gives +0.0 (no -0 in fixed
point): zeros compared by value. (``symmetric=True`` drops the most negative code: no hwsim equivalent.)

``block_quantize(x, wl, dim, rounding="nearest")``: block floating point with one shared exponent per
block; a "block" is every element with the same index along ``dim`` (dim=0: each ``x[i, ...]``), and
``dim=-1`` means the WHOLE tensor is one block (not the last axis). With ``E = floor(log2(amax))`` of
the block, the quantum is ``q = 2**(E + 2 - wl)``; ``x + 6*2**E`` is formed in float32 (RNE onto
multiples of ``2**(E-21)``: a first rounding), then rounded at ``q`` half-UP (ties toward +inf, since
the biased value is positive; so -q/2 -> 0 but +q/2 -> q), and the result is clipped SYMMETRICALLY
to ``+-(2**(E+1) - q)``, i.e. integer codes ``k`` in ``[-(2**(wl-1) - 1), 2**(wl-1) - 1]``. This is
an MX-style block format with a fixed-point element ``FixedFormat(wl, wl - 2)`` (emax_elem 0, scale
``2**E`` = OCP's ``2**(floor(log2 amax) - emax_elem)``), block = the whole slice, except: (1) ties
toward +inf (hwsim has no such rounding mode), (2) the symmetric clip (hwsim's element includes
``-2**(wl-1)``), (3) the float32 pre-rounding. Expressed through kernels as
``MXFormat(FixedFormat(wl, wl - 2), block=<slice size>)`` it matches away from ties / the most
negative code (tested); with the symmetric element ``FixedFormat(wl, wl - 2, symmetric=True)`` and
``rounding="half_up"`` it is bit-exact (tested, on inputs the float32 pre-rounding leaves unchanged).
"""

import math

import numpy as np
import pytest
import qtorch  # noqa: F401  (the oracle must be installed: fail, do not skip)
import torch
from gfloat import Domain, FormatInfo, RoundMode, round_ndarray
from qtorch.quant import block_quantize, fixed_point_quantize, float_quantize

import kernels
from kernels.formats import FixedFormat, FloatFormat, MXFormat

F32MAX = float(np.finfo(np.float32).max)


def qfloat(x, e, m):
    return float_quantize(torch.from_numpy(np.ascontiguousarray(x, np.float32)), e, m, rounding="nearest").numpy()


def hw_float_format(e, m):
    return FloatFormat(e, m) if e == 8 else FloatFormat(e, m, specials="none")


def hw_float(x, e, m):
    return kernels.quantize(x, hw_float_format(e, m), rounding="nearest_away",
                            overflow="ieee" if e == 8 else "saturate")


def float_inputs(e, m, n=6000, seed=0):
    """float32 inputs across the format's range: log-uniform magnitudes (underflow to overflow),
    exact ties of the grid (normal and subnormal binades, and the overflow tie), random bit patterns,
    signed zeros, infinities; subnormal-range inputs snapped as explained in the module docstring."""
    rng = np.random.default_rng(seed + 100 * e + m)
    bias = 2 ** (e - 1) - 1
    emin = 1 - bias
    emax = 127 if e == 8 else bias + 1
    parts = []
    lo, hi = emin - m - 4, min(emax + 3, 127.99)
    parts.append(np.exp2(rng.uniform(lo, hi, n)))
    # ties: normal binades and subnormals
    ee = rng.integers(emin, emax + 1, n)
    mm = rng.integers(0, 2**m, n)
    parts.append(np.ldexp(1.0 + (mm + 0.5) / 2**m, ee))
    parts.append(np.ldexp((rng.integers(0, 2**m, 200) + 0.5) / 2**m, emin))
    mx = math.ldexp(2.0 - 2.0**-m, emax)
    parts.append(np.array([mx, mx + 2.0 ** (emax - m - 1), mx + 2.0 ** (emax - m), 2.0**emin, np.inf, 0.0]))
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32).astype(np.float64)
    parts.append(bits[np.isfinite(bits)])
    x = np.concatenate(parts)
    x = x[np.abs(x) <= F32MAX]
    x = x * rng.choice([-1.0, 1.0], x.size)
    x = np.concatenate([x, [-0.0, -np.inf]]).astype(np.float32).astype(np.float64)
    # snap the subnormal range to multiples of 2**(emin - 23) (qtorch's float32 add is then exact)
    sub = np.abs(x) < 2.0**emin
    g = 2.0 ** (emin - 23)
    x[sub] = np.copysign(np.round(x[sub] / g) * g, x[sub])
    x32 = x.astype(np.float32)
    assert (x32.astype(np.float64) == x)[np.isfinite(x)].all()
    return x32


@pytest.mark.parametrize("m", range(1, 11))
@pytest.mark.parametrize("e", range(2, 9))
def test_float_quantize_nearest(e, m, assert_same):
    x = float_inputs(e, m)
    want = qfloat(x, e, m)
    got = hw_float(x, e, m)
    assert got.dtype == np.float32
    assert_same(got, want, inputs=x, zero_sign=False, what=f"qtorch float_quantize e{e}m{m}")


def test_float_quantize_is_ties_away_not_even():
    """The oracle's rounding, pinned: 1.0625 is the e5m3 tie between 1.0 (even) and 1.125."""
    x = np.array([1.0625, -1.0625, 1.1875, 2.0**-14 * 1.5 / 8], np.float32)
    np.testing.assert_array_equal(qfloat(x, 5, 3), [1.125, -1.125, 1.25, 2.0**-14 * 2 / 8])
    np.testing.assert_array_equal(hw_float(x, 5, 3), [1.125, -1.125, 1.25, 2.0**-14 * 2 / 8])


def test_float_quantize_saturation_and_range():
    """E<8: max = 2**(bias+1) * (2 - 2**-M) (no code kept for inf), +-inf -> +-max; E=8: inf."""
    x = np.array([1e30, -1e30, np.inf, -np.inf, 122880.0, 126976.0], np.float32)
    want = [122880.0, -122880.0, 122880.0, -122880.0, 122880.0, 122880.0]
    np.testing.assert_array_equal(qfloat(x, 5, 3), want)
    np.testing.assert_array_equal(hw_float(x, 5, 3), want)
    big = np.array([F32MAX, np.inf, -F32MAX], np.float32)
    np.testing.assert_array_equal(qfloat(big, 8, 3), [np.inf, np.inf, -np.inf])
    np.testing.assert_array_equal(hw_float(big, 8, 3), [np.inf, np.inf, -np.inf])


def test_float_subnormal_double_rounding():
    """x = 1.5 * 2**-16 - 2**-39 lies just below the e5m2 subnormal tie 1.5 * 2**-16 (quantum 2**-16).
    qtorch adds 2**-14 in float32 first, which rounds x onto the tie, then rounds the tie away: 2**-15.
    The correct half-away rounding of x is 2**-16 (gfloat agrees); hwsim gives that."""
    x = np.array([1.5 * 2.0**-16 - 2.0**-39, -(1.5 * 2.0**-16 - 2.0**-39)], np.float32)
    assert x[0] == 1.5 * 2.0**-16 - 2.0**-39
    assert qfloat(x, 5, 2)[0] == 2.0**-15  # the oracle's double rounding
    fi = FormatInfo("e5m2n", k=8, precision=3, bias=15, is_signed=True, domain=Domain.Finite, has_nz=True,
                    num_high_nans=0, has_subnormals=True, is_twos_complement=False)
    want = round_ndarray(fi, x.astype(np.float64), RoundMode.TiesToAway, sat=True)
    np.testing.assert_array_equal(want, [2.0**-16, -(2.0**-16)])
    np.testing.assert_array_equal(hw_float(x, 5, 2), want)


def test_float_negative_zero_differs():
    """qtorch's subnormal path turns -0.0 and negative values rounding to zero into +0.0; hwsim keeps -0.0."""
    x = np.array([-0.0, -(2.0**-30)], np.float32)
    assert not np.signbit(qfloat(x, 5, 2)).any()
    assert np.signbit(hw_float(x, 5, 2)).all()


# ------------------------------------------------------------------------------------------------
# fixed point

FIXED = [(8, 0), (8, 4), (8, 7), (4, 2), (2, 0), (16, 8), (12, -2), (6, 6), (24, 12), (10, 12), (20, 3)]


@pytest.mark.parametrize("wl, fl", FIXED)
def test_fixed_point_quantize_nearest(wl, fl, assert_same):
    rng = np.random.default_rng(wl * 100 + fl)
    lim = 2.0 ** (wl - fl - 1)
    q = 2.0**-fl
    n = 20000
    k = rng.integers(-(2 ** (wl - 1)) - 8, 2 ** (wl - 1) + 8, n)
    parts = [rng.uniform(-1.5 * lim, 1.5 * lim, n),  # in range and saturating
             (k + 0.5) * q,  # ties
             k * q,  # exact codes
             (k + 0.5) * q + rng.choice([-1, 1], n) * q * 2.0**-20,  # just off ties
             np.exp2(rng.uniform(-fl - 30, wl - fl + 5, n)) * rng.choice([-1, 1], n),
             [0.0, -0.0, np.inf, -np.inf, F32MAX, -F32MAX, q / 2, -q / 2, 3 * q / 2, -3 * q / 2]]
    x = np.concatenate(parts).astype(np.float32)
    want = fixed_point_quantize(torch.from_numpy(x), wl, fl, clamp=True, symmetric=False, rounding="nearest").numpy()
    got = kernels.quantize(x, FixedFormat(wl, fl), rounding="nearest", overflow="saturate")
    assert got.dtype == np.float32
    assert_same(got, want, inputs=x, zero_sign=False, what=f"qtorch fixed_point_quantize wl={wl} fl={fl}")


def test_fixed_point_ties_to_even_in_qtorch():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    np.testing.assert_array_equal(fixed_point_quantize(x, 8, 0, rounding="nearest").numpy(), [0, 2, 2, 0, -2, -2])
    np.testing.assert_array_equal(kernels.quantize(x.numpy(), "int8"), [0, 2, 2, 0, -2, -2])


# ------------------------------------------------------------------------------------------------
# block floating point


def _block_amax(x, dim):
    """Each element's block amax, qtorch's way: dim=-1 -> the whole tensor; else per index along dim."""
    a = np.abs(np.asarray(x, np.float64))
    if dim == -1:
        return np.full_like(a, a.max())
    m = np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1).max(1)
    return np.broadcast_to(np.expand_dims(m, tuple(i for i in range(a.ndim) if i != dim % a.ndim)), a.shape)


def qtorch_block_reference(x, wl, dim):
    """What qtorch's block_quantize_nearest computes (module docstring), in numpy float64."""
    x = np.asarray(x, np.float64)
    E = np.frexp(_block_amax(x, dim))[1] - 1
    g = np.ldexp(1.0, E - 21)
    y = np.round(x / g) * g  # the float32 add of 6 * 2**E: RNE onto multiples of 2**(E-21)
    q = np.ldexp(1.0, E + 2 - wl)
    k = np.floor(y / q + 0.5)  # half up (toward +inf)
    k = np.clip(k, -(2 ** (wl - 1) - 1), 2 ** (wl - 1) - 1)
    return k * q


def block_inputs(shape, wl, rng, ties=True):
    x = rng.standard_normal(shape) * np.exp2(rng.uniform(-20, 20, shape[:1] + (1,) * (len(shape) - 1)))
    x = x.astype(np.float32).astype(np.float64)
    if ties:  # put exact ties of the block grid in (for dim=0 blocks = x[i, ...])
        flat = x.reshape(shape[0], -1)
        for i in range(shape[0]):
            E = np.frexp(np.abs(flat[i]).max())[1] - 1
            q = 2.0 ** (E + 2 - wl)
            j = rng.choice(flat.shape[1], 4, replace=False)
            flat[i, j] = (rng.integers(-(2 ** (wl - 1)) + 2, 2 ** (wl - 1) - 2, 4) + 0.5) * q
            flat[i, j[0]] = -(2.0 ** (E + 1) - q / 4)  # the most negative code: rounds to -2**(E+1)
        x = flat.reshape(shape)
    return x.astype(np.float32)


@pytest.mark.parametrize("wl", [3, 4, 6, 8, 12])
@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_block_quantize_reference_describes_qtorch(wl, dim, rng):
    """The semantics given to the lead (module docstring) are exactly qtorch's: reference == qtorch."""
    x = block_inputs((16, 40), wl, rng)
    want = block_quantize(torch.from_numpy(x), wl, dim=dim, rounding="nearest").numpy()
    np.testing.assert_array_equal(qtorch_block_reference(x, wl, dim), want.astype(np.float64))


def _hw_block(x, wl, dim):
    """qtorch's block format through the kernels API: MX with a fixed-point element FixedFormat(wl, wl-2)
    (emax_elem 0 -> scale 2**floor(log2 amax)), one block per slice."""
    if dim == -1:
        fmt = MXFormat(FixedFormat(wl, wl - 2), block=x.size)
        return kernels.quantize(x.reshape(-1), fmt, rounding="nearest").reshape(x.shape)
    assert x.ndim == 2 and dim == 0  # blocks are rows: consecutive along axis 1
    fmt = MXFormat(FixedFormat(wl, wl - 2), block=x.shape[1])
    return kernels.quantize(x, fmt, rounding="nearest", axis=1)


@pytest.mark.parametrize("wl", [3, 4, 6, 8, 12])
@pytest.mark.parametrize("dim", [-1, 0])
def test_block_quantize_via_mx_away_from_ties(wl, dim, rng, assert_same):
    """Away from the three differences (ties, the most negative code, the float32 pre-rounding) qtorch's
    block format is MXFormat(FixedFormat(wl, wl-2), block=slice) through the kernels API."""
    x = block_inputs((16, 40), wl, rng, ties=False).astype(np.float64)
    want = block_quantize(torch.from_numpy(x.astype(np.float32)), wl, dim=dim, rounding="nearest").numpy()
    # drop elements where the three differences could matter
    E = np.frexp(_block_amax(x, dim))[1] - 1
    q = np.ldexp(1.0, E + 2 - wl)
    frac = x / q - np.floor(x / q)
    # the float32 pre-rounding moves x by at most 2**(E-22) = q * 2**(wl-24)
    safe = (np.abs(frac - 0.5) > 2.0 ** (wl - 22)) & (x / q > -(2 ** (wl - 1)) + 0.5)
    got = _hw_block(x, wl, dim)
    assert safe.mean() > 0.9
    assert_same(got[safe], want[safe], inputs=x[safe], what=f"block_quantize wl={wl} dim={dim} via MX")


@pytest.mark.parametrize("wl", [3, 4, 6, 8, 12])
@pytest.mark.parametrize("dim", [-1, 0])
def test_block_quantize_bit_exact(wl, dim, rng, assert_same):
    """qtorch's block format is exactly MXFormat(FixedFormat(wl, wl-2, symmetric=True), block=slice) with
    rounding="half_up", on inputs its float32 pre-rounding leaves unchanged (multiples of 2**(E-21),
    which the inputs are snapped to: the pre-rounding is an artefact of qtorch's float32 arithmetic,
    not part of the format). Ties and the most negative code are included."""
    x = block_inputs((16, 40), wl, rng, ties=True).astype(np.float64)
    E = np.frexp(_block_amax(x, dim))[1] - 1
    g = np.ldexp(1.0, E - 21)
    x = (np.round(x / g) * g).astype(np.float32)
    assert (np.frexp(_block_amax(x, dim))[1] - 1 == E).all()  # snapping kept every block's exponent
    want = block_quantize(torch.from_numpy(x), wl, dim=dim, rounding="nearest").numpy()
    xs = x.astype(np.float64)
    if dim == -1:
        fmt = MXFormat(FixedFormat(wl, wl - 2, symmetric=True), block=x.size)
        got = kernels.quantize(xs.reshape(-1), fmt, rounding="half_up").reshape(x.shape)
    else:
        fmt = MXFormat(FixedFormat(wl, wl - 2, symmetric=True), block=x.shape[1])
        got = kernels.quantize(xs, fmt, rounding="half_up", axis=1)
    assert_same(got, want, inputs=x, zero_sign=False, what=f"block_quantize wl={wl} dim={dim}")
