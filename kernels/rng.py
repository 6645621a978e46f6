"""Counter-based random numbers for stochastic rounding.

Every random draw is a pure function of ``(seed, counter)``, so results never depend on the number
of threads, the chunking or the order of evaluation. With ``key = mix64(seed)`` (64 bits) and the 64-bit
``counter = h * 2**32 + l`` (``h``, ``l`` its upper and lower 32 bits), all arithmetic modulo 2**32:

* the stream of ``h``: ``s = fmix32(fmix32(h ^ lo32(key)) ^ hi32(key))`` and the odd multiplier
  ``m = fmix32(s + G) | 1``;
* ``word(counter) = fmix32((s + (l + 1) * G) * m)``, a 32-bit word,

where ``G = 0x9E3779B9`` (2**32 / golden ratio), ``fmix32`` is MurmurHash3's 32-bit finaliser (Appleby,
MurmurHash3, public domain: ``x ^= x >> 16; x *= 0x85EBCA6B; x ^= x >> 13; x *= 0xC2B2AE35; x ^= x >> 16``,
a bijection) and ``mix64`` SplitMix64's (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014). Along ``l`` a stream is a Weyl sequence with the odd step ``m * G`` (all 2**32
words distinct) through ``fmix32``; its start and step depend on ``h`` and the key, so two streams run the
same sequence shifted only where their odd steps coincide (2**31 possible steps), and then by a shift that
is a random 32-bit number, not a small one. Only 32-bit multiplies: they vectorise on AVX2 (``vpmulld``), which has no
64-bit multiply. The kernels compute ``(s, m)`` once per stream (:func:`stream`) and one ``fmix32`` and a
multiply per word (:func:`word`).

Until 2026-12 the word was SplitMix64's: ``mix64(key + (counter + 1) * 0x9E3779B97F4A7C15) >> 32``. Every
stochastic result changed with the new generator (within seed noise: ``results/README.md``).

``counter`` is the flat C-order index of the element for :func:`kernels.quantize`; the MAC kernels
document their own counter layout (``h`` the output and stage, ``l`` the position along K).
``tests/test_rng_quality.py`` tests the words' statistics on 10**8 draws.

Numba inlines these functions into :mod:`kernels.ops` and :mod:`kernels.quantize`; a change here recompiles
those kernels too, because the cache entries of every module of :mod:`kernels` carry the stamp of the whole
package (:mod:`kernels._cache`).
"""

from __future__ import annotations

import secrets

import numpy as np
from numba import njit

G32 = np.uint64(0x9E3779B9)
_MASK = np.uint64(0xFFFFFFFF)
_C1 = np.uint64(0x85EBCA6B)
_C2 = np.uint64(0xC2B2AE35)
_S32 = np.uint64(32)


_U16, _U13 = np.uint32(16), np.uint32(13)
_K1, _K2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)


@njit(cache=True, inline="always")
def fmix32(x):
    """MurmurHash3's finaliser of the 32-bit value ``x``; a 32-bit value (typed uint64 by Numba's integer
    promotion). Written with explicit uint32 truncations so that LLVM keeps vector lanes 32 bits wide."""
    x = np.uint32(x)
    x = np.uint32(x ^ (x >> _U16))
    x = np.uint32(x * _K1)
    x = np.uint32(x ^ (x >> _U13))
    x = np.uint32(x * _K2)
    return x ^ (x >> _U16)


@njit(cache=True, inline="always")
def stream(key, h):
    """``(s, m)`` of the stream ``h`` (the counter's upper 32 bits) under ``key`` (uint64), as uint32s."""
    s = np.uint32(fmix32(np.uint32(fmix32(np.uint32(np.uint64(h) ^ key)) ^ (key >> _S32))))
    m = np.uint32(fmix32(np.uint32(s + np.uint32(G32))) | np.uint32(1))
    return s, m


@njit(cache=True, inline="always")
def step(l):
    """``(l + 1) * G mod 2**32`` (uint32) for the counter's lower half ``l``: the part of a word shared by
    all streams at one position."""
    return np.uint32((np.uint64(l) + np.uint64(1)) * G32)


@njit(cache=True, inline="always")
def word(s, m, c):
    """The 32-bit word of the stream ``(s, m)`` at the position whose :func:`step` is ``c`` (uint32s)."""
    return fmix32(np.uint32(np.uint32(s + c) * m))


@njit(cache=True, inline="always")
def rand32(key, counter):
    """The 32-bit random word at ``counter`` of the stream ``key`` (both uint64), as uint64."""
    s, m = stream(key, counter >> _S32)
    return np.uint64(word(s, m, step(counter & _MASK)))


@njit(cache=True, inline="always")
def fill_streams(key, h0, hstep, n, S, M):
    """``S[j], M[j] = stream(key, h0 + j * hstep)`` for j < n (uint32 arrays; h modulo 2**32): the streams of
    a row of MAC outputs, computed once per row."""
    for j in range(n):
        s, m = stream(key, (np.uint64(h0) + np.uint64(j) * np.uint64(hstep)) & _MASK)
        S[j] = s
        M[j] = m


@njit(cache=True, inline="always")
def flat_streams(key, base):
    """For a run of fewer than 2**32 consecutive counters from ``base``: ``(h0, s0, m0, s1, m1)``, the
    streams of the two upper halves h0 = base >> 32 and h0 + 1 the run can touch (:func:`flat_word`)."""
    h0 = np.uint64(base) >> _S32
    s0, m0 = stream(key, h0)
    s1, m1 = stream(key, (h0 + np.uint64(1)) & _MASK)
    return h0, s0, m0, s1, m1


@njit(cache=True, inline="always")
def flat_word(c, h0, s0, m0, s1, m1):
    """``rand32(key, c)`` for a counter ``c`` of the run :func:`flat_streams` describes: a word and a select
    per counter instead of three more hashes."""
    lo = (c >> _S32) == h0
    return np.uint64(word(s0 if lo else s1, m0 if lo else m1, step(c & _MASK)))


def make_key(seed) -> np.uint64:
    """The stream key for ``seed`` (an int; ``None`` draws 64 bits of fresh OS entropy)."""
    if seed is None:
        seed = secrets.randbits(64)
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {int(seed)}: larger or negative seeds would be "
                         "reduced modulo 2**64 and collide with others")
    return _mix64_py(int(seed))


def _mix64_py(z: int) -> np.uint64:
    mask = 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return np.uint64(z ^ (z >> 31))


def _fmix32_np(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * _C1) & _MASK
    x = x ^ (x >> np.uint64(13))
    x = (x * _C2) & _MASK
    return x ^ (x >> np.uint64(16))


def rand32_py(key, counters) -> np.ndarray:
    """Vectorised numpy version of :func:`rand32` (for tests and references): the statement above,
    literally."""
    c = np.asarray(counters, dtype=np.uint64)
    key = np.uint64(key)
    with np.errstate(over="ignore"):
        s = _fmix32_np(_fmix32_np((c >> _S32) ^ (key & _MASK)) ^ (key >> _S32))
        m = _fmix32_np((s + G32) & _MASK) | np.uint64(1)
        x = (s + ((c & _MASK) + np.uint64(1)) * G32) & _MASK
        return _fmix32_np((x * m) & _MASK)
