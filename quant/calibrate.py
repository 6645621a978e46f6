"""Calibration: the real range ``[lo, hi]`` a tensor is quantized with.

Methods (``method``), each giving ``(lo, hi)`` for a tensor (or for each channel of a weight tensor;
then ``x`` below is that channel's values); :func:`quant.scales.compute_qparams` turns the range into a
scale and zero point:

* ``"minmax"``: ``lo = min(x)``, ``hi = max(x)``.
* ``"percentile"`` (``p`` in [50, 100], default 99.99): ``P_p(v)`` is the linear-interpolation
  percentile of the ``n`` values ``v`` (numpy's default, Hyndman & Fan type 7): with ``v`` sorted
  ascending, ``h = (n - 1) * (p / 100)`` (float64), ``P = v[floor(h)] + (h - floor(h)) *
  (v[floor(h) + 1] - v[floor(h)])`` (the second term only when ``h`` is not an integer).

  - symmetric schemes: ``c = P_p(|x|)``; ``lo = max(min(x), -c)``, ``hi = min(max(x), c)``;
  - asymmetric schemes: ``hi = P_p(x)``, ``lo = -P_p(-x)`` (= ``P_(100-p)(x)`` in exact arithmetic).

* ``"mse"``: the range minimising the squared quantization error, searched over a grid. With
  ``[mn, mx]`` the min-max range, the candidates are ``(mn * a_i, mx * a_i)`` for ``a_i = i / G``,
  ``i = 1..G`` (``G = mse_grid``, default 100; float64): the range shrunk towards zero in steps of
  1/G. Each candidate is turned into QParams for the *target* format, scheme and scale kind (so a
  power-of-two scale, the narrow symmetric range, a float format's grid are all accounted for), and
  its error is ``sum((dequantize(quantize(x)) - x)**2)`` (float64) over the values -- the real
  quantize function of the format, no model of it. The candidate with the smallest error wins; among
  equal errors the largest ``i`` (the least clipping). A zero range returns itself.

Activations are observed batch by batch (:class:`Observer`); the results are those of the formulas
above on all the values of all the calibration images, computed exactly:

* min-max: running min / max;
* percentile: the observer is told the total count ``n`` up front and keeps only the
  ``n - floor(h)`` largest values (of ``|x|``, or of ``x`` and ``-x``) -- exactly the order
  statistics the formula needs;
* MSE: on a uniform random **sample** of at most ``mse_samples`` values (default 2**18): each value
  gets the 64-bit key ``rand32(key(seed), j) * 2**32 + j`` (:mod:`kernels.rng`, ``j`` the value's
  flat index in the stream of all calibration values), and the values with the smallest keys are
  kept; so the sample does not depend on the batch size. When ``n <= mse_samples`` every value is
  used. The grid ends ``mn``, ``mx`` are the exact min / max of all values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kernels.rng import make_key, rand32_py

from .scales import compute_qparams

__all__ = ["METHODS", "CalibConfig", "tensor_range", "Observer", "percentile_sorted", "mse_range"]

METHODS = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class CalibConfig:
    """Calibration settings (validated): ``method``, ``percentile`` p, ``mse_grid`` G,
    ``mse_samples`` (activation sample size for the MSE search) and ``seed`` of that sample."""

    method: str = "minmax"
    percentile: float = 99.99
    mse_grid: int = 100
    mse_samples: int = 1 << 18
    seed: int = 0

    def __post_init__(self):
        check_method(self.method)
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 50.0 <= p <= 100.0:
            raise ValueError(f"percentile must be a number in [50, 100], got {p!r}")
        for name in ("mse_grid", "mse_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(METHODS)}")
    return method


def _virtual_index(n: int, p: float):
    h = (n - 1) * (float(p) / 100.0)
    fl = math.floor(h)
    return fl, h - fl


def percentile_sorted(tail, n: int, p: float):
    """``P_p`` of ``n`` values given the sorted (ascending) tail ``tail`` = the ``n - floor(h)`` largest
    values (rows: one tail per channel, or 1-D). See the module docstring."""
    tail = np.asarray(tail, dtype=np.float64)
    fl, frac = _virtual_index(n, p)
    need = n - fl
    if tail.shape[-1] != need:
        raise ValueError(f"percentile needs the {need} largest of {n} values, got {tail.shape[-1]}")
    a = tail[..., 0]
    if frac == 0.0:
        return a
    return a + frac * (tail[..., 1] - a)


def _tail(v2d, n, p):
    """Sorted tails of the rows of ``v2d`` (rows: channels)."""
    fl, _ = _virtual_index(n, p)
    part = np.partition(v2d, fl, axis=-1)[..., fl:]
    return np.sort(part, axis=-1)


def _percentile_rows(x2d, p, symmetric):
    n = x2d.shape[-1]
    mn, mx = x2d.min(axis=-1), x2d.max(axis=-1)
    if symmetric:
        c = percentile_sorted(_tail(np.abs(x2d), n, p), n, p)
        return np.maximum(mn, -c), np.minimum(mx, c)
    hi = percentile_sorted(_tail(x2d, n, p), n, p)
    lo = -percentile_sorted(_tail(-x2d, n, p), n, p)
    return lo, hi


def _grid(cfg: CalibConfig):
    return np.arange(1, cfg.mse_grid + 1, dtype=np.float64) / float(cfg.mse_grid)


def mse_range(x2d, mn, mx, fmt, scheme, kind, cfg: CalibConfig, what="tensor"):
    """The MSE-optimal ``(lo, hi)`` per row of ``x2d`` over the grid ``(mn * a_i, mx * a_i)``.

    ``x2d``: (rows, values) float64; ``mn``, ``mx``: (rows,) grid ends. Returns two (rows,) arrays."""
    if kind not in ("real", "pow2"):
        raise ValueError(f"{what}: calibration method 'mse' searches over scales; scale={kind!r} has none to search "
                         "(use scale='real' or 'pow2')")
    x2d = np.asarray(x2d, dtype=np.float64)
    mn = np.asarray(mn, dtype=np.float64).reshape(-1)
    mx = np.asarray(mx, dtype=np.float64).reshape(-1)
    best_err = np.full(mn.shape, np.inf)
    best_a = np.ones(mn.shape)
    xt = x2d.T  # (values, rows): QParams broadcast per-channel scales over the last axis
    for a in _grid(cfg):
        qp = compute_qparams(mn * a, mx * a, fmt, scheme, kind, what)
        err = ((qp.dequantize(qp.quantize(xt)) - xt) ** 2).sum(axis=0)
        better = err <= best_err  # ties: the later (larger) a wins
        best_err = np.where(better, err, best_err)
        best_a = np.where(better, a, best_a)
    return mn * best_a, mx * best_a


def tensor_range(x, method, fmt=None, scheme="symmetric", kind="real", channel_axis=None, cfg: CalibConfig = None,
                 what="tensor"):
    """``(lo, hi)`` of a whole tensor held in memory (weights), per tensor (``channel_axis=None``:
    scalars) or per channel along ``channel_axis`` ((C,) arrays). ``fmt``/``scheme``/``kind`` are the
    target's (used by ``"mse"``)."""
    cfg = cfg or CalibConfig(method=check_method(method))
    check_method(method)
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError(f"{what}: cannot calibrate an empty tensor")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} non-finite value(s); calibration needs finite values")
    x2d = x.reshape(1, -1) if channel_axis is None else np.moveaxis(x, channel_axis, -1).reshape(-1, x.shape[channel_axis]).T
    mn, mx = x2d.min(axis=-1), x2d.max(axis=-1)
    if method == "minmax":
        lo, hi = mn, mx
    elif method == "percentile":
        lo, hi = _percentile_rows(x2d, cfg.percentile, scheme == "symmetric")
    else:
        lo, hi = mse_range(x2d, mn, mx, fmt, scheme, kind, cfg, what)
    if channel_axis is None:
        return float(lo[0]), float(hi[0])
    return lo, hi


