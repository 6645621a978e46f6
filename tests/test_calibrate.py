"""Calibration (quant.calibrate) and scales (quant.scales) against hand-computed cases and independent
brute force. Every expected value below is derived in the comments or by code written here, not
taken from the code under test."""

import math

import numpy as np
import pytest

from kernels import parse_format
from quant.calibrate import CalibConfig, Observer, tensor_range
from quant.scales import check_scheme, compute_qparams, pow2_scale

X5 = np.array([-1.0, 0.0, 0.5, 2.0, 10.0])  # 10 is the outlier


# ---------------------------------------------------------------------------------------------
# min-max
# ---------------------------------------------------------------------------------------------

def test_minmax_symmetric_int8_scale_is_10_over_127():
    lo, hi = tensor_range(X5, "minmax")
    assert (lo, hi) == (-1.0, 10.0)
    qp = compute_qparams(lo, hi, "int8", "symmetric")
    assert float(qp.scale) == 10.0 / 127 and float(qp.zero_point) == 0.0
    # narrow range: 10 -> 127, -1 -> round(-12.7) = -13, and nothing may reach -128
    assert list(qp.quantize(X5)) == [-13.0, 0.0, 6.0, 25.0, 127.0]  # 0.5*12.7=6.35, 2*12.7=25.4
    assert qp.quantize(np.array([-1e9]))[0] == -127.0


def test_minmax_asymmetric_int8_zero_point_by_hand():
    lo, hi = tensor_range(X5, "minmax")
    qp = compute_qparams(lo, hi, "int8", "asymmetric")
    # s = (10 - (-1)) / 255; zp = -128 - round(-1 / s) = -128 - round(-23.18...) = -128 + 23 = -105
    assert float(qp.scale) == 11.0 / 255
    assert float(qp.zero_point) == -105.0
    v = qp.quantize(np.array([0.0, -1.0, 10.0]))
    assert v[0] == -105.0  # real zero is exactly the zero point
    assert v[1] == -128.0 and v[2] == 127.0  # the range ends land on the format's ends
    assert qp.dequantize(v)[0] == 0.0


def test_asymmetric_range_widened_to_hold_zero():
    qp = compute_qparams(2.0, 6.0, "uint8", "asymmetric")  # all positive: lo' = 0
    assert float(qp.scale) == 6.0 / 255 and float(qp.zero_point) == 0.0
    qp = compute_qparams(-6.0, -2.0, "int4", "asymmetric")  # all negative: hi' = 0 -> zp = qmax
    assert float(qp.scale) == 6.0 / 15 and float(qp.zero_point) == 7.0


def test_unsigned_symmetric_needs_nonnegative_values():
    qp = compute_qparams(0.0, 6.0, "uint8", "symmetric")
    assert float(qp.scale) == 6.0 / 255 and qp.vmin == 0.0
    with pytest.raises(ValueError, match="unsigned.*negative"):
        compute_qparams(-0.5, 6.0, "uint8", "symmetric")


def test_fixed_point_asymmetric_zero_point_on_the_format_grid():
    # fixed8.2: values k/4, k in [-128, 127]; s = 11 / (31.75 + 32) = 11/63.75; zp = -32 - round(-1/s*4)/4
    qp = compute_qparams(-1.0, 10.0, "fixed8.2", "asymmetric")
    s = 11.0 / 63.75
    assert float(qp.scale) == s
    assert float(qp.zero_point) == -32.0 - round(-1.0 / s * 4) / 4
    assert float(qp.zero_point) * 4 == int(float(qp.zero_point) * 4)


def test_per_channel_minmax_equals_each_slice():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 5, 7))
    lo, hi = tensor_range(w, "minmax", channel_axis=-1)
    assert lo.shape == hi.shape == (7,)
    for c in range(7):
        assert lo[c] == w[..., c].min() and hi[c] == w[..., c].max()
    lo2, hi2 = tensor_range(w, "minmax", channel_axis=2)
    for c in range(5):
        assert lo2[c] == w[:, :, c].min() and hi2[c] == w[:, :, c].max()


def test_zero_range_gets_unit_scale():
    qp = compute_qparams(np.zeros(3), np.array([0.0, 1.27, 0.0]), "int8", "symmetric")
    assert list(qp.scale) == [1.0, 1.27 / 127, 1.0]
    assert list(qp.quantize(np.array([[0.0, 1.27, 0.0]]))[0]) == [0.0, 127.0, 0.0]


