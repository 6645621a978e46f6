"""QONNX models (Brevitas' ``export_qonnx``; FINN and hls4ml read the same format) in hwsim: the
``Quant``, ``BipolarQuant`` and ``Trunc`` nodes of the ``qonnx.custom_op.general`` domain, with qonnx's
executor semantics (``qonnx.core.onnx_exec.execute_onnx``, qonnx 1.0.0).

* ``Quant`` (and ``BipolarQuant``, the sign of its input times the scale) on a computed tensor becomes
  :class:`hwsim.graph.ir.IntQuant`, ``Trunc`` (version 2, the one Brevitas writes)
  :class:`hwsim.graph.ir.TruncQuant`; both state the float32 arithmetic.
* On a constant (Brevitas stores float weights and biases with a ``Quant`` after them) the node is
  evaluated at import with the same layer code, so the Conv / Gemm after it reads the quantized weights.
* Scales and zero points broadcast as numpy does against the ONNX tensor (per-channel activation
  scales of shape (1, C, 1, 1)); they are moved to the IR's NHWC layout with it.

The standard ONNX ops around them (Conv, Gemm, Relu, Add, AveragePool, Reshape, ...) are the float
converters of :mod:`hwsim.frontends.onnx`, and run on the emulated MAC array with any MAC spec.
qonnx itself is not needed to import or run such a model (it is the tests' oracle).
"""

from __future__ import annotations

import numpy as np

from hwsim.graph import ir

#: the domains qonnx resolves to its general custom ops (``qonnx.custom_op.registry``)
DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas")


def _dec(v):
    return v.decode() if isinstance(v, bytes) else v


def _param(ctx, node, k, layout, rank):
    """Constant input ``k`` as an array broadcasting against the IR tensor (without batch) of an ONNX
    tensor of ``rank`` held in ``layout``."""
    from .onnx import IMAGE, TO_NHWC

    v = np.asarray(ctx.const(node, k), np.float32)
    if v.ndim == 0:
        return v
    if v.ndim > rank:
        raise ctx.error(node, f"input {k} of shape {v.shape} for a rank-{rank} tensor")
    v = v.reshape((1,) * (rank - v.ndim) + v.shape)
    if v.shape[0] != 1:
        raise ctx.error(node, f"input {k} of shape {v.shape} varies along the batch")
    v = v[0]
    if layout == IMAGE and v.ndim == 3:
        v = np.transpose(v, TO_NHWC)
    return np.ascontiguousarray(v)


def _layer(ctx, node, p, name, src):
    """The node's IR layer reading ``src``; ``p(k)`` gives constant input ``k`` as the layer takes it."""
    from .onnx import _attrs

    a = _attrs(node)
    if node.op_type == "BipolarQuant":
        return ir.IntQuant(name, (src,), scale=p(1), zero_point=0.0, bits=1, signed=True, bipolar=True)
    if node.op_type == "Quant":
        bits = np.asarray(ctx.const(node, 3))
        if bits.size != 1:
            raise ctx.error(node, f"a bit width of shape {bits.shape} (one per tensor)")
        return ir.IntQuant(name, (src,), scale=p(1), zero_point=p(2), bits=float(bits.reshape(())),
                           signed=bool(a.get("signed", 1)), narrow=bool(a.get("narrow", 0)),
                           rounding=_dec(a.get("rounding_mode", "ROUND")))
    # Trunc, version 2: x, scale, zero_point, input_bit_width, output_scale, output_bit_width
    version = ctx.opsets.get(node.domain, 1)
    if version < 2 or len(node.input) != 6:
        raise ctx.error(node, f"Trunc version {version} with {len(node.input)} inputs (only version 2, the one "
                        f"Brevitas writes: opset_import {node.domain} = 2 and 6 inputs)")
    bits = np.asarray(ctx.const(node, 5))
    return ir.TruncQuant(name, (src,), scale=p(1), zero_point=p(2), out_scale=p(4), bits=float(bits.reshape(())),
                         signed=bool(a.get("signed", 1)), narrow=bool(a.get("narrow", 0)),
                         rounding=_dec(a.get("rounding_mode", "FLOOR")))


def quant_node(ctx, node, i):
    """Quant / BipolarQuant / Trunc: an IR layer on a computed tensor, evaluated at import on a constant."""
    from .onnx import _name

    name = _name(ctx, node)
    try:
        if node.input[0] in ctx.consts:  # a weight or bias: quantized at import, its parameters as they are
            layer = _layer(ctx, node, lambda k: np.asarray(ctx.const(node, k), np.float32), name, ir.INPUT)
            ctx.consts[node.output[0]] = layer.run([np.asarray(ctx.consts[node.input[0]], np.float32)])
            return
        src, layout = ctx.src(node)
        rank = len(ctx.onnx_shape(node.input[0]))
        layer = _layer(ctx, node, lambda k: _param(ctx, node, k, layout, rank), name, src)
    except ValueError as e:
        if str(e).startswith(ctx.where):
            raise
        raise ctx.error(node, str(e)) from None
    ctx.out(node, ctx.add(layer), layout)


#: op type -> converter, for the QONNX domains
QONNX_CONVERTERS = {"Quant": quant_node, "BipolarQuant": quant_node, "Trunc": quant_node}