class Observer:
    """Streaming range of one activation tensor over the calibration batches.

    ``n_total``: the number of values that will be observed (needed by ``"percentile"``);
    ``fmt``/``scheme``/``kind``: the target (``"mse"``). ``update(batch)`` then ``result() -> (lo, hi)``.
    """

    def __init__(self, method, n_total: int, fmt=None, scheme="symmetric", kind="real", cfg: CalibConfig = None,
                 what="tensor"):
        self.method = check_method(method)
        self.cfg = cfg or CalibConfig(method=method)
        self.n_total = int(n_total)
        self.fmt, self.scheme, self.kind, self.what = fmt, scheme, kind, what
        self.count = 0
        self.mn, self.mx = math.inf, -math.inf
        if method == "percentile":
            fl, _ = _virtual_index(self.n_total, self.cfg.percentile)
            self.keep = self.n_total - fl
            self.tails = {}  # name -> kept largest values
        elif method == "mse":
            self.key = make_key(self.cfg.seed)
            self.sample = np.empty(0)
            self.sample_keys = np.empty(0, dtype=np.uint64)

    def _keep_largest(self, name, v):
        cur = self.tails.get(name)
        v = v if cur is None else np.concatenate([cur, v])
        if v.size > self.keep:
            v = np.partition(v, v.size - self.keep)[v.size - self.keep:]
        self.tails[name] = v

    def update(self, batch):
        v = np.asarray(batch, dtype=np.float64).reshape(-1)
        if not np.isfinite(v).all():
            raise ValueError(f"{self.what}: the calibration activations hold {int((~np.isfinite(v)).sum())} "
                             "non-finite value(s)")
        if v.size == 0:
            return
        self.mn = min(self.mn, float(v.min()))
        self.mx = max(self.mx, float(v.max()))
        if self.method == "percentile":
            if self.scheme == "symmetric":
                self._keep_largest("abs", np.abs(v))
            else:
                self._keep_largest("pos", v)
                self._keep_largest("neg", -v)
        elif self.method == "mse":
            j = np.arange(self.count, self.count + v.size, dtype=np.uint64)
            if self.count + v.size >= 1 << 32:
                raise ValueError(f"{self.what}: more than 2**32 calibration values; use fewer calibration images")
            keys = (rand32_py(self.key, j) << np.uint64(32)) | j
            keys = np.concatenate([self.sample_keys, keys])
            vals = np.concatenate([self.sample, v])
            m = self.cfg.mse_samples
            if keys.size > m:
                sel = np.argpartition(keys, m - 1)[:m]
                keys, vals = keys[sel], vals[sel]
            self.sample_keys, self.sample = keys, vals
        self.count += v.size

    def result(self):
        if self.count == 0:
            raise ValueError(f"{self.what}: no calibration values observed")
        if self.count != self.n_total:
            raise ValueError(f"{self.what}: observed {self.count} values, expected {self.n_total}")
        if self.method == "minmax":
            return self.mn, self.mx
        if self.method == "percentile":
            n, p = self.n_total, self.cfg.percentile
            if self.scheme == "symmetric":
                c = float(percentile_sorted(np.sort(self.tails["abs"]), n, p))
                return max(self.mn, -c), min(self.mx, c)
            hi = float(percentile_sorted(np.sort(self.tails["pos"]), n, p))
            lo = -float(percentile_sorted(np.sort(self.tails["neg"]), n, p))
            return lo, hi
        order = np.argsort(self.sample_keys, kind="stable")
        lo, hi = mse_range(self.sample[order].reshape(1, -1), [self.mn], [self.mx], self.fmt, self.scheme, self.kind,
                           self.cfg, self.what)
        return float(lo[0]), float(hi[0])