# ---------------------------------------------------------------------------------------------
# power of two
# ---------------------------------------------------------------------------------------------

def test_pow2_scale_rounds_up():
    assert float(pow2_scale(10 / 127)) == 0.125  # 0.0787 -> 2**-3, never 2**-4 (which would clip)
    assert float(pow2_scale(0.25)) == 0.25  # exact powers stay
    assert float(pow2_scale(0.25000000000000006)) == 0.5
    assert float(pow2_scale(3.0)) == 4.0
    qp = compute_qparams(-1.0, 10.0, "int8", "symmetric", "pow2")
    assert float(qp.scale) == 0.125 and 10.0 / 0.125 <= 127


def test_pow2_never_clips_more_than_real(rng):
    amax = np.exp(rng.uniform(-20, 20, size=2000))
    s = pow2_scale(amax / 127)
    assert np.all(amax / s <= 127) and np.all(amax / s > 63.5)  # the next smaller power would clip
    m, _ = np.frexp(s)
    assert np.all(m == 0.5)


# ---------------------------------------------------------------------------------------------
# percentile
# ---------------------------------------------------------------------------------------------

def test_percentile_99_by_hand():
    # |x| sorted = [0, 0.5, 1, 2, 10]; h = 4 * 0.99 = 3.96 -> 2 + 0.96 * (10 - 2) = 9.68
    lo, hi = tensor_range(X5, "percentile", cfg=CalibConfig(percentile=99.0))
    h = 4 * 0.99
    assert hi == 2 + (h - 3) * 8
    assert hi == pytest.approx(9.68, abs=1e-13)
    assert lo == -1.0  # max(min(x), -c)
    assert hi == pytest.approx(np.percentile(np.abs(X5), 99), abs=1e-13)
    qp = compute_qparams(lo, hi, "int8", "symmetric")
    assert float(qp.scale) == hi / 127
    assert qp.quantize(np.array([10.0]))[0] == 127.0  # the outlier saturates


def test_percentile_asymmetric_by_hand():
    # hi = P99(x) = 9.68 as above; lo = -P99(-x): -x sorted = [-10, -2, -0.5, 0, 1] -> 0 + 0.96 * 1
    lo, hi = tensor_range(X5, "percentile", scheme="asymmetric", cfg=CalibConfig(percentile=99.0))
    h = 4 * 0.99
    assert hi == 2 + (h - 3) * 8
    assert lo == -(0 + (h - 3) * 1)
    assert lo == pytest.approx(-0.96, abs=1e-15)


def test_percentile_100_is_minmax_and_integer_index():
    assert tensor_range(X5, "percentile", cfg=CalibConfig(percentile=100.0)) == (-1.0, 10.0)
    # p = 75: h = 4 * 0.75 = 3 exactly -> the 4th smallest |x| = 2
    assert tensor_range(X5, "percentile", cfg=CalibConfig(percentile=75.0)) == (-1.0, 2.0)


def _full_sort_percentile(v, p):
    """Independent: the type-7 formula on the fully sorted array."""
    s = np.sort(np.asarray(v, dtype=np.float64).ravel())
    h = (s.size - 1) * (p / 100.0)
    f = math.floor(h)
    return s[f] if h == f else s[f] + (h - f) * (s[f + 1] - s[f])


@pytest.mark.parametrize("p", [99.99, 99.9, 97.3, 50.0])
def test_streaming_percentile_equals_full_sort(rng, p):
    data = rng.standard_t(3, size=(37, 11, 5))  # heavy tails
    cfg = CalibConfig(method="percentile", percentile=p)
    for scheme in ("symmetric", "asymmetric"):
        obs = Observer("percentile", data.size, scheme=scheme, cfg=cfg)
        for chunk in np.array_split(data, [1, 2, 9, 30]):  # uneven batches
            obs.update(chunk)
        lo, hi = obs.result()
        if scheme == "symmetric":
            c = _full_sort_percentile(np.abs(data), p)
            assert (lo, hi) == (max(data.min(), -c), min(data.max(), c))
        else:
            assert hi == _full_sort_percentile(data, p)
            assert lo == -_full_sort_percentile(-data, p)
            assert lo == pytest.approx(np.percentile(data, 100 - p), rel=1e-12)
        assert (lo, hi) == tensor_range(data, "percentile", scheme=scheme, cfg=cfg)


