"""Prepared weight operands, reused across the kernel calls of one block (:func:`reuse_weights`).

Each call of :func:`kernels.matmul`, :func:`kernels.conv2d` or :func:`kernels.depthwise_conv2d` prepares its
right operand (``b``, the weights ``w``) from scratch: it checks its dtype and rounds it into the spec's
format, scans its magnitude range for the data-dependent path gates, and lays it out for the kernel
(float32 column panels for the tiles, a float64 copy for the float64 paths). A network run calls each layer
once per slice of images with the same weights, and :mod:`hwsim.graph.runner` puts MobileNetV2 at
224 x 224 through one image per slice: the weights' column panels alone were 17 % of its fp8 run
(cProfile of ``hwsim.run``, 60 images, ``--avx2``, AMD EPYC; with the reuse, 37.4 -> 44.0 img/s in an A/B run).

Inside ``with reuse_weights():`` the kernels do that work once per (weight array object, format, axis) and
reuse the result: the rounded array, and anything derived from it, keyed by the rounded array's buffer
address with the view's shape, strides and dtype (so only views of a prepared buffer can hit, and their
values are the same). The rounded values, and so every result, are exactly those of the calls without the
block. An entry lives as long as its weight array (``weakref.finalize``), so a fresh array each call (a
grouped convolution's slices, an array whose address is reused) never finds another's entry.

The promise the caller makes: no weight array passed to the kernels inside the block is changed in place
inside the block. :func:`hwsim.run` and the sweep's points keep it (the layers' weights are not written during
a run). The cost: the prepared copies (rounded weights, panels, a float64 copy) of every weight array in use
stay in memory until the block ends, two to three times the weights' size.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("kernels_reuse_weights", default=None)

def _address(z) -> int:
    return z.__array_interface__["data"][0]


class _Memo:
    def __init__(self):
        self.rounded = {}  # (id(w), fmt, axis) -> rounded array (a new one: prepare never returns w or a view)
        self.derived = {}  # buffer address of a rounded array -> {(tag, shape, strides, dtype): value}
        self.finalizers = {}  # key -> its weight's finalizer: detached when the block ends, so the weights
        #                       do not keep this memo alive

    def forget(self, key, address):
        self.rounded.pop(key, None)
        self.derived.pop(address, None)
        self.finalizers.pop(key, None)


@contextlib.contextmanager
def reuse_weights():
    """Within the block, prepare each weight operand once (see the module docstring). Nested blocks share
    the outer one's entries."""
    if _ACTIVE.get() is not None:
        yield
        return
    memo = _Memo()
    token = _ACTIVE.set(memo)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        for f in list(memo.finalizers.values()):
            f.detach()
        memo.finalizers.clear()
        memo.rounded.clear()
        memo.derived.clear()


def rounded(w, fmt, axis, prepare):
    """``prepare(w, fmt, axis)``, once per (array object, format, axis) inside :func:`reuse_weights`."""
    m = _ACTIVE.get()
    if m is None:
        return prepare(w, fmt, axis)
    key = (id(w), fmt, axis)
    r = m.rounded.get(key)
    if r is None:  # w is an ndarray (the kernels' np.asarray): weak-referenceable
        r = m.rounded[key] = prepare(w, fmt, axis)
        address = _address(r)
        m.derived[address] = {}
        m.finalizers[key] = weakref.finalize(w, m.forget, key, address)
    return r


def derived(z, tag, compute):
    """``compute(z)`` for an array ``z``, once per view of a prepared weight buffer inside
    :func:`reuse_weights` (``tag`` names the computation; other arrays are computed every time)."""
    m = _ACTIVE.get()
    if m is None or not m.derived:
        return compute(z)
    d = m.derived.get(_address(z))
    if d is None:
        return compute(z)
    key = (tag, z.shape, z.strides, z.dtype.str)
    if key not in d:
        d[key] = compute(z)
    return d[key]
