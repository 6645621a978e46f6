"""Graph passes every frontend can use: they rewrite a topologically ordered list of IR layers.

Both are the operator fusions inference compilers do, and both keep the MAC layer's name (so
per-layer MAC specs and cost reports use the source model's names); readers of the absorbed layer are
pointed at the MAC layer, and so is the network output if it was the absorbed layer.

* :func:`fold_batch_norms`: an :class:`~hwsim.graph.ir.Affine` with per-channel scale and offset on
  the last axis (a batch norm) whose only input is a Conv2D / DepthwiseConv2D / Dense with a linear activation, and
  which is that layer's only consumer, is folded into it: the kernel's output channel ``c`` is scaled
  by ``scale[c]`` and ``bias = bias * scale + offset`` (computed in float64, stored as float32).
* :func:`fuse_activations`: an :class:`~hwsim.graph.ir.Activation` whose input is a MAC layer with a
  linear activation, and which is that layer's only consumer, becomes the MAC layer's activation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ir


def _consumers(layers):
    cons: dict[str, list[str]] = {}
    for l in layers:
        for s in l.inputs:
            cons.setdefault(s, []).append(l.name)
    return cons


def _absorb(layers, output, rewrite):
    """Apply ``rewrite(mac_layer, follower) -> new mac layer or None`` to every (linear MAC layer, its only
    consumer) pair until nothing changes; returns ``(layers, output)``. Layers with a quant record (their own
    integer arithmetic, e.g. onnxruntime's QLinear ops) are never merged."""
    layers = list(layers)
    changed = True
    while changed:
        changed = False
        cons = _consumers(layers)
        by_name = {l.name: l for l in layers}
        for l in layers:
            if len(l.inputs) != 1:
                continue
            src = by_name.get(l.inputs[0])
            if src is None or not src.is_mac or src.activation != "linear" or cons.get(src.name) != [l.name]:
                continue
            if src.quant is not None or l.quant is not None:  # an op with its own arithmetic stays itself
                continue
            new_src = rewrite(src, l)
            if new_src is None:
                continue
            out = []
            for x in layers:
                if x is l:
                    continue
                if x is src:
                    out.append(new_src)
                elif l.name in x.inputs:
                    out.append(dataclasses.replace(x, inputs=tuple(src.name if s == l.name else s for s in x.inputs)))
                else:
                    out.append(x)
            layers = out
            if output == l.name:
                output = src.name
            changed = True
            break
    return layers, output


def fold_batch_norms(layers, output):
    """Fold per-channel affines into the linear MAC layers that feed them (module docstring)."""
    return _absorb(layers, output, lambda src, l: _fold_affine(src, l) if isinstance(l, ir.Affine) else None)


def fuse_activations(layers, output):
    """Make standalone activations after linear MAC layers those layers' activations (module docstring)."""
    return _absorb(layers, output, lambda src, l: dataclasses.replace(src, activation=l.activation)
                   if isinstance(l, ir.Activation) else None)


def _fold_affine(src, bn):
    """A MAC layer with a per-channel affine folded into its kernel and bias; None if the shapes disagree."""
    if np.ndim(bn.scale) != 1 or bn.axis != -1:
        return None
    s = np.asarray(bn.scale, np.float64)
    o = np.asarray(bn.offset, np.float64)
    k = src.kernel.astype(np.float64)
    cout = src.out_channels
    if s.shape != (cout,) or o.shape != (cout,):
        return None
    k = k * src.per_output_channel(s)
    b = np.zeros(cout) if src.bias is None else src.bias.astype(np.float64)
    b = b * s + o
    return dataclasses.replace(src, kernel=k.astype(np.float32), bias=b.astype(np.float32))
