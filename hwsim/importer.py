"""Keras importer: a ``.keras`` / ``.h5`` file (or zoo name, or a live ``keras.Model``) -> :class:`hwsim.ir.Network`.

What it does to the graph, in order:

1. every supported Keras layer becomes one IR layer (Dropout and InputLayer disappear: their
   consumers read their input);
2. **batch-norm folding** (the operator fusion inference compilers do): a BatchNormalization whose
   only input is a Conv2D / DepthwiseConv2D / Dense with a linear activation, and which is that
   layer's only consumer, is folded into it: with ``s = gamma / sqrt(var + eps)``, the kernel's
   output channel ``c`` is scaled by ``s[c]`` and ``bias = (bias - mean) * s + beta`` (computed in
   float64, stored as float32). Any other BatchNormalization becomes an :class:`~hwsim.ir.Affine`;
3. **activation fusion**: a ReLU / ReLU6 / Activation layer whose input is a MAC layer with a linear
   activation, and which is that layer's only consumer, becomes the MAC layer's activation.

Supported Keras layers: see :data:`SUPPORTED`. Anything else raises ``ValueError`` naming the layer,
its type and the supported list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quant import tfimport

from . import ir

SUPPORTED = ("InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Activation",
             "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Dropout",
             "Add", "ZeroPadding2D", "Rescaling", "Normalization")


def load_model(name_or_path, *, compile=False) -> ir.Network:
    """The IR of a zoo model name (``cifar_cnn``, ``mobilenet``), a ``.keras`` / ``.h5`` path, a
    full-integer ``.tflite`` file (via :func:`quant.load_tflite`), or a ``keras.Model``. A missing or corrupt file raises ``ValueError`` / ``FileNotFoundError`` with the path."""
    if isinstance(name_or_path, (str, os.PathLike)) and os.fspath(name_or_path).endswith(".tflite"):
        from quant import load_tflite  # full-integer TF-Lite models: executed with TF-Lite's arithmetic

        return load_tflite(name_or_path)
    model, source = _load_keras(name_or_path)
    net = from_keras(model)
    net.meta["source"] = source
    return net


def _load_keras(name_or_path):
    keras = tfimport.keras()

    if isinstance(name_or_path, keras.Model):
        return name_or_path, f"keras.Model {name_or_path.name}"
    s = os.fspath(name_or_path)
    from . import zoo

    if s in zoo.NAMES:
        return zoo.load_keras(s), f"zoo:{s}"
    p = Path(s)
    if p.suffix not in (".keras", ".h5"):
        raise ValueError(f"model {s!r} is neither a zoo name ({', '.join(zoo.NAMES)}) nor a .keras / .h5 / .tflite file")
    if not p.is_file():
        raise FileNotFoundError(f"model file {p} does not exist")
    try:
        return keras.models.load_model(p, compile=False), str(p)
    except Exception as exc:  # keras raises many kinds for a damaged archive
        raise ValueError(f"cannot load Keras model {p}: the file is corrupt or not a Keras model ({exc})") from None


def _activation_name(act, layer) -> str:
    name = getattr(act, "__name__", str(act))
    if name in ir.ACTIVATIONS:
        return name
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) uses activation {name!r}; "
                     f"supported: {', '.join(ir.ACTIVATIONS)}")


def _pair(v):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _check_conv(layer):
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: data_format {cfg['data_format']!r} unsupported; only channels_last")
    if _pair(cfg.get("dilation_rate", 1)) != (1, 1):
        raise ValueError(f"layer {layer.name!r}: dilation_rate {cfg['dilation_rate']} unsupported; only 1")
    if cfg.get("groups", 1) != 1:
        raise ValueError(f"layer {layer.name!r}: groups={cfg['groups']} unsupported; only 1")
    if cfg["padding"] not in ("valid", "same"):
        raise ValueError(f"layer {layer.name!r}: padding {cfg['padding']!r} unsupported; valid: valid, same")
    return cfg


def _np(w):
    return np.asarray(w, dtype=np.float32)


def _convert(layer, inputs):
    """One Keras layer -> an IR layer, or None for identity layers."""
    t = type(layer).__name__
    name = layer.name
    if t in ("InputLayer", "Dropout"):
        return None
    if t == "Conv2D":
        cfg = _check_conv(layer)
        w = layer.get_weights()
        return ir.Conv2D(name, inputs, kernel=_np(w[0]), bias=_np(w[1]) if cfg["use_bias"] else None,
                         strides=_pair(cfg["strides"]), padding=cfg["padding"],
                         activation=_activation_name(layer.activation, layer))
    if t == "DepthwiseConv2D":
        cfg = _check_conv(layer)
        w = layer.get_weights()
        return ir.DepthwiseConv2D(name, inputs, kernel=_np(w[0]), bias=_np(w[1]) if cfg["use_bias"] else None,
                                  strides=_pair(cfg["strides"]), padding=cfg["padding"],
                                  activation=_activation_name(layer.activation, layer))
    if t == "Dense":
        w = layer.get_weights()
        return ir.Dense(name, inputs, kernel=_np(w[0]), bias=_np(w[1]) if layer.use_bias else None,
                        activation=_activation_name(layer.activation, layer))
    if t == "BatchNormalization":
        cfg = layer.get_config()
        if cfg.get("axis", -1) not in (-1, 3, [-1], [3]):
            raise ValueError(f"layer {name!r}: BatchNormalization on axis {cfg['axis']} unsupported; only the last axis")
        w = dict(zip([v.path.split("/")[-1] for v in layer.weights], layer.get_weights()))
        mean = w["moving_mean"].astype(np.float64)
        var = w["moving_variance"].astype(np.float64)
        gamma = w.get("gamma", np.ones_like(mean)).astype(np.float64)
        beta = w.get("beta", np.zeros_like(mean)).astype(np.float64)
        s = gamma / np.sqrt(var + cfg["epsilon"])
        return ir.Affine(name, inputs, scale=s, offset=beta - mean * s)
    if t == "ReLU":
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) != 0 or cfg.get("threshold", 0) != 0 or cfg.get("max_value") not in (None, 6.0, 6):
            raise ValueError(f"layer {name!r}: ReLU with {cfg} unsupported; only max_value None or 6, no slope/threshold")
        return ir.Activation(name, inputs, activation="relu" if cfg.get("max_value") is None else "relu6")
    if t == "Activation":
        return ir.Activation(name, inputs, activation=_activation_name(layer.activation, layer))
    if t in ("MaxPooling2D", "AveragePooling2D"):
        cfg = layer.get_config()
        return ir.Pool2D(name, inputs, op="max" if t.startswith("Max") else "avg", pool_size=_pair(cfg["pool_size"]),
                         strides=_pair(cfg["strides"] or cfg["pool_size"]), padding=cfg["padding"])
    if t == "GlobalAveragePooling2D":
        return ir.GlobalAvgPool2D(name, inputs, keepdims=bool(layer.get_config().get("keepdims", False)))
    if t == "Flatten":
        return ir.Reshape(name, inputs, target=(-1,))
    if t == "Reshape":
        return ir.Reshape(name, inputs, target=tuple(int(i) for i in layer.get_config()["target_shape"]))
    if t == "Add":
        return ir.Add(name, inputs)
    if t == "ZeroPadding2D":
        pad = layer.get_config()["padding"]
        return ir.ZeroPad2D(name, inputs, padding=(tuple(pad[0]), tuple(pad[1])))
    if t == "Rescaling":
        cfg = layer.get_config()
        return ir.Affine(name, inputs, scale=np.asarray(cfg["scale"], np.float64), offset=np.asarray(cfg["offset"], np.float64))
    if t == "Normalization":
        mean = np.asarray(layer.mean, np.float64).reshape(-1)
        var = np.asarray(layer.variance, np.float64).reshape(-1)
        inv = 1.0 / np.maximum(np.sqrt(var), 1e-7)  # keras: (x - mean) / maximum(sqrt(var), epsilon)
        return ir.Affine(name, inputs, scale=inv, offset=-mean * inv)
    raise ValueError(f"unsupported layer {name!r} of type {t}; supported types: {', '.join(SUPPORTED)}")


def from_keras(model) -> ir.Network:
    """Convert a built ``keras.Model`` (Sequential or Functional) into the IR (see module docstring)."""
    keras = tfimport.keras()

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "hwsim supports single-input single-output models")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    alias: dict[str, str] = {}  # identity layers -> their input
    layers: list[ir.Layer] = []
    sequential = isinstance(model, keras.Sequential)
    # a layer object keeps a node for every time it was called (a Sequential model called again, a
    # model rebuilt from the same layers...): only the nodes of this model's own graph count
    graph_nodes = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
    prev = ir.INPUT
    for layer in model.layers:
        if sequential:
            parents = [prev]
        else:
            nodes = [n for n in layer._inbound_nodes if id(n) in graph_nodes] or layer._inbound_nodes
            if len(nodes) > 1:
                raise ValueError(f"layer {layer.name!r} is shared ({len(nodes)} call sites in the model); "
                                 "hwsim needs each layer called once")
            parents = []
            for p in (nodes[0].parent_nodes if nodes else []):
                op = p.operation
                pname = ir.INPUT if type(op).__name__ == "InputLayer" else op.name
                parents.append(alias.get(pname, pname))
        conv = _convert(layer, tuple(parents))
        if conv is None:
            alias[layer.name] = parents[0] if parents else ir.INPUT
            continue
        layers.append(conv)
        prev = conv.name
    if sequential:
        out_name = prev
    else:
        out_op = model.outputs[0]._keras_history[0]
        out_name = alias.get(out_op.name, out_op.name)
    layers, out_name = _fuse(layers, out_name)
    return ir.Network(model.name, input_shape, layers, output=out_name, meta={"keras_class": type(model).__name__})


def _consumers(layers):
    cons: dict[str, list[str]] = {}
    for l in layers:
        for s in l.inputs:
            cons.setdefault(s, []).append(l.name)
    return cons


def _replace(layer, **changes):
    import dataclasses

    return dataclasses.replace(layer, **changes)


def _fuse(layers, out_name):
    """Fold batch norms and fuse activations into their producing MAC layers (module docstring).

    The fused layer keeps the MAC layer's name (so per-layer MAC specs and cost reports use the
    Keras conv/dense names); readers of the folded layer are pointed at it. Returns (layers, output)."""
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
            if isinstance(l, ir.Affine) and np.ndim(l.scale) == 1:
                new_src = _fold_affine(src, l)
                if new_src is None:
                    continue
            elif isinstance(l, ir.Activation):
                new_src = _replace(src, activation=l.activation)
            else:
                continue
            out = []
            for x in layers:
                if x is l:
                    continue
                if x is src:
                    out.append(new_src)
                elif l.name in x.inputs:
                    out.append(_replace(x, inputs=tuple(src.name if s == l.name else s for s in x.inputs)))
                else:
                    out.append(x)
            layers = out
            if out_name == l.name:
                out_name = src.name
            changed = True
            break
    return layers, out_name


def _fold_affine(src, bn):
    """Fold a per-channel affine (batch norm) into a MAC layer's kernel and bias; None if shapes disagree."""
    s = np.asarray(bn.scale, np.float64)
    o = np.asarray(bn.offset, np.float64)
    k = src.kernel.astype(np.float64)
    cout = k.shape[2] * k.shape[3] if isinstance(src, ir.DepthwiseConv2D) else k.shape[-1]
    if s.shape != (cout,) or o.shape != (cout,):
        return None
    if isinstance(src, ir.DepthwiseConv2D):
        kh, kw, c, m = k.shape
        k = k * s.reshape(c, m)
    else:
        k = k * s
    b = np.zeros(cout) if src.bias is None else src.bias.astype(np.float64)
    b = b * s + o
    return _replace(src, kernel=k.astype(np.float32), bias=b.astype(np.float32))
