"""Keras importer: a ``.keras`` / ``.h5`` file (or zoo name, or a live ``keras.Model``) -> :class:`hwsim.graph.ir.Network`.

What it does to the graph, in order:

1. every supported Keras layer becomes one IR layer (Dropout and InputLayer disappear: their
   consumers read their input);
2. a BatchNormalization becomes an :class:`~hwsim.graph.ir.Affine` with ``scale = gamma /
   sqrt(var + eps)`` and ``offset = beta - mean * scale`` (computed in float64);
3. the graph passes :func:`hwsim.graph.passes.fold_batch_norms` (an Affine after a linear MAC layer
   is folded into its kernel and bias) and :func:`hwsim.graph.passes.fuse_activations` (an activation
   after a linear MAC layer becomes its activation).

Supported Keras layers: see :data:`SUPPORTED`. Anything else raises ``ValueError`` naming the layer,
its type and the supported list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quant import tfimport

from kernels.elementwise import ALIASES as ACTIVATION_ALIASES

from ..graph import ir, passes

SUPPORTED = ("InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization",
             "LayerNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
             "Flatten", "Reshape", "Dropout", "Add", "Multiply", "Concatenate", "ZeroPadding2D", "UpSampling2D",
             "Rescaling", "Normalization")


def load(source, **options) -> ir.Network:
    """The IR of a zoo model name (``cifar_cnn``, ``mobilenet``), a ``.keras`` / ``.h5`` path or a
    ``keras.Model``. A corrupt file raises ``ValueError`` naming it. A saved ``keras.Sequential`` whose
    layers Keras re-calls while loading (they look shared) is rebuilt from fresh copies of its layers
    first (:func:`_sequential_fresh`)."""
    from . import check_options

    check_options(options, "Keras")
    model, source = _load_keras(source)
    try:
        net = from_keras(model)
    except ValueError as exc:
        if "is shared" not in str(exc):
            raise
        net = from_keras(_sequential_fresh(model, exc))
        source += " (Sequential rebuilt as functional)"
    net.meta["source"] = source
    return net


def _sequential_fresh(model, exc):
    """A functional copy of a ``keras.Sequential`` built from fresh copies of its layers (same configs and
    weights, each called once). Keras re-calls the layers of a loaded Sequential (the zoo's cifar_cnn),
    which :func:`from_keras` takes for shared layers; other models keep the error."""
    keras = tfimport.keras()
    if not isinstance(model, keras.Sequential):
        raise exc
    inp = keras.Input(tuple(model.inputs[0].shape[1:]), name="pixels")
    x = inp
    for layer in model.layers:
        fresh = layer.__class__.from_config(layer.get_config())
        x = fresh(x)
        fresh.set_weights(layer.get_weights())
    return keras.Model(inp, x, name=model.name)


def _load_keras(name_or_path):
    keras = tfimport.keras()

    if isinstance(name_or_path, keras.Model):
        return name_or_path, f"keras.Model {name_or_path.name}"
    s = os.fspath(name_or_path)
    from .. import zoo

    if s in zoo.NAMES:
        return zoo.load_keras(s), f"zoo:{s}"
    p = Path(s)
    if p.suffix not in (".keras", ".h5"):
        raise ValueError(f"model {s!r} is neither a zoo name ({', '.join(zoo.NAMES)}) nor a .keras / .h5 file")
    if not p.is_file():
        raise FileNotFoundError(f"model file {p} does not exist")
    try:
        return keras.models.load_model(p, compile=False), str(p)
    except Exception as exc:  # keras raises many kinds for a damaged archive
        raise ValueError(f"cannot load Keras model {p}: the file is corrupt or not a Keras model ({exc})") from None


def _activation_name(act, layer) -> str:
    name = getattr(act, "__name__", str(act))
    name = ACTIVATION_ALIASES.get(name, name)
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
    if cfg["padding"] not in ("valid", "same"):
        raise ValueError(f"layer {layer.name!r}: padding {cfg['padding']!r} unsupported; valid: valid, same")
    return cfg


def _norm_axis(layer, axis, rank=None) -> int:
    """A Keras layer's single ``axis`` (counting the batch) as an axis of the IR tensor without the batch:
    -1 for the last one, else its index. ``rank``: of the tensor with the batch (default: the input's)."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(f"layer {layer.name!r}: normalization over axes {list(axis)} unsupported; one axis only")
        axis = axis[0]
    rank = len(layer.input.shape) if rank is None else rank  # with the batch
    a = int(axis) % rank
    if a == 0:
        raise ValueError(f"layer {layer.name!r}: normalization over the batch axis is unsupported")
    return -1 if a == rank - 1 else a - 1


def _np(w):
    return np.asarray(w, dtype=np.float32)


def _convert(layer, inputs, name=None):
    """One Keras layer -> an IR layer named ``name`` (default: the layer's), or None for identity layers."""
    t = type(layer).__name__
    name = layer.name if name is None else name
    if t in ("InputLayer", "Dropout"):
        return None
    if t in ("Conv2D", "DepthwiseConv2D"):
        cfg = _check_conv(layer)
        w = layer.get_weights()
        extra = {"groups": int(cfg.get("groups", 1))} if t == "Conv2D" else {}
        op = ir.Conv2D if t == "Conv2D" else ir.DepthwiseConv2D
        return op(name, inputs, kernel=_np(w[0]), bias=_np(w[1]) if cfg["use_bias"] else None,
                  strides=_pair(cfg["strides"]), padding=cfg["padding"], dilation=_pair(cfg.get("dilation_rate", 1)),
                  activation=_activation_name(layer.activation, layer), **extra)
    if t == "SeparableConv2D":  # a depthwise convolution, then a 1x1 convolution with the bias and activation
        cfg = _check_conv(layer)
        w = layer.get_weights()
        dw = ir.DepthwiseConv2D(f"{name}/depthwise", inputs, kernel=_np(w[0]), bias=None, strides=_pair(cfg["strides"]),
                                padding=cfg["padding"], dilation=_pair(cfg.get("dilation_rate", 1)))
        pw = ir.Conv2D(name, (dw.name,), kernel=_np(w[1]), bias=_np(w[2]) if cfg["use_bias"] else None,
                       activation=_activation_name(layer.activation, layer))
        return [dw, pw]
    if t == "Multiply":
        return ir.Mul(name, inputs)
    if t == "Concatenate":
        return ir.Concat(name, inputs, axis=_norm_axis(layer, layer.get_config().get("axis", -1), rank=len(layer.output.shape)))
    if t == "UpSampling2D":
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {name!r}: data_format {cfg['data_format']!r} unsupported; only channels_last")
        return ir.UpSample2D(name, inputs, size=_pair(cfg["size"]), interpolation=cfg.get("interpolation", "nearest"))
    if t == "LayerNormalization":
        cfg = layer.get_config()
        if _norm_axis(layer, cfg.get("axis", -1)) != -1:
            raise ValueError(f"layer {name!r}: LayerNormalization over axis {cfg['axis']} unsupported; only the last axis")
        if cfg.get("rms_scaling"):
            raise ValueError(f"layer {name!r}: LayerNormalization with rms_scaling=True unsupported (RMS normalization)")
        w = dict(zip([v.path.split("/")[-1] for v in layer.weights], layer.get_weights()))
        return ir.LayerNorm(name, inputs, epsilon=float(cfg["epsilon"]), gamma=w.get("gamma"), beta=w.get("beta"))
    if t == "Dense":
        w = layer.get_weights()
        return ir.Dense(name, inputs, kernel=_np(w[0]), bias=_np(w[1]) if layer.use_bias else None,
                        activation=_activation_name(layer.activation, layer))
    if t == "BatchNormalization":
        cfg = layer.get_config()
        axis = _norm_axis(layer, cfg.get("axis", -1))
        w = dict(zip([v.path.split("/")[-1] for v in layer.weights], layer.get_weights()))
        mean = w["moving_mean"].astype(np.float64)
        var = w["moving_variance"].astype(np.float64)
        gamma = w.get("gamma", np.ones_like(mean)).astype(np.float64)
        beta = w.get("beta", np.zeros_like(mean)).astype(np.float64)
        s = gamma / np.sqrt(var + cfg["epsilon"])
        return ir.Affine(name, inputs, scale=s, offset=beta - mean * s, axis=axis)
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
        axis = layer.get_config().get("axis", -1)
        axis = -1 if axis is None or mean.size == 1 else _norm_axis(layer, axis)
        return ir.Affine(name, inputs, scale=inv, offset=-mean * inv, axis=axis)
    raise ValueError(f"unsupported layer {name!r} of type {t}; supported types: {', '.join(SUPPORTED)}")


def from_keras(model) -> ir.Network:
    """Convert a built ``keras.Model`` (Sequential or Functional) into the IR (see module docstring).

    A model nested in it (a Functional or Sequential model used as a layer, as in transfer learning
    with ``keras.applications``) is expanded in place: its layers keep their names, prefixed with
    ``"<nested model>/"`` only where a name is already taken."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "hwsim supports single-input single-output models")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    layers: list[ir.Layer] = []
    out_name = _expand(model, ir.INPUT, layers, {ir.INPUT})
    layers, out_name = passes.fuse_activations(*passes.fold_batch_norms(layers, out_name))
    return ir.Network(model.name, input_shape, layers, output=out_name, meta={"keras_class": type(model).__name__})


def _expand(model, input_name: str, layers: list, taken: set) -> str:
    """Append the IR layers of ``model`` (reading ``input_name``) to ``layers``; returns the name of the
    IR tensor that is the model's output."""
    keras = tfimport.keras()
    sequential = isinstance(model, keras.Sequential)
    # a layer object keeps a node for every time it was called (a Sequential model called again, a
    # model rebuilt from the same layers, a model nested in another...): only the nodes of this
    # model's own graph count
    graph_nodes = {id(n) for ns in getattr(model, "_nodes_by_depth", {}).values() for n in ns}
    local: dict[str, str] = {}  # Keras layer name -> the IR tensor holding its output
    prev = input_name
    # a functional model's operations include the keras.ops calls written between layers (x + 3.0, ...)
    for layer in (model.layers if sequential else getattr(model, "operations", model.layers)):
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
                parents.append(input_name if type(op).__name__ == "InputLayer" else local[op.name])
        if isinstance(layer, keras.Model):
            if len(layer.inputs) != 1 or len(layer.outputs) != 1 or len(parents) != 1:
                raise ValueError(f"nested model {layer.name!r} has {len(layer.inputs)} inputs and "
                                 f"{len(layer.outputs)} outputs; hwsim supports single-input single-output models")
            prev = local[layer.name] = _expand(layer, parents[0], layers, taken)
            continue
        name = layer.name
        if name in taken:
            name = f"{model.name}/{layer.name}"
        n = 1
        while name in taken:
            n += 1
            name = f"{model.name}/{layer.name}_{n}"
        if type(layer).__module__.startswith("keras.src.ops."):
            conv = _convert_op(layer, nodes[0], tuple(parents), name)
        else:
            conv = _convert(layer, tuple(parents), name)
        if conv is None:
            local[layer.name] = parents[0] if parents else input_name
            continue
        for c in conv if isinstance(conv, list) else [conv]:  # a Keras layer may become several IR layers
            taken.add(c.name)
            layers.append(c)
        prev = local[layer.name] = name
    if sequential:
        return prev
    out_op = model.outputs[0]._keras_history[0]
    return input_name if type(out_op).__name__ == "InputLayer" else local[out_op.name]


#: keras.ops calls a functional graph may hold between layers, as IR layers
_OPS = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


def _convert_op(op, node, inputs, name):
    """A ``keras.ops`` call in a functional graph: an elementwise op of two tensors (Add, Multiply) or of
    a tensor and a constant (scalar or per-channel: an Affine), as MobileNetV3's ``x + 3.0`` and ``x *
    (1 / 6)``."""
    t = type(op).__name__
    if t not in _OPS:
        raise ValueError(f"unsupported operation {name!r} (keras.ops {t}) in the model's graph; supported keras.ops "
                         f"calls: {', '.join(_OPS)} of two tensors or of a tensor and a constant; "
                         f"supported layers: {', '.join(SUPPORTED)}")
    args = list(node.arguments.args)
    is_tensor = [hasattr(a, "shape") and type(a).__name__ == "KerasTensor" for a in args]
    if len(args) != 2:
        raise ValueError(f"operation {name!r} (keras.ops {t}) has {len(args)} arguments; 2 supported")
    if all(is_tensor):
        if t == "Add":
            return ir.Add(name, inputs)
        if t == "Multiply":
            return ir.Mul(name, inputs)
        raise ValueError(f"operation {name!r}: keras.ops {t} of two tensors is unsupported; Add and Multiply are")
    c = np.asarray(args[1] if is_tensor[0] else args[0], dtype=np.float64)
    if c.ndim > 1:
        raise ValueError(f"operation {name!r}: keras.ops {t} with a constant of shape {c.shape}; scalars and "
                         "per-channel vectors are supported")
    first = is_tensor[0]  # x (op) c, else c (op) x
    so = ir.affine_of({"Add": "add", "Multiply": "mul", "Subtract": "sub"}.get(t, "div"), c, first)
    if so is None:
        raise ValueError(f"operation {name!r}: a constant divided by a tensor is unsupported")
    scale, offset = so
    return ir.Affine(name, inputs, scale=np.asarray(scale, np.float64), offset=np.asarray(offset, np.float64))
