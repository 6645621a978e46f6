"""The statistics of the stochastic-rounding generator (:mod:`kernels.rng`) on 10**8 words, with scipy.stats:

* 5 * 10**7 words along one stream (the flat counters of ``kernels.quantize``) and 5 * 10**7 in the MAC
  kernels' layout (5,000 outputs' streams ``h = e * 4 + 1`` by 10,000 positions ``k``);
* uniformity: chi-square of the top 16 bits and of the low 16 bits (65,536 cells each);
* serial correlation: Pearson's r of consecutive words along a stream and of neighbouring outputs' words at
  the same ``k``, per chunk of 10**7 pairs, combined with Fisher's method;
* bit independence: a binomial test of each of the 32 bits, and chi-square tests of independence of every
  pair of bits within a word and of each bit with the same bit of the next word (2 * 10**6 words).

Each family of p-values must stay above 1e-6 / (number of tests in it) (Bonferroni): a fixed seed makes the
test deterministic, and the last test shows that the same statistics reject weak generators.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from numba import njit, prange

from kernels import rng

ALPHA = 1e-6
N_FLAT = 50_000_000
N_STREAMS, N_K = 5_000, 10_000


@njit(cache=True, parallel=True)
def _flat_words(key, n):
    h0, s0, m0, s1, m1 = rng.flat_streams(key, np.uint64(0))
    out = np.empty(n, np.uint32)
    for i in prange(n):
        out[i] = rng.flat_word(np.uint64(i), h0, s0, m0, s1, m1)
    return out


@njit(cache=True, parallel=True)
def _mac_words(key, n_streams, n_k):
    """out[e, k] = rand32(key, _counter(e, 1, k)), as the MAC kernels draw them (a row's streams once)."""
    S = np.empty(n_streams, np.uint32)
    M = np.empty(n_streams, np.uint32)
    rng.fill_streams(key, np.uint64(1), np.uint64(4), n_streams, S, M)
    out = np.empty((n_streams, n_k), np.uint32)
    for e in prange(n_streams):
        for k in range(n_k):
            out[e, k] = rng.word(S[e], M[e], rng.step(k))
    return out


@njit(cache=True)
def _bit_tables(w):
    """counts[a, b, x, y]: words whose bit a is x and bit b is y (a < b, within a word); serial[a, x, y]:
    word i's bit a is x and word i + 1's bit a is y."""
    counts = np.zeros((32, 32, 2, 2), np.int64)
    serial = np.zeros((32, 2, 2), np.int64)
    for i in range(w.size):
        v = w[i]
        nxt = w[(i + 1) % w.size]
        for a in range(32):
            x = (v >> a) & 1
            serial[a, x, (nxt >> a) & 1] += 1
            for b in range(a + 1, 32):
                counts[a, b, x, (v >> b) & 1] += 1
    return counts, serial


@pytest.fixture(scope="module")
def words():
    key = rng.make_key(20261206)
    return {"flat": _flat_words(key, N_FLAT), "mac": _mac_words(key, N_STREAMS, N_K)}


def _uniformity(w):
    """p-values of chi-square tests of the top and the low 16 bits against the uniform distribution."""
    return [scipy.stats.chisquare(np.bincount(part, minlength=1 << 16)).pvalue
            for part in ((w >> 16).astype(np.int64), (w & 0xFFFF).astype(np.int64))]


def _pearson(x, y, chunk=10_000_000):
    """Fisher's combination of Pearson correlation tests on chunks of the pairs (x[i], y[i])."""
    ps = [scipy.stats.pearsonr(x[i:i + chunk].astype(np.float64), y[i:i + chunk].astype(np.float64)).pvalue
          for i in range(0, x.size, chunk)]
    return scipy.stats.combine_pvalues(ps, method="fisher").pvalue


def _bits(w):
    """p-values: each bit's frequency (binomial), each pair of bits (chi-square 2x2), each bit against the
    same bit of the next word."""
    ones = [int(np.count_nonzero(w & np.uint32(1 << b))) for b in range(32)]
    ps = [scipy.stats.binomtest(c, w.size, 0.5).pvalue for c in ones]
    counts, serial = _bit_tables(w[:2_000_000])
    pairs = [scipy.stats.chi2_contingency(counts[a, b], correction=False).pvalue
             for a in range(32) for b in range(a + 1, 32)]
    ser = [scipy.stats.chi2_contingency(serial[a], correction=False).pvalue for a in range(32)]
    return ps, pairs, ser


def _passes(ps) -> bool:
    return min(ps) > ALPHA / len(ps)


def test_uniformity(words):
    ps = _uniformity(words["flat"]) + _uniformity(words["mac"].ravel())
    assert words["flat"].size + words["mac"].size >= 10**8
    assert _passes(ps), ps


def test_serial_correlation(words):
    f, m = words["flat"], words["mac"]
    ps = [_pearson(f[:-1], f[1:]),                              # along the flat stream
          _pearson(m[:, :-1].ravel(), m[:, 1:].ravel()),         # along k in each output's stream
          _pearson(m[:-1].ravel(), m[1:].ravel())]               # neighbouring outputs at the same k
    assert _passes(ps), ps


@pytest.mark.parametrize("layout", ["flat", "mac"])
def test_bit_independence(words, layout):
    w = words[layout].ravel() if layout == "flat" else words[layout].T.ravel()  # "mac": across outputs
    ps, pairs, ser = _bits(w)
    for family in (ps, pairs, ser):
        assert _passes(family), (min(family), len(family))


def test_the_statistics_reject_weak_generators():
    """The same tests, on 10**7 words, fail for a Weyl sequence without the finaliser (uniform, but
    serially correlated and with regular low bits) and for a finaliser with its last multiply left out."""
    n = 10_000_000
    l = np.arange(1, n + 1, dtype=np.uint64)
    weyl = ((l * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    half = weyl ^ (weyl >> np.uint32(16))
    half = (half.astype(np.uint64) * np.uint64(0x85EBCA6B) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    for bad in (weyl, half):
        ps, pairs, ser = _bits(bad)
        families = [_uniformity(bad), [_pearson(bad[:-1], bad[1:])], ps, pairs, ser]
        assert not all(_passes(f) for f in families)
