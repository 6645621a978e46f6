"""Stochastic rounding: bit-exact against an independent reference of the documented definition, and
its statistics.

Definition (the contract, :mod:`kernels.rng`): element with flat C-order index ``i`` (the counter ``h * 2**32
+ l``) draws the 32-bit word ``w_i = fmix32((s + (l + 1) * G) * m)`` (mod 2**32) of the stream
``s = fmix32(fmix32(h ^ lo32(key)) ^ hi32(key))``, ``m = fmix32(s + G) | 1``, ``G = 0x9E3779B9``, with
``key = mix64(seed)`` (SplitMix64's finaliser ``mix64``, MurmurHash3's ``fmix32``); ``U = w_i >> (32 - r)``
(top ``r = rand_bits`` bits); the magnitude rounds up one quantum iff ``floor(f * 2**r) + U >= 2**r``, ``f``
the exact fractional distance in quanta above the grid value below the magnitude. So
``P(up) = floor(f * 2**r) / 2**r``.

The reference below re-implements the generator in Python integers and the rounding decision with exact
integer arithmetic on the float32 significand (no float rounding anywhere); it is cross-checked
against gfloat's ``RoundMode.StochasticFastest`` (``delta + srbits * 2**-n >= 1``, the same decision
when the sum is exact in float64).
"""

import numba
import numpy as np
import pytest
import scipy.stats
from gfloat import Domain, FormatInfo, RoundMode, round_ndarray

import kernels
from kernels.formats import FixedFormat, FloatFormat, parse_format

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
G = 0x9E3779B9


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _fmix32(x):
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def word_py(seed, counter):
    """The 32-bit random word at ``counter`` for ``seed``, in Python integers."""
    key = _mix64(seed & MASK64)
    h, l = counter >> 32, counter & MASK32
    s = _fmix32(_fmix32(h ^ (key & MASK32)) ^ (key >> 32))
    m = _fmix32((s + G) & MASK32) | 1
    return _fmix32((((s + (l + 1) * G) & MASK32) * m) & MASK32)


def words_py(seed, n, start=0):
    """The words of flat indices start .. start + n - 1."""
    return np.array([word_py(seed, start + i) for i in range(n)], dtype=np.uint64)


def words(seed, n):
    """The words of flat indices 0..n-1 (n < 2**32: one stream), vectorised."""
    key = _mix64(seed & MASK64)
    s = _fmix32(_fmix32(key & MASK32) ^ (key >> 32))
    m = _fmix32((s + G) & MASK32) | 1
    x = (np.uint64(s) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(G)) & np.uint64(MASK32)
    x = (x * np.uint64(m)) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & np.uint64(MASK32)
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & np.uint64(MASK32)
    return x ^ (x >> np.uint64(16))


def test_words_vectorised_equals_python():
    for seed in (0, 1, 2**63 + 5, 123456789):
        np.testing.assert_array_equal(words(seed, 300), words_py(seed, 300))


def test_words_known_values():
    """The two hashes against published values: SplitMix64's first output from state 0 is
    0xE220A8397B1DCDAF (Vigna's splitmix64.c, seed 0); MurmurHash3_x86_32 of the empty input with seed 1
    and 0xFFFFFFFF is fmix32 of the seed: 0x514E28B7 and 0x81F16F39 (SMHasher's test vectors)."""
    assert _mix64((0 + 0x9E3779B97F4A7C15) & MASK64) == 0xE220A8397B1DCDAF
    assert _fmix32(1) == 0x514E28B7 and _fmix32(0xFFFFFFFF) == 0x81F16F39


def test_library_generator_equals_this_reference():
    """kernels.rng (Numba and numpy) against the Python-integer statement, across the 2**32 boundary of the
    counter's halves and at the ends of the 64-bit range."""
    from numba import njit

    from kernels import rng

    @njit
    def nb(key, cs):
        out = np.empty(cs.size, np.uint64)
        for i in range(cs.size):
            out[i] = rng.rand32(key, cs[i])
        return out

    rs = np.random.default_rng(3)
    cs = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**64 - 1, 2**63, *rs.integers(0, 2**63, 50).tolist()]
    for seed in (0, 7, 2**64 - 1):
        want = np.array([word_py(seed, c) for c in cs], dtype=np.uint64)
        key = rng.make_key(seed)
        np.testing.assert_array_equal(rng.rand32_py(key, np.array(cs, dtype=np.uint64)), want)
        np.testing.assert_array_equal(nb(key, np.array(cs, dtype=np.uint64)), want)


def _decode_f32(x32):
    u = x32.view(np.uint32).astype(np.uint64)
    E = ((u >> np.uint64(23)) & np.uint64(0xFF)).astype(np.int64)
    m = u & np.uint64(0x7FFFFF)
    sig = np.where(E == 0, m, m | np.uint64(0x800000))
    ex = np.where(E == 0, -149, E - 150)
    return sig, ex, (u >> np.uint64(31)) == 1


