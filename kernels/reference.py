"""``kernels.reference``: a plain, slow, literal statement of the MAC semantics.

This module re-states the semantics documented in :mod:`kernels.mac` as directly as possible, so that
it can be read as documentation and used as the independent reference the fast kernels
(:func:`kernels.matmul`, :func:`kernels.conv2d`, :func:`kernels.depthwise_conv2d`) are tested
against, bit for bit. Nothing here is fast: it is numpy, vectorised over the output elements, with
explicit loops over the reduction index ``k`` (and over tree levels / chunks), and every single
rounding goes through the generic scalar rounding core (``kernels.quantize._round_array``, which
calls :func:`kernels._core.round_scalar` once per value). No BLAS, no shortcuts.

Every MAC problem is first written as a list of output elements ``e`` (flat C-order index of the
output array), each with ``K`` operand pairs ``(x[e, k], w[e, k])``:

* matmul ``(M, K) @ (K, N)``: ``e = m * N + n``, ``x[e, k] = a[m, k]``, ``w[e, k] = b[k, n]``;
* conv2d: the im2col GEMM: ``x`` rows are the zero-padded input patches of each output pixel,
  ``k = (dh * kw + dw) * cin + ci``, ``w`` the weights reshaped to ``(kh * kw * cin, cout)``;
* depthwise conv2d: output channel ``c * m + j`` has ``k = dh * kw + dw``,
  ``x[e, k] = patch[dh, dw, c]``, ``w[e, k] = weights[dh, dw, c, j]``.

Then (stages as in :mod:`kernels.mac`):

1. operands are rounded into ``spec.a`` / ``spec.b`` (nearest, the format's default overflow; MX
   blocks along the reduction axis) *before* im2col, so padding adds exact zeros;
2. ``p[e, k] = x[e, k] * w[e, k]`` exactly (float64; the operand precisions add up to at most 53 bits),
   then rounded into ``spec.product`` if given (stage 0, ``t = k``);
3. accumulation into ``spec.accum`` in the chosen order: every addition is computed exactly as a
   float64 value plus its TwoSum residual and rounded once (stage 1, ``t`` as documented); an exact
   zero sum is +0, except -0 under ``down`` unless both operands are +0 (IEEE 754 section 6.3);
4. the accumulator is rounded into ``spec.out`` if given (stage 2, ``t = 0``).

Stochastic rounding counters are ``((e + offset) * 4 + stage) * 2**32 + t``.
``stats=True`` counts the rounding events of stages 0, 1 and 2 (operand rounding in stage 1 of the
list above raises no events: it saturates or gives inf silently as :func:`kernels.quantize` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import _core as C
from .formats import MXFormat
from .mac import as_spec
from .quantize import _round_array, quantize
from .rng import make_key

__all__ = ["ref_matmul", "ref_conv2d", "ref_depthwise_conv2d", "RefStats"]

STAGE_PRODUCT, STAGE_ACCUM, STAGE_OUT = 0, 1, 2
PAIRWISE_LEVEL = 2**24  # pairwise: the addition at level l, position i has t = l * 2**24 + i


@dataclass
class RefStats:
    """Counts of rounding events over all products, additions and output roundings."""

    saturated: int = 0  # rounded magnitude above max, clamped to +-max
    wrapped: int = 0  # integer / fixed code reduced modulo 2**bits
    overflowed: int = 0  # overflow to +-inf (or NaN in formats without inf)
    invalid: int = 0  # NaN / inf into an integer / fixed format

    def add(self, events: np.ndarray) -> None:
        self.saturated += int(np.count_nonzero(events == C.EV_SAT))
        self.wrapped += int(np.count_nonzero(events == C.EV_WRAP))
        self.overflowed += int(np.count_nonzero(events == C.EV_INF))
        self.invalid += int(np.count_nonzero(events == C.EV_INVALID))


# ---------------------------------------------------------------------------------------------
# the MAC core: E output elements, K operand pairs each
# ---------------------------------------------------------------------------------------------

def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a + b == s + err`` exactly (Knuth's TwoSum), ``s`` the float64 sum rounded to nearest.

    Where ``s`` is not finite (an infinite operand, or NaN) there is no residual: ``err = 0``."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
    err[~np.isfinite(s)] = 0.0
    return s, err


class _Rounder:
    """Rounds arrays of exact values (value + residual) for output elements ``e`` at one stage."""

    def __init__(self, spec, key, n_elements, offset, stats):
        self.spec = spec
        self.key = key
        self.stats = stats
        self.e = np.arange(n_elements, dtype=np.uint64) + np.uint64(offset)

    def counters(self, stage: int, t) -> np.ndarray:
        """``((e + offset) * 4 + stage) * 2**32 + t``, broadcast over the trailing axes of ``t``."""
        t = np.asarray(t, dtype=np.uint64)
        base = (self.e * np.uint64(4) + np.uint64(stage)) << np.uint64(32)
        return base.reshape((-1,) + (1,) * t.ndim) + t

    def __call__(self, x, resid, fmt, rounding, stage, t, overflow=None):
        counters = np.broadcast_to(self.counters(stage, t), x.shape)
        values, events = _round_array(x, resid, fmt, rounding, overflow or self.spec.overflow_for(fmt), self.key,
                                      self.spec.rand_bits, counters)
        self.stats.add(events)
        return values


def _mac(x: np.ndarray, w: np.ndarray, spec, key, offset: int, stats: RefStats) -> np.ndarray:
    """The MAC result of each row of ``x``, ``w`` (shape (E, K), operands already rounded into their
    formats): a float64 array of E values in ``spec.out_format``."""
    E, K = x.shape
    R = _Rounder(spec, key, E, offset, stats)

    # 2. products: exact in float64, then (optionally) rounded into the product format, t = k
    with np.errstate(invalid="ignore", over="ignore"):
        p = x * w  # IEEE: inf * 0 is NaN
    if spec.product is not None:
        p = R(p, np.zeros_like(p), spec.product, spec.product_rounding, STAGE_PRODUCT, np.arange(K))

    # 3. accumulation: each addition acc + p is exact (s + err) and rounded once into accum
    def add(acc, term, t, inner=False):
        """``acc + term`` rounded once into the accumulator (``inner``: into the partial sums' format)."""
        fmt, rounding, ovf = ((spec.inner, spec.inner_rounding, spec.inner_overflow_for()) if inner and spec.inner
                              else (spec.accum, spec.accum_rounding, None))
        s, err = _two_sum(acc, term)
        if rounding == "down":
            # IEEE 754 6.3: an exact zero sum is -0 under roundTowardNegative unless both operands are +0
            both_pos_zero = (acc == 0) & (term == 0) & ~np.signbit(acc) & ~np.signbit(term)
            s = np.where((s == 0) & ~both_pos_zero, -0.0, s)
        return R(s, err, fmt, rounding, STAGE_ACCUM, t, ovf)

    if K == 0:
        acc = np.zeros(E)  # +0
    elif spec.order == "sequential":
        acc = np.zeros(E)  # starts from +0
        for k in range(K):
            acc = add(acc, p[:, k], k)
    elif spec.order == "pairwise":
        if K == 1:  # a single term is rounded once, t = 0
            acc = R(p[:, 0], np.zeros(E), spec.accum, spec.accum_rounding, STAGE_ACCUM, 0)
        else:
            level, lev = p, 0
            while level.shape[1] > 1:
                n_pairs = level.shape[1] // 2
                i = np.arange(n_pairs)
                summed = add(level[:, 0:2 * n_pairs:2], level[:, 1:2 * n_pairs:2], lev * PAIRWISE_LEVEL + i)
                if level.shape[1] % 2:  # an odd last element moves up unchanged
                    summed = np.concatenate([summed, level[:, -1:]], axis=1)
                level, lev = summed, lev + 1
            acc = level[:, 0]
    else:  # chunked
        n_chunks = -(-K // spec.chunk)
        acc = np.zeros(E)
        for c in range(n_chunks):
            part = np.zeros(E)  # each partial sum starts from +0, t = k for the term p_k
            for k in range(c * spec.chunk, min((c + 1) * spec.chunk, K)):
                part = add(part, p[:, k], k, inner=True)
            acc = add(acc, part, K + c)  # partial sums added sequentially, t = K + c

    # 4. output rounding, t = 0
    if spec.out is not None:
        acc = R(acc, np.zeros(E), spec.out, spec.accum_rounding, STAGE_OUT, 0)
    return acc


def _run(x, w, out_shape, spec, seed, offset, stats):
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
        raise ValueError(f"offset must be a non-negative int, got {offset!r}")
    key = make_key(seed) if spec.is_stochastic else np.uint64(0)
    st = RefStats()
    # The reference rounds many tiny arrays; a parallel launch per call costs up to ~1 ms on a busy
    # machine, so its Numba calls run on one thread (results never depend on threads).
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        acc = _mac(x, w, spec, key, int(offset), st)
    finally:
        numba.set_num_threads(threads)
    dtype = np.float32 if spec.out_format.fits_float32 else np.float64
    out = acc.astype(dtype).reshape(out_shape)  # exact: every value is in out_format
    return (out, st) if stats else out


def _operand(x, fmt, axis):
    """Input rounded into an operand format (nearest, default overflow; MX blocks along ``axis``),
    as float64."""
    return np.asarray(quantize(x, fmt, rounding="nearest", axis=axis if isinstance(fmt, MXFormat) else None),
                      dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# argument checking and geometry
# ---------------------------------------------------------------------------------------------

def _array(x, name, ndim, what):
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array ({what}), got shape {x.shape}")
    return x


def _strides(stride) -> tuple[int, int]:
    def ok(s):
        return isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1

    if ok(stride):
        return int(stride), int(stride)
    if isinstance(stride, (tuple, list, np.ndarray)) and np.ndim(stride) == 1 and len(stride) == 2 \
            and all(ok(s) for s in stride):
        return int(stride[0]), int(stride[1])
    raise ValueError(f"stride must be a positive int or a pair of positive ints, got {stride!r}")


def _padding(padding) -> str:
    if padding not in ("valid", "same"):
        raise ValueError(f"unknown padding {padding!r}; valid: 'valid', 'same'")
    return padding


def _out_size(n, k, s, padding) -> tuple[int, int, int]:
    """Output size, padding before and total padding along one spatial axis (TensorFlow's rules:
    'valid' has no padding; 'same' gives ceil(n / s) outputs with
    pad_total = max((out - 1) * s + k - n, 0), pad_before = pad_total // 2)."""
    if padding == "same":
        out = -(-n // s)
        pad_total = max((out - 1) * s + k - n, 0)
        return out, pad_total // 2, pad_total
    return ((n - k) // s + 1 if n >= k else 0), 0, 0


def _patches(x, kh, kw, sh, sw, padding):
    """im2col: the ``(N, OH, OW, kh, kw, C)`` zero-padded input patches of NHWC ``x``:
    ``patch[n, i, j, dh, dw, c] = xpad[n, i * sh + dh, j * sw + dw, c]``."""
    n, h, w, c = x.shape
    oh, ph, pth = _out_size(h, kh, sh, padding)
    ow, pw, ptw = _out_size(w, kw, sw, padding)
    xp = np.zeros((n, h + pth, w + ptw, c))  # padded positions are exact +0
    xp[:, ph:ph + h, pw:pw + w, :] = x
    out = np.zeros((n, oh, ow, kh, kw, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
    return out


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------

def ref_matmul(a, b, spec, seed=None, offset=0, stats=False):
    """``a @ b`` (shapes (M, K) and (K, N)) through the MAC unit ``spec`` (a MacSpec or preset name),
    following :mod:`kernels.mac` literally. Returns float32 when ``spec.out_format.fits_float32``,
    else float64; with ``stats=True`` returns ``(out, RefStats)``."""
    spec = as_spec(spec)
    a = _array(a, "a", 2, "(M, K)")
    b = _array(b, "b", 2, "(K, N)")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul shapes {a.shape} and {b.shape} do not match: a has K={a.shape[1]} "
                         f"columns but b has {b.shape[0]} rows")
    A = _operand(a, spec.a, axis=1)
    B = _operand(b, spec.b, axis=0)
    (M, K), N = A.shape, B.shape[1]
    x = np.repeat(A, N, axis=0)  # row e = m * N + n holds a[m, :]
    w = np.tile(B.T, (M, 1))  # and b[:, n]
    return _run(x, w, (M, N), spec, seed, offset, stats)


def _check_window(name, xshape, wshape, padding):
    """A window needs a tap, and with 'valid' padding must fit in the input (else there is no output)."""
    kh, kw = wshape[:2]
    if kh == 0 or kw == 0:
        raise ValueError(f"{name}: a {kh}x{kw} window has no tap")
    if padding == "valid" and (kh > xshape[1] or kw > xshape[2]):
        raise ValueError(f"{name}: the {kh}x{kw} kernel is larger than the {xshape[1]}x{xshape[2]} input with "
                         "padding='valid'")


def ref_conv2d(x, w, spec, stride=1, padding="valid", seed=None, offset=0, stats=False):
    """2-D convolution (cross-correlation, as ``tf.nn.conv2d``) of NHWC ``x`` with HWIO ``w``."""
    spec = as_spec(spec)
    x = _array(x, "x", 4, "NHWC input")
    w = _array(w, "w", 4, "HWIO weights")
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"conv2d: input {x.shape} has {x.shape[3]} channels but weights {w.shape} "
                         f"expect {w.shape[2]} input channels")
    sh, sw = _strides(stride)
    padding = _padding(padding)
    _check_window("conv2d", x.shape, w.shape, padding)
    X = _operand(x, spec.a, axis=3)
    W = _operand(w, spec.b, axis=2)
    kh, kw, cin, cout = W.shape
    P = _patches(X, kh, kw, sh, sw, padding)
    n, oh, ow = P.shape[:3]
    K = kh * kw * cin
    rows = P.reshape(n * oh * ow, K)  # k = (dh * kw + dw) * cin + ci
    Wm = W.reshape(K, cout)
    xe = np.repeat(rows, cout, axis=0)  # e = row * cout + co
    we = np.tile(Wm.T, (rows.shape[0], 1))
    return _run(xe, we, (n, oh, ow, cout), spec, seed, offset, stats)


def ref_depthwise_conv2d(x, w, spec, stride=1, padding="valid", seed=None, offset=0, stats=False):
    """Depthwise 2-D convolution (as ``tf.nn.depthwise_conv2d``) of NHWC ``x`` with weights
    ``(kh, kw, C, m)``; output channel ``c * m + j``."""
    spec = as_spec(spec)
    x = _array(x, "x", 4, "NHWC input")
    w = _array(w, "w", 4, "(kh, kw, C, multiplier) weights")
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"depthwise_conv2d: input {x.shape} has {x.shape[3]} channels but weights {w.shape} "
                         f"expect {w.shape[2]} channels")
    sh, sw = _strides(stride)
    padding = _padding(padding)
    _check_window("depthwise_conv2d", x.shape, w.shape, padding)
    X = _operand(x, spec.a, axis=3)
    W = _operand(w, spec.b, axis=2)
    kh, kw, c, m = W.shape
    P = _patches(X, kh, kw, sh, sw, padding)  # (n, oh, ow, kh, kw, c)
    n, oh, ow = P.shape[:3]
    K = kh * kw
    rows = P.reshape(n * oh * ow, K, c)  # k = dh * kw + dw
    # e = row * (c * m) + ci * m + j
    xe = np.broadcast_to(rows.transpose(0, 2, 1)[:, :, None, :], (rows.shape[0], c, m, K)).reshape(-1, K)
    we = np.broadcast_to(W.reshape(K, c, m).transpose(1, 2, 0)[None], (rows.shape[0], c, m, K)).reshape(-1, K)
    return _run(xe, we, (n, oh, ow, c * m), spec, seed, offset, stats)
