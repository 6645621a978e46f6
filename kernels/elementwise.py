"""Elementwise activation functions applied after a MAC layer (in the array's output stage).

``activate(y, name)`` computes in ``y``'s precision (float32 after a float32 MAC), in place where it
can, with Keras 3's definitions:

==================  ==========================================================================
``linear``          ``y``
``relu``            ``max(y, 0)``
``relu6``           ``min(max(y, 0), 6)``
``softmax``         over the last axis, max-subtracted: ``exp(y - max) / sum(exp(y - max))``
``sigmoid``         ``1 / (1 + exp(-y))`` (``scipy.special.expit``: no overflow)
``hard_sigmoid``    ``relu6(y + 3) / 6``
``silu``            ``y * sigmoid(y)`` (Keras' ``swish``)
``hard_silu``       ``y * relu6(y + 3) / 6`` (Keras' ``hard_swish``)
``gelu``            ``0.5 * y * (1 + erf(y / sqrt(2)))`` (exact, Keras' default ``approximate=False``)
``tanh``            ``tanh(y)``
==================  ==========================================================================

``bias_activate(y, bias, name)`` is ``activate(y + bias, name)`` for a bias along the last axis, in one
pass over ``y`` for linear / relu / relu6 (:func:`bias_activate`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .quantize import threads_for

ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "sigmoid", "hard_sigmoid", "silu", "hard_silu", "gelu", "tanh")
#: other names of the same functions (Keras 2 / TF-Lite spellings)
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def activate(y, activation: str):
    """Apply ``activation`` to ``y`` (in place for relu / relu6); see the module docstring."""
    if activation == "linear":
        return y
    if activation == "relu":
        return np.maximum(y, 0, out=y)
    if activation == "relu6":
        return np.clip(y, 0, 6, out=y)
    if activation == "softmax":
        z = y - y.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=-1, keepdims=True)
    if activation == "tanh":
        return np.tanh(y, out=y)
    if activation in ("sigmoid", "silu"):
        from scipy.special import expit

        return expit(y) if activation == "sigmoid" else y * expit(y)
    if activation in ("hard_sigmoid", "hard_silu"):
        t = np.clip(y + y.dtype.type(3), 0, 6) / y.dtype.type(6)
        return t if activation == "hard_sigmoid" else y * t
    if activation == "gelu":
        from scipy.special import erf

        one, half = y.dtype.type(1), y.dtype.type(0.5)
        return half * y * (one + erf(y / y.dtype.type(np.sqrt(2.0))))
    raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")


#: the activations :func:`bias_activate` fuses with the bias add (their codes in :func:`_bias_act`)
_FUSED = {"linear": 0, "relu": 1, "relu6": 2}


def bias_activate(y, bias, activation: str):
    """``activate(y + bias, activation)``, overwriting ``y`` (a new array the caller owns, float32 or float64,
    channels on the last axis; ``bias`` of length ``y.shape[-1]`` or None), with the same values and signed
    zeros as numpy's operators: the bias is cast to ``y``'s dtype and added in that precision (one IEEE
    rounding, never fused with anything); relu is ``np.maximum(v, 0)`` (NaN stays NaN, -0 becomes +0),
    relu6 ``np.clip(v, 0, 6)`` (NaN stays, -0 stays -0). A NaN is a NaN either way, but where both y and the
    bias are NaN, which one's sign the sum carries may differ from numpy's (it varies with vectorisation,
    in numpy too). For linear / relu / relu6 on a C-contiguous
    ``y`` this is one parallel pass (:func:`_bias_act`); anything else adds in place and calls
    :func:`activate`."""
    if bias is None:
        return activate(y, activation)
    b = np.asarray(bias).astype(y.dtype)
    code = _FUSED.get(activation)
    if (code is None or y.ndim == 0 or not y.flags.c_contiguous or not y.flags.writeable
            or y.dtype not in (np.float32, np.float64) or b.shape != y.shape[-1:]):
        y = np.add(y, b, out=y) if y.flags.writeable and np.broadcast_shapes(y.shape, b.shape) == y.shape else y + b
        return activate(y, activation)
    if y.size:
        with threads_for(y.size):
            _bias_act(y.reshape(-1, y.shape[-1]), b, np.int64(code))
    return y


@njit(cache=True, parallel=True)
def _bias_act(y, b, code):
    """y[i, j] = act(y[i, j] + b[j]) in y's precision, rows in parallel (each element alone, so the thread
    count cannot matter); ``code`` 0 linear, 1 relu (``v`` when v > 0 or NaN, else +0), 2 relu6 (0 below
    0, 6 above 6, else ``v``: NaN and -0 stay)."""
    for i in prange(y.shape[0]):
        for j in range(y.shape[1]):
            v = y[i, j] + b[j]
            if code == 1:
                if not (v > 0 or v != v):
                    v = 0.0
            elif code == 2:
                if v < 0:
                    v = 0.0
                elif v > 6:
                    v = 6.0
            y[i, j] = v