def _shr(a, s):
    """a >> s for uint64 arrays, s >= 0 arbitrary (0 for s >= 64)."""
    s = np.asarray(s, np.int64)
    return np.where(s >= 64, np.uint64(0), a >> np.minimum(s, 63).astype(np.uint64))


def reference_stochastic(x32, fmt, seed, r, overflow="saturate"):
    """Exact reference (module docstring) for float32 finite inputs, FloatFormat with subnormals or
    FixedFormat; returns float64. Magnitudes above max: saturate (``overflow="saturate"``)."""
    sig, ex, neg = _decode_f32(np.ascontiguousarray(x32).reshape(-1))
    n_el = sig.size
    if isinstance(fmt, FixedFormat):
        qe = np.full(n_el, -fmt.frac, np.int64)
    else:
        assert fmt.subnormals and fmt.has_zero
        bitlen = np.frexp(sig.astype(np.float64))[1]  # exact: sig < 2**24
        e = ex + bitlen - 1
        qe = np.maximum(e, fmt.emin) - fmt.man
    s = qe - ex  # dropped bits
    n = np.where(s <= 0, 0, _shr(sig, s))
    rem = np.where(s <= 0, np.uint64(0), sig - (_shr(sig, s) << np.minimum(np.maximum(s, 0), 63).astype(np.uint64)))
    rem = np.where(s >= 64, sig, rem)
    ru = np.uint64(r)
    # floor(f * 2**r) = floor(rem * 2**r / 2**s)
    fr = np.where(s >= r, _shr(rem, s - r), rem << np.maximum(r - s, 0).astype(np.uint64))
    U = words(seed, n_el) >> np.uint64(32 - r)
    up = (fr + U) >= (np.uint64(1) << ru)
    up &= s > 0
    mag_int = np.where(s <= 0, np.ldexp(sig.astype(np.float64), np.maximum(-s, 0)), n.astype(np.float64))
    mag = np.ldexp(mag_int + up, qe)
    if isinstance(fmt, FixedFormat):
        k = np.where(neg, -(mag_int + up), mag_int + up)
        k = np.clip(k, fmt.qmin, fmt.qmax)
        return (np.ldexp(k, -fmt.frac) + 0.0).reshape(np.shape(x32))
    assert overflow == "saturate"
    mag = np.minimum(mag, fmt.max)
    out = np.where(neg, -mag, mag)
    if not fmt.has_negative_zero:
        out = out + 0.0
    return out.reshape(np.shape(x32))


def _inputs(fmt, rng, n=20000):
    """float32 values within +-max: log-uniform over (and far below) the range, grid values, ties,
    quarter points, tiny values whose distance fraction needs more than 40 bits to reach (these
    round up with probability ~ |x| / quantum)."""
    if isinstance(fmt, FixedFormat):
        lo_e, hi = -fmt.frac - 45, np.log2(max(abs(fmt.min), fmt.max))
        q = 2.0**-fmt.frac
        k = rng.integers(fmt.qmin, fmt.qmax, n)
        grid = np.concatenate([k * q, (k + 0.5) * q, (k + 0.25) * q])
    else:
        lo_e, hi = fmt.emin - fmt.man - 45, np.log2(fmt.max)
        e = rng.integers(fmt.emin, fmt.emax + 1, n)
        mm = rng.integers(0, 2**fmt.man, n) + rng.choice([0.0, 0.5, 0.25, 0.125], n)
        grid = np.ldexp(1 + mm / 2**fmt.man, e)
    x = np.concatenate([np.exp2(rng.uniform(lo_e, hi, n)), grid, [0.0]])
    x = x.astype(np.float32)
    x = x[np.abs(x.astype(np.float64)) <= (fmt.max if not isinstance(fmt, FixedFormat) else fmt.max)]
    signs = rng.choice(np.array([-1, 1], np.float32), x.size)
    if isinstance(fmt, FixedFormat) and not fmt.signed:
        signs[:] = 1
    return rng.permutation(x * signs)


FLOATS = ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float6_e3m2fn", "float4_e2m1fn", "bf16", "fp16",
          "float8_e3m4", FloatFormat(5, 6, specials="none")]
FIXED = ["int8", "int4", "fixed8.4", "fixed16.8", "uint4", "fixed8.-2", "fixed12.14"]
RBITS = [None, 1, 3, 8, 13, 23, 31]


def _id(f):
    return f if isinstance(f, str) else f.name


