"""Counter-based random numbers for stochastic rounding.

Every random draw is a pure function of ``(seed, counter)``, so results never depend on the number
of threads, the chunking or the order of evaluation:

* ``key = mix64(seed)``;
* ``word(counter) = mix64(key + (counter + 1) * GAMMA) >> 32`` (the upper 32 bits),

where ``mix64`` is SplitMix64's output function and ``GAMMA = 0x9E3779B97F4A7C15`` its increment
(Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014). This is
exactly SplitMix64's stream started at state ``key``, read at position ``counter``.

``counter`` is the flat C-order index of the element for :func:`kernels.quantize`; the MAC kernels
document their own counter layout.
"""

from __future__ import annotations

import secrets

import numpy as np
from numba import njit

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_ONE = np.uint64(1)


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64's finaliser (a bijection on uint64)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def rand32(key, counter):
    """The 32-bit random word at ``counter`` of the stream ``key`` (both uint64), as uint64."""
    return mix64(stream_base(key, counter)) >> _S32


#: ``(4 << 32) * GAMMA`` (mod 2**64): the step of :func:`stream_base` between MAC lanes, whose counters
#: step by ``4 << 32`` per output (kernels.ops._counter)
LANE_GAMMA = np.uint64(((4 << 32) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)


@njit(cache=True, inline="always")
def stream_base(key, counter):
    """``key + (counter + 1) * GAMMA``: then ``rand32(key, counter + j * (4 << 32))`` is
    ``mix64(base + j * LANE_GAMMA) >> 32`` (wrapping uint64 arithmetic), which vectorises over ``j`` as
    an induction variable, one multiply fewer per word."""
    return key + (counter + _ONE) * GAMMA


@njit(cache=True, inline="always")
def lane_word(base, j):
    """The 32-bit word of lane ``j`` of the stream at ``base`` (see :func:`stream_base`), as uint64."""
    return mix64(np.uint64(base) + np.uint64(j) * LANE_GAMMA) >> _S32


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


def rand32_py(key, counters) -> np.ndarray:
    """Vectorised numpy version of :func:`rand32` (for tests and references)."""
    c = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (c + np.uint64(1)) * GAMMA
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        z = z ^ (z >> _S31)
    return z >> _S32
