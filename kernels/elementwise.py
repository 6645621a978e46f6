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
"""

from __future__ import annotations

import numpy as np

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
