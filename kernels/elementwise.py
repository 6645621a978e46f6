"""Elementwise activation functions applied after a MAC layer (in the array's output stage).

``activate(y, name)`` works in place on float arrays where it can: ``linear`` (identity), ``relu``
(max(y, 0)), ``relu6`` (min(max(y, 0), 6)), ``softmax`` over the last axis (max-subtracted, as Keras).
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("linear", "relu", "relu6", "softmax")


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
    raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