@pytest.mark.parametrize("rand_bits", RBITS)
@pytest.mark.parametrize("fmt", FLOATS + FIXED, ids=_id)
def test_bit_exact_vs_reference(fmt, rand_bits, rng, assert_same):
    f = parse_format(fmt)
    x = _inputs(f, rng)
    seed = int(rng.integers(0, 2**63))
    r = 32 if rand_bits is None else rand_bits
    want = reference_stochastic(x, f, seed, r)
    got = kernels.quantize(x, f, rounding="stochastic", seed=seed, rand_bits=rand_bits)
    assert_same(got, want, inputs=x, what=f"{f.name} stochastic r={r}")
    # the float64 path draws the same words and decides the same way
    got64 = kernels.quantize(x.astype(np.float64), f, rounding="stochastic", seed=seed, rand_bits=rand_bits)
    assert_same(got64, want, inputs=x, what=f"{f.name} stochastic r={r}, float64 input")


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "bf16", "float6_e2m3fn"])
@pytest.mark.parametrize("r", [4, 16, 32])
def test_reference_agrees_with_gfloat(fmt, r, rng):
    """Cross-check of the reference itself: gfloat's StochasticFastest with srbits = U decides the same
    (inputs whose distance fraction has at most 20 bits below the quantum, so gfloat's float64 sum is exact)."""
    f = parse_format(fmt)
    x = _inputs(f, rng, n=4000)
    x = x[np.abs(x) >= f.min_normal * 2.0**-8]
    seed = 12345
    U = (words(seed, x.size) >> np.uint64(32 - r)).astype(np.int64)
    nhn = {"ieee": (1 << f.man) - 1, "fn": 1, "fnuz": 0, "none": 0}[f.specials]
    fi = FormatInfo(f.name, k=f.bits, precision=f.man + 1, bias=f.bias, is_signed=True,
                    domain=Domain.Extended if f.specials == "ieee" else Domain.Finite, has_nz=f.specials != "fnuz",
                    num_high_nans=nhn, has_subnormals=True, is_twos_complement=False)
    g = round_ndarray(fi, x.astype(np.float64), RoundMode.StochasticFastest, sat=True, srbits=U, srnumbits=r)
    ref = reference_stochastic(x, f, seed, r)
    np.testing.assert_array_equal(g, ref)


def test_stochastic_saturates(rng):
    x = np.array([1000.0, -1000.0, 448.5, -449.0, np.inf, -np.inf], np.float32)
    got = kernels.quantize(x, "float8_e4m3fn", rounding="stochastic", seed=1, overflow="saturate")
    np.testing.assert_array_equal(got, [448, -448, 448, -448, 448, -448])
    got = kernels.quantize(x[:4], "int4", rounding="stochastic", seed=1)
    np.testing.assert_array_equal(got, [7, -8, 7, -8])


# ------------------------------------------------------------------------------------------------
# statistics

N = 400_000


@pytest.mark.parametrize(
    "fmt, x, lo, q",
    [("int8", 0.3, 0.0, 1.0), ("int8", -2.71875, -2.0, -1.0), ("fixed8.4", 1.0 + 0.6 / 16, 1.0, 1 / 16),
     ("float8_e4m3fn", 1.0 + 0.1 / 8, 1.0, 1 / 8), ("float8_e4m3fn", 2.0**-9 * 0.37, 0.0, 2.0**-9),
     ("bf16", 3.0 + 0.9 / 64, 3.0, 1 / 64), ("float4_e2m1fn", 2.4, 2.0, 1.0)],
)
def test_unbiased_and_binomial(fmt, x, lo, q):
    """The mean of N draws converges to x: |mean - x| < 5 sigma / sqrt(N) + the r-bit truncation bias
    (q * 2**-32 here); the number of round-ups passes an exact binomial test with
    p = floor(f * 2**32) / 2**32 (p-value > 1e-6)."""
    xs = np.full(N, x, np.float64)
    y = kernels.quantize(xs, fmt, rounding="stochastic", seed=2024)
    assert set(np.unique(y)) <= {lo, lo + q}
    f = (x - lo) / q
    p = np.floor(f * 2.0**32) / 2.0**32
    k = int((y == lo + q).sum())
    assert scipy.stats.binomtest(k, N, p).pvalue > 1e-6, (k / N, p)
    sigma = abs(q) * np.sqrt(p * (1 - p))
    assert abs(y.mean() - x) < 5 * sigma / np.sqrt(N) + abs(q) * 2.0**-32, (y.mean(), x)


@pytest.mark.parametrize("f, r", [(0.3, 1), (0.7, 1), (0.3, 2), (0.3, 3), (0.9, 3), (0.5, 1), (0.1, 4),
                                  (0.0625, 4), (0.06, 4), (0.99, 2)])
