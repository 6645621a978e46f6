"""Float TF-Lite models (float32, or float16 weights) in hwsim: every operator becomes a plain IR layer, so
the network runs with any MAC spec, like an imported Keras model (:func:`load_float_tflite`).

A model is float when no tensor its operators compute is integer-quantized (the converter's default
output, and its float16-weight variant: ``optimizations = [DEFAULT]`` with ``supported_types =
[float16]``, where the weights are float16 constants behind DEQUANTIZE operators).
:func:`hwsim.frontends.tflite.load_tflite` sends such files here.

The operators, one converter each (:data:`CONVERTERS`; fused activations NONE, RELU, RELU6):

======================================  =============================================================
TF-Lite operator                        IR
======================================  =============================================================
CONV_2D, DEPTHWISE_CONV_2D              Conv2D / DepthwiseConv2D (OHWI -> HWIO, (1, H, W, C*M) ->
                                        (H, W, C, M); strides, padding, dilation)
FULLY_CONNECTED                         Dense (on the last axis with keep_num_dims; else the input is
                                        flattened first, as TF-Lite does)
ADD, MUL, SUB                           Add / Mul of two tensors; with a constant (a scalar or a
                                        vector along the last axis) an Affine
MAX_POOL_2D, AVERAGE_POOL_2D            Pool2D
MEAN over H and W                       GlobalAvgPool2D
RESHAPE, SQUEEZE, EXPAND_DIMS           Reshape to the operator's static output shape
PAD, PADV2 (zero value, H and W)        ZeroPad2D
CONCATENATION                           Concat
SOFTMAX (beta 1), LOGISTIC, TANH,       Activation: softmax, sigmoid, tanh, relu, relu6, hard_silu,
RELU, RELU6, HARD_SWISH, GELU (exact)   gelu
DEQUANTIZE of a float16 constant        folded: the constant in float32
======================================  =============================================================

Constants are read from the model; integer shape arithmetic that only feeds a RESHAPE is skipped. Any
other operator raises ``ValueError`` naming it, its index and the supported list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwsim.graph import ir

from .tflite.convert import fused_activation as _fused_activation
from .tflite.convert import padding_of as _padding
from .tflite.convert import unsupported as _unsupported


class _Graph:
    """The state of one conversion: the interpreter's view of the model and the IR built so far."""

    def __init__(self, where, it, tensors, opts):
        self.where, self.it, self.tensors, self.opts = where, it, tensors, opts
        self.producer: dict[int, str] = {}
        self.consts: dict[int, np.ndarray] = {}
        self.layers: list[ir.Layer] = []

    def shape(self, t) -> tuple[int, ...]:
        return tuple(int(i) for i in self.tensors[int(t)]["shape"])

    def const(self, t):
        """The value of constant tensor ``t`` (float32 for float16 constants folded through DEQUANTIZE), or
        None when ``t`` is computed."""
        t = int(t)
        if t in self.consts:
            return self.consts[t]
        if t < 0 or t in self.producer:
            return None
        try:
            v = np.array(self.it.get_tensor(t))
        except ValueError:
            return None
        self.consts[t] = v
        return v

    def src(self, t, i, name) -> str:
        s = self.producer.get(int(t))
        if s is None:
            raise unsupported(self.where, i, name, f"input tensor {int(t)} is neither the model input nor computed "
                              "by an operator")
        return s

    def add(self, layer, out_t, activation="linear"):
        self.layers.append(layer)
        name = layer.name
        if activation != "linear":
            name = f"{layer.name}_{activation}"
            self.layers.append(ir.Activation(name, (layer.name,), activation=activation))
        self.producer[int(out_t)] = name


def unsupported(where, index, name, why=""):
    return _unsupported(where, index, name, why, sorted(CONVERTERS), " in a float model")


def _fused(g, opt, i, name):
    return _fused_activation(opt, g.where, i, name)


def _weights(g, t, i, name):
    w = g.const(t)
    if w is None or w.dtype.kind != "f":
        raise unsupported(g.where, i, name, f"weights tensor {int(t)} is not a float constant")
    return w.astype(np.float32)


def _bias(g, op, i, name):
    if len(op["inputs"]) < 3 or int(op["inputs"][2]) < 0:
        return None
    return _weights(g, op["inputs"][2], i, name).reshape(-1)