# ---------------------------------------------------------------------------------------------
# MSE-optimal clipping
# ---------------------------------------------------------------------------------------------

def test_mse_int2_by_hand():
    """99 values 1.0 and one outlier 10, int2 symmetric (narrow: codes -1, 0, 1, i.e. {-c, 0, c}).

    Grid (G = 100): c = 10 * i / 100. For c in (2, 10] every 1.0 rounds to 0 (1/c < 1/2): error
    99 + (10 - c)**2 >= 99. For c in [1, 2) a 1.0 rounds to c (1/c > 1/2): error
    99 (c - 1)**2 + (10 - c)**2; on the grid c = 1.0: 81, c = 1.1: 0.99 + 79.21 = 80.2, c = 1.2: 3.96 +
    77.44 = 81.4, rising further. (c = 2: 1/c = 1/2 ties to even 0.) Below 1 the outlier costs more.
    So the MSE-optimal clip is c = 1.1 (i = 11), far below the min-max clip 10."""
    x = np.array([1.0] * 99 + [10.0])
    lo, hi = tensor_range(x, "mse", "int2", "symmetric", "real")
    a = 11 / 100
    assert (lo, hi) == (1.0 * a, 10.0 * a)
    qp = compute_qparams(lo, hi, "int2", "symmetric")
    assert float(qp.scale) == 10.0 * a  # int2 narrow range: fmt.max = 1
    err = ((qp.fake_quantize(x) - x) ** 2).sum()
    assert err == pytest.approx(80.2, abs=1e-9)


def _brute_mse_symmetric_int(x, bits, G=100):
    """Independent brute force: pure Python, round-half-even by Python's round()."""
    qmax = 2 ** (bits - 1) - 1
    amax = max(abs(v) for v in x)
    best = None
    for i in range(1, G + 1):
        c = amax * (i / G)
        s = c / qmax
        err = 0.0
        for v in x:
            q = max(-qmax, min(qmax, round(v / s)))
            err += (q * s - v) ** 2
        if best is None or err <= best[0]:
            best = (err, i)
    return best


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_matches_brute_force(rng, bits):
    x = np.concatenate([rng.normal(size=300), [9.0, -7.5]])
    err, i = _brute_mse_symmetric_int(list(x), bits)
    lo, hi = tensor_range(x, "mse", f"int{bits}", "symmetric", "real")
    a = i / 100
    assert (lo, hi) == (x.min() * a, x.max() * a)
    # the tested function's error at its choice is the brute force's minimum
    qp = compute_qparams(lo, hi, f"int{bits}", "symmetric")
    assert ((qp.fake_quantize(x) - x) ** 2).sum() == pytest.approx(err, rel=1e-12)


def test_mse_fp8_matches_brute_force_over_the_format_table(rng, all_codes):
    """fp8 e4m3 with a per-tensor scale: candidates s = c / 448; each x/s is rounded to the nearest
    value of the decoded code table (ties to the even code), saturating at +-448."""
    fmt = parse_format("fp8_e4m3")
    codes, vals, mag = all_codes(fmt)
    ok = np.isfinite(vals) & (vals >= 0)
    table, tmag = vals[ok], mag[ok]
    order = np.argsort(table)
    table, tmag = table[order], tmag[order]

    def q(t):
        a = np.minimum(np.abs(t), 448.0)
        j = np.clip(np.searchsorted(table, a), 1, len(table) - 1)
        lo_v, hi_v = table[j - 1], table[j]
        pick_hi = (hi_v - a < a - lo_v) | ((hi_v - a == a - lo_v) & (tmag[j] % 2 == 0))
        return np.copysign(np.where(pick_hi, hi_v, lo_v), t)

    x = np.concatenate([rng.normal(size=400) * 0.01, [0.9, -0.6]])
    amax = np.abs(x).max()
    errs = []
    for i in range(1, 101):
        s = (amax * (i / 100)) / 448.0
        errs.append(((q(x / s) * s - x) ** 2).sum())
    i_best = max(i for i in range(1, 101) if errs[i - 1] == min(errs))
    lo, hi = tensor_range(x, "mse", fmt, "symmetric", "real")
    assert (lo, hi) == (x.min() * (i_best / 100), x.max() * (i_best / 100))