def test_up_probability_truncated_to_rand_bits(f, r):
    """P(up) = floor(f * 2**r) / 2**r: with r = 1, f = 0.3 never rounds up, f = 0.7 half the time."""
    x = np.full(N, 10.0 + f)  # int8: lo = 10, one quantum = 1
    y = kernels.quantize(x, "int8", rounding="stochastic", seed=7 + r, rand_bits=r)
    p = np.floor(f * 2**r) / 2**r
    k = int((y == 11.0).sum())
    assert set(np.unique(y)) <= {10.0, 11.0}
    if p == 0:
        assert k == 0
    else:
        assert scipy.stats.binomtest(k, N, p).pvalue > 1e-6, (k / N, p)


def test_exact_values_never_move():
    x = np.array([0.0, 1.0, -3.0, 448.0, 2.0**-9, -(2.0**-6)], np.float32)
    for r in (1, 8, 32):
        y = kernels.quantize(np.tile(x, 1000), "float8_e4m3fn", rounding="stochastic", seed=3, rand_bits=r)
        np.testing.assert_array_equal(y, np.tile(x, 1000))


# ------------------------------------------------------------------------------------------------
# reproducibility and independence from execution details


def _x(rng, n=100_000):
    return (rng.standard_normal(n) * 3).astype(np.float32)


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "int8", "bf16", "float6_e2m3fn", "mxfp8_e4m3"])
def test_seed_reproducible_and_seeds_differ(fmt, rng):
    x = _x(rng)
    a = kernels.quantize(x, fmt, rounding="stochastic", seed=11)
    b = kernels.quantize(x, fmt, rounding="stochastic", seed=11)
    c = kernels.quantize(x, fmt, rounding="stochastic", seed=12)
    np.testing.assert_array_equal(a, b)
    assert (a != c).sum() > 1000


def test_seed_none_draws_fresh_entropy(rng):
    x = _x(rng)
    a = kernels.quantize(x, "float8_e4m3fn", rounding="stochastic")
    b = kernels.quantize(x, "float8_e4m3fn", rounding="stochastic")
    assert (a != b).sum() > 1000


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "int8", "fixed16.8", "e3m3", "mxfp4_e2m1"])
def test_thread_count_does_not_matter(fmt, rng):
    x = _x(rng, 300_000)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = kernels.quantize(x, fmt, rounding="stochastic", seed=5)
        a64 = kernels.quantize(x.astype(np.float64), fmt, rounding="stochastic", seed=5)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        b = kernels.quantize(x, fmt, rounding="stochastic", seed=5)
        b64 = kernels.quantize(x.astype(np.float64), fmt, rounding="stochastic", seed=5)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a64, b64)


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "int8", "bf16", "float4_e2m1fn"])
def test_depends_only_on_flat_index(fmt, rng):
    """Quantizing x and x[:k] gives the same first k results; shape does not matter (C order)."""
    x = _x(rng, 50_000)
    full = kernels.quantize(x, fmt, rounding="stochastic", seed=99)
    for k in (1, 31, 4097, 33333):
        np.testing.assert_array_equal(kernels.quantize(x[:k], fmt, rounding="stochastic", seed=99), full[:k])
    np.testing.assert_array_equal(
        kernels.quantize(x.reshape(50, 1000), fmt, rounding="stochastic", seed=99).ravel(), full)
    # a strided view is quantized in its own C order
    v = x[::3]
    np.testing.assert_array_equal(kernels.quantize(v, fmt, rounding="stochastic", seed=99),
                                  kernels.quantize(np.ascontiguousarray(v), fmt, rounding="stochastic", seed=99))


def test_mx_stochastic_flat_index(rng):
    """MX: each element's word comes from its flat C-order index in the input: the first rows of a 2-D
    input quantize the same alone (blocks lie along the last axis)."""
    x = _x(rng, 64 * 96).reshape(64, 96)
    full = kernels.quantize(x, "mxfp6_e3m2", rounding="stochastic", seed=8)
    np.testing.assert_array_equal(kernels.quantize(x[:5], "mxfp6_e3m2", rounding="stochastic", seed=8), full[:5])


def test_mx_stochastic_unbiased():
    """One block of 32 repeated many times: element 0 = amax = 1.0 (scale 2**-2 for e2m1: 1.0 -> 4),
    element 1 = 0.3 -> scaled 1.2 (between 1.0 and 1.5, f = 0.4): mean of the draws -> 0.3."""
    blk = np.zeros(32)
    blk[0], blk[1] = 1.0, 0.3
    x = np.tile(blk, 20000)
    y = kernels.quantize(x, "mxfp4_e2m1", rounding="stochastic", seed=4).reshape(-1, 32)
    assert (y[:, 0] == 1.0).all()
    v = y[:, 1]
    assert set(np.unique(v)) <= {0.25, 0.375}
    p = np.floor(0.4 * 2.0**32) / 2.0**32
    k = int((v == 0.375).sum())
    assert scipy.stats.binomtest(k, v.size, p).pvalue > 1e-6