def _conv(g, i, name, op, opt, lname):
    x = op["inputs"][0]
    w = _weights(g, op["inputs"][1], i, name)
    common = dict(bias=_bias(g, op, i, name), strides=(opt.strideH, opt.strideW), padding=_padding(opt),
                  dilation=(opt.dilationHFactor, opt.dilationWFactor))
    if name == "CONV_2D":
        kernel = np.transpose(w, (1, 2, 3, 0))  # OHWI -> HWIO
        groups = g.shape(x)[3] // kernel.shape[2]
        layer = ir.Conv2D(lname, (g.src(x, i, name),), kernel=kernel, groups=groups, **common)
    else:
        c = g.shape(x)[3]
        kernel = w.reshape(w.shape[1], w.shape[2], c, w.shape[3] // c)
        layer = ir.DepthwiseConv2D(lname, (g.src(x, i, name),), kernel=kernel, **common)
    g.add(layer, op["outputs"][0], _fused(g, opt, i, name))


def _fully_connected(g, i, name, op, opt, lname):
    x = op["inputs"][0]
    w = _weights(g, op["inputs"][1], i, name)  # (out, in)
    src = g.src(x, i, name)
    xs = g.shape(x)
    if len(xs) > 2 and not getattr(opt, "keepNumDims", False):
        if int(np.prod(xs[1:])) != w.shape[1]:
            raise unsupported(g.where, i, name, f"input {xs} for weights {w.shape}")
        g.layers.append(ir.Reshape(lname + "_flatten", (src,), target=(-1,)))
        src = lname + "_flatten"
    g.add(ir.Dense(lname, (src,), kernel=np.ascontiguousarray(w.T), bias=_bias(g, op, i, name)), op["outputs"][0],
          _fused(g, opt, i, name))


def _binary(g, i, name, op, opt, lname):
    a, b = op["inputs"][:2]
    ca, cb = g.const(a), g.const(b)
    act = _fused(g, opt, i, name)
    if ca is None and cb is None:
        if name == "SUB":
            raise unsupported(g.where, i, name, "a difference of two computed tensors")
        srcs = (g.src(a, i, name), g.src(b, i, name))
        layer = ir.Add(lname, srcs, activation=act) if name == "ADD" else ir.Mul(lname, srcs)
        g.add(layer, op["outputs"][0], "linear" if name == "ADD" else act)
        return
    if ca is not None and cb is not None:
        raise unsupported(g.where, i, name, "two constant operands")
    first = ca is None  # x (op) c
    x, c = (a, cb) if first else (b, ca)
    c = np.asarray(c, np.float64)
    if c.size > 1:  # a vector along the last axis only: every other axis of the constant (aligned right) is 1
        if c.shape[-1] != g.shape(x)[-1] or any(n != 1 for n in c.shape[:-1]):
            raise unsupported(g.where, i, name, f"a constant of shape {c.shape} for a tensor of shape {g.shape(x)} "
                              "(scalars and vectors along the last axis only)")
        c = c.reshape(-1)
    else:
        c = c.reshape(())
    scale, offset = ir.affine_of(name.lower(), c, first)
    g.add(ir.Affine(lname, (g.src(x, i, name),), scale=np.asarray(scale, np.float64),
                    offset=np.asarray(offset, np.float64)), op["outputs"][0], act)


def _pool(g, i, name, op, opt, lname):
    layer = ir.Pool2D(lname, (g.src(op["inputs"][0], i, name),), op="max" if name == "MAX_POOL_2D" else "avg",
                      pool_size=(opt.filterHeight, opt.filterWidth), strides=(opt.strideH, opt.strideW),
                      padding=_padding(opt))
    g.add(layer, op["outputs"][0], _fused(g, opt, i, name))


def _mean(g, i, name, op, opt, lname):
    x = op["inputs"][0]
    axes = g.const(op["inputs"][1])
    axes = sorted(int(a) % len(g.shape(x)) for a in np.asarray(axes).reshape(-1))
    if len(g.shape(x)) != 4 or axes != [1, 2]:
        raise unsupported(g.where, i, name, f"mean over axes {axes} of a {len(g.shape(x))}-D tensor (only H and W)")
    g.add(ir.GlobalAvgPool2D(lname, (g.src(x, i, name),), keepdims=bool(opt.keepDims)), op["outputs"][0])


def _reshape(g, i, name, op, opt, lname):
    y = g.shape(op["outputs"][0])
    g.add(ir.Reshape(lname, (g.src(op["inputs"][0], i, name),), target=y[1:]), op["outputs"][0])


def _pad(g, i, name, op, opt, lname):
    x = op["inputs"][0]
    p = np.asarray(g.const(op["inputs"][1])).astype(np.int64).reshape(-1, 2)
    if name == "PADV2" and float(np.asarray(g.const(op["inputs"][2])).reshape(())) != 0.0:
        raise unsupported(g.where, i, name, "a nonzero padding value")
    if p.shape[0] != 4 or np.any(p[[0, 3]] != 0) or np.any(p < 0):
        raise unsupported(g.where, i, name, f"paddings {p.tolist()} (only non-negative H and W padding)")
    g.add(ir.ZeroPad2D(lname, (g.src(x, i, name),), padding=((int(p[1, 0]), int(p[1, 1])), (int(p[2, 0]), int(p[2, 1])))),
          op["outputs"][0])


def _concat(g, i, name, op, opt, lname):
    rank = len(g.shape(op["outputs"][0]))
    axis = int(opt.axis) % rank
    if axis == 0:
        raise unsupported(g.where, i, name, "concatenation along the batch axis")
    srcs = tuple(g.src(t, i, name) for t in op["inputs"])
    g.add(ir.Concat(lname, srcs, axis=-1 if axis == rank - 1 else axis - 1), op["outputs"][0],
          _fused(g, opt, i, name))


_ACTIVATIONS = {"LOGISTIC": "sigmoid", "TANH": "tanh", "RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hard_silu",
                "SOFTMAX": "softmax", "GELU": "gelu"}


def _activation(g, i, name, op, opt, lname):
    if name == "SOFTMAX" and float(opt.beta) != 1.0:
        raise unsupported(g.where, i, name, f"beta {opt.beta} (only 1)")
    if name == "GELU" and getattr(opt, "approximate", False):
        raise unsupported(g.where, i, name, "the tanh approximation (only the exact GELU)")
    g.add(ir.Activation(lname, (g.src(op["inputs"][0], i, name),), activation=_ACTIVATIONS[name]), op["outputs"][0])


def _dequantize(g, i, name, op, opt, lname):
    v = g.const(op["inputs"][0])
    if v is None or v.dtype != np.float16:
        raise unsupported(g.where, i, name, "only float16 constants are dequantized in a float model")
    g.consts[int(op["outputs"][0])] = v.astype(np.float32)


#: TF-Lite operator -> converter (module docstring)
CONVERTERS = {"CONV_2D": _conv, "DEPTHWISE_CONV_2D": _conv, "FULLY_CONNECTED": _fully_connected, "ADD": _binary,
              "MUL": _binary, "SUB": _binary, "MAX_POOL_2D": _pool, "AVERAGE_POOL_2D": _pool, "MEAN": _mean,
              "RESHAPE": _reshape, "SQUEEZE": _reshape, "EXPAND_DIMS": _reshape, "PAD": _pad, "PADV2": _pad,
              "CONCATENATION": _concat, "DEQUANTIZE": _dequantize, **{k: _activation for k in _ACTIVATIONS}}


def is_float_model(ops, tensors) -> bool:
    """True when no tensor an operator computes is integer-quantized (int8/uint8/int16 with scales)."""
    for op in ops:
        for t in op["outputs"]:
            d = tensors[int(t)]
            if np.dtype(d["dtype"]).kind in "iu" and len(d["quantization_parameters"]["scales"]):
                return False
    return True


def load_float_tflite(where, it, ops, opts, tensors, skip) -> ir.Network:
    """The IR of a float TF-Lite model already opened by :func:`hwsim.frontends.tflite.load_tflite`
    (``it`` its interpreter, ``skip`` the shape-only operators)."""
    ins, outs = it.get_input_details(), it.get_output_details()
    in_idx, out_idx = int(ins[0]["index"]), int(outs[0]["index"])
    in_shape = tuple(int(i) for i in ins[0]["shape"])
    if np.dtype(ins[0]["dtype"]) != np.float32:
        raise ValueError(f"{where}: the float model's input is {np.dtype(ins[0]['dtype']).name} (float32 expected)")
    g = _Graph(where, it, tensors, opts)
    g.producer[in_idx] = ir.INPUT
    for i, (op, (oname, opt)) in enumerate(zip(ops, opts)):
        name = op["op_name"]
        if i in skip:
            continue
        conv = CONVERTERS.get(name)
        if conv is None:
            raise unsupported(where, i, name)
        if len(op["outputs"]) != 1:
            raise unsupported(where, i, name, f"{len(op['outputs'])} outputs")
        if name != "DEQUANTIZE" and g.shape(op["outputs"][0])[:1] != (1,):
            raise unsupported(where, i, name, f"output shape {g.shape(op['outputs'][0])} (batch 1 first expected)")
        conv(g, i, name, op, opt, f"op{i:03d}_{name.lower()}")
    if out_idx not in g.producer:
        raise ValueError(f"{where}: the output tensor {out_idx} is not computed by any operator")
    net = ir.Network(name=Path(where).stem, input_shape=in_shape[1:], layers=g.layers, output=g.producer[out_idx],
                     meta={"source": where, "format": "tflite-float"})
    want = tuple(int(i) for i in outs[0]["shape"])[1:]
    if net.shapes[net.output] != want:
        raise ValueError(f"{where}: the IR computes an output of shape {net.shapes[net.output]}, the model {want}")
    return net