def test_mse_per_channel_independent(rng):
    w = rng.normal(size=(50, 3)) * np.array([1.0, 0.1, 5.0])
    w[0, 1] = 3.0  # an outlier in channel 1 only
    lo, hi = tensor_range(w, "mse", "int4", "symmetric", "real", channel_axis=-1)
    for c in range(3):
        l1, h1 = tensor_range(w[:, c], "mse", "int4", "symmetric", "real")
        assert (lo[c], hi[c]) == (l1, h1)


def test_mse_pow2_uses_the_pow2_grid():
    x = np.array([1.0] * 99 + [10.0])
    lo, hi = tensor_range(x, "mse", "int2", "symmetric", "pow2")
    # pow2 scales: 1 (c in (0.5, 1]), 2 (c in (1, 2]) ... ; s = 1 quantizes the 1.0s exactly: error 81;
    # s = 2: the 1.0s tie to 0 (error 99 + 64); s >= 4: the 1.0s round to 0 (error >= 99). Ties over the grid c in (0.5, 1]
    # (i = 6..10) go to the largest i = 10.
    assert (lo, hi) == (0.1, 1.0)


def test_observer_mse_uses_all_values_when_small_and_samples_independently_of_batches(rng):
    data = rng.standard_t(4, size=(64, 9))
    cfg = CalibConfig(method="mse")
    obs = Observer("mse", data.size, "int4", "asymmetric", "real", cfg)
    for chunk in np.array_split(data, 5):
        obs.update(chunk)
    assert obs.result() == tensor_range(data, "mse", "int4", "asymmetric", "real", cfg=cfg)
    small = CalibConfig(method="mse", mse_samples=100, seed=7)
    res = []
    for parts in (1, 3, 64):
        o = Observer("mse", data.size, "int4", "symmetric", "real", small)
        for chunk in np.array_split(data, parts):
            o.update(chunk)
        assert o.sample.size == 100
        res.append(o.result())
    assert res[0] == res[1] == res[2]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_calibration_errors():
    with pytest.raises(ValueError, match="unknown calibration method 'kl'.*minmax, percentile, mse"):
        tensor_range(X5, "kl")
    with pytest.raises(ValueError, match="percentile must be"):
        CalibConfig(percentile=101)
    with pytest.raises(ValueError, match="percentile must be"):
        CalibConfig(percentile=10)
    with pytest.raises(ValueError, match="non-finite"):
        tensor_range(np.array([1.0, np.nan]), "minmax")
    obs = Observer("minmax", 10)
    with pytest.raises(ValueError, match="non-finite"):
        obs.update(np.array([np.inf]))
    obs.update(np.ones(4))
    with pytest.raises(ValueError, match="observed 4 values, expected 10"):
        obs.result()
    with pytest.raises(ValueError, match="scale='none' has none to search"):
        tensor_range(X5, "mse", "int8", "symmetric", "none")


@pytest.mark.parametrize("fmt, scheme, kind, msg", [
    ("fp8_e4m3", "asymmetric", "real", "needs an integer / fixed-point format"),
    ("uint1", "asymmetric", "real", "too narrow"),
    ("int8", "symmetric", "mx", "needs an MX block format"),
    ("mxfp8_e4m3", "symmetric", "real", "use scale='mx'"),
    ("mxint8", "asymmetric", "mx", "no zero point"),
    ("int8", "asymmetric", "none", "without a zero point"),
    ("e8m0", "symmetric", "real", "has no zero"),
    ("int8", "affine", "real", "unknown scheme 'affine'"),
    ("int8", "symmetric", "log", "unknown scale kind 'log'"),
])
def test_invalid_scheme_combinations(fmt, scheme, kind, msg):
    with pytest.raises(ValueError, match=msg):
        check_scheme(fmt, scheme, kind)


def test_inverted_or_nonfinite_range_rejected():
    with pytest.raises(ValueError, match="lo > hi"):
        compute_qparams(1.0, -1.0, "int8")
    with pytest.raises(ValueError, match="finite"):
        compute_qparams(-np.inf, 1.0, "int8")
