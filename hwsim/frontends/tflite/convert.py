"""The TF-Lite op registry: one converter per builtin op, from a ``.tflite`` operator to IR layers with
their quant records (:mod:`hwsim.frontends.tflite.records`).

:data:`CONVERTERS` maps a TF-Lite builtin op name to an :class:`OpConverter`: the function building the
layer, whether TF 2.21's XNNPACK delegate takes the op (a predicate on the operator, checked against the
interpreter's real partition at load time) and whether TF-Lite's optimized built-in kernel, which runs
the ops XNNPACK declines, computes what the record emulates. Adding an op is adding one entry here (and,
for new arithmetic, one record).

A converter ``fn(ctx, op)`` returns the :class:`hwsim.graph.ir.Layer` producing the op's output, or the
name of an existing layer when the op only renames a tensor (a reshape the IR does not need).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hwsim.graph import ir
from kernels.mac import MacSpec

from quant import requant as rq

from . import records as R
from . import tables
from .records import TensorQ
from .runtime import schema

_ACT = {0: "linear", 1: "relu", 3: "relu6"}
_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def tensor_of(d) -> TensorQ:
    """A :class:`TensorQ` from the interpreter's tensor details."""
    qp = d["quantization_parameters"]
    return TensorQ(index=int(d["index"]), name=str(d["name"]), dtype=np.dtype(d["dtype"]).name,
                   shape=tuple(int(i) for i in d["shape"]), scale=np.asarray(qp["scales"], dtype=np.float32),
                   zero_point=np.asarray(qp["zero_points"], dtype=np.int64), axis=int(qp["quantized_dimension"]))


def unsupported(where, index, name, why="", supported=None, what=""):
    """The error for operator ``index``: ``why`` it cannot be imported, or (no ``why``) the ``supported`` list."""
    if why:
        return ValueError(f"{where}: TF-Lite op {name} (operator #{index}) is not supported: {why}")
    supported = SUPPORTED_OPS if supported is None else supported
    return ValueError(f"{where}: TF-Lite op {name} (operator #{index}) is not supported{what}; supported ops: "
                      f"{', '.join(supported)}")


def fused_activation(opt, where, index, name) -> str:
    a = getattr(opt, "fusedActivationFunction", 0)
    if a not in _ACT:
        raise unsupported(where, index, name, f"fused activation {_ACT_NAMES.get(a, a)} (supported: NONE, RELU, RELU6)")
    return _ACT[a]


def padding_of(opt) -> str:
    return "same" if opt.padding == schema().Padding.SAME else "valid"


@dataclass
class Ctx:
    """What the converters share while one model is imported."""

    where: str
    it: object  # the interpreter (BUILTIN_WITHOUT_DEFAULT_DELEGATES) the tensors are read from
    ops: list  # the interpreter's operator details
    tensors: dict  # tensor index -> the interpreter's tensor details
    kernels: str  # "xnnpack" or "reference"
    mac: MacSpec
    opts: list  # (op name, options object) per operator
    produced: set  # tensors some operator outputs
    shape_only: set  # operators skipped (they only compute a RESHAPE's shape)
    producer: dict = field(default_factory=dict)  # tensor index -> IR layer name
    layers: list = field(default_factory=list)
    delegated: dict = field(default_factory=dict)  # operator index -> bool
    #: tensors whose leading dimension merges the batch with other axes (FULLY_CONNECTED on a rank > 2
    #: input, as the converter writes it): tensor index -> the batch-first shape the IR carries instead
    merged: dict = field(default_factory=dict)
    #: tensors whose shape the interpreter does not know before running (a RESHAPE to a computed shape):
    #: tensor index -> the shape the importer evaluated
    shapes: dict = field(default_factory=dict)
    #: SPACE_TO_BATCH_ND outputs awaiting their convolution: tensor -> (padded source layer, dilation, input)
    pending_dilation: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # int32 shape tensors evaluated by shape_value
    #: the activations' type: "int8", or "int16" for an int16x8 model (:mod:`.int16`)
    act: str = "int8"

    def T(self, i) -> TensorQ:
        return tensor_of(self.tensors[int(i)])

    def const(self, i) -> np.ndarray:
        try:
            return np.array(self.it.get_tensor(int(i)))
        except ValueError as e:
            raise ValueError(f"{self.where}: cannot read constant tensor {int(i)}: {e}") from None

    def is_const(self, i) -> bool:
        return int(i) not in self.produced and int(i) not in self.producer

    def shape_value(self, i) -> np.ndarray:
        """The value of int32 tensor ``i``: a constant, or computed (for a batch of 1) by the skipped shape
        operators that feed a RESHAPE (SHAPE, GATHER, REDUCE_PROD, CONCATENATION, PACK, SLICE,
        STRIDED_SLICE with unit strides)."""
        i = int(i)
        if i not in self.produced:
            return self.const(i).astype(np.int64)
        if i in self.values:
            return self.values[i]
        j = next(j for j, o in enumerate(self.ops) if i in (int(t) for t in o["outputs"]))
        o, opt = self.ops[j], self.opts[j][1]
        name, ins = o["op_name"], [int(t) for t in o["inputs"]]
        fail = lambda why: unsupported(self.where, j, name, why)  # noqa: E731
        if j not in self.shape_only:
            raise fail("a RESHAPE's shape computed by an operator that is not shape arithmetic")
        if name == "SHAPE":
            sig = tuple(int(d) for d in self.tensors[ins[0]]["shape_signature"])
            shape = self.merged.get(ins[0], tuple(self.tensors[ins[0]]["shape"]))
            if any(d < 0 for d in sig[1:]) and ins[0] not in self.merged:
                raise fail(f"the shape of a tensor with unknown dimensions {sig}")
            v = np.array(shape, np.int64)
        elif name == "GATHER":
            v = np.take(self.shape_value(ins[0]), self.shape_value(ins[1]), axis=opt.axis)
        elif name == "REDUCE_PROD":
            v = np.prod(self.shape_value(ins[0]), axis=tuple(self.shape_value(ins[1]).reshape(-1)),
                        keepdims=bool(opt.keepDims))
        elif name == "CONCATENATION":
            v = np.concatenate([self.shape_value(t).reshape(-1) for t in ins])
        elif name == "PACK":
            v = np.stack([self.shape_value(t) for t in ins], axis=opt.axis)
        elif name == "SLICE":
            x, b, n = (self.shape_value(t) for t in ins)
            v = x[int(b[0]):] if int(n[0]) < 0 else x[int(b[0]):int(b[0]) + int(n[0])]
        elif name == "STRIDED_SLICE":
            x, b, e, st = (self.shape_value(t) for t in ins)
            if x.ndim != 1 or int(st[0]) != 1 or opt.ellipsisMask or opt.newAxisMask:
                raise fail("a strided slice other than a unit-stride slice of a 1-D shape")
            lo = 0 if opt.beginMask & 1 else int(b[0])
            hi = len(x) if opt.endMask & 1 else int(e[0])
            v = x[lo] if opt.shrinkAxisMask & 1 else x[lo:hi]
        else:  # pragma: no cover - _SHAPE_OPS lists the ones above
            raise fail("not shape arithmetic the importer evaluates")
        self.values[i] = np.asarray(v, np.int64)
        return self.values[i]


@dataclass
class Op:
    """One operator being converted: ``index``, ``name``, ``opt`` (its options object), ``ins`` / ``outs``
    (tensor indices), ``mode`` ("xnnpack", "builtin" or "reference": whose arithmetic runs it)."""

    ctx: Ctx
    index: int
    name: str
    opt: object
    ins: list
    outs: list
    mode: str

    @property
    def lname(self) -> str:
        return f"op{self.index:03d}_{self.name.lower()}"

    def tensor(self, i) -> TensorQ:
        """Tensor ``i``, with the batch-first shape the IR carries where the converter merged the batch."""
        t = self.ctx.T(i)
        shape = self.ctx.merged.get(t.index, self.ctx.shapes.get(t.index))
        return t if shape is None else dataclasses.replace(t, shape=shape)

    @property
    def x(self) -> TensorQ:
        return self.tensor(self.ins[0])

    @property
    def y(self) -> TensorQ:
        return self.tensor(self.outs[0])

    def fail(self, why="") -> ValueError:
        return unsupported(self.ctx.where, self.index, self.name, why)

    def src(self, t: TensorQ) -> str:
        s = self.ctx.producer.get(t.index)
        if s is None:
            raise self.fail(f"input tensor {t.index} ({t.name}) is neither the model input nor produced by an op")
        return s

    def act(self) -> str:
        return fused_activation(self.opt, self.ctx.where, self.index, self.name)

    def bounds(self, act: str, y: TensorQ) -> tuple[int, int]:
        return R.act_bounds(act, y, "xnnpack" if self.mode == "xnnpack" else "reference")

    def int8(self, *ts: TensorQ) -> None:
        """Each tensor is a per-tensor activation of the model's type (int8; int16 in an int16x8 model)."""
        for t in ts:
            if t.dtype != self.ctx.act or t.scale.size != 1:
                raise self.fail(f"tensor {t.name!r} is {t.dtype} with {t.scale.size} scales "
                                f"({self.ctx.act} per-tensor activations expected)")
            if t.dtype == "int16" and np.any(t.zero_point != 0):
                raise self.fail(f"int16 tensor {t.name!r} with zero point {t.zp} (int16x8 models have 0)")

    def record(self, cls, inputs, y, **kw):
        return cls(self.name, self.index, self.mode, tuple(inputs), y, **kw)


@dataclass(frozen=True)
class OpConverter:
    """How one TF-Lite builtin op imports: ``fn(ctx, op)`` builds its layer; ``xnnpack(ctx, i)`` says
    whether TF 2.21's XNNPACK delegate takes operator ``i``; ``builtin``: whether the emulation holds
    for TF-Lite's optimized built-in kernel (which runs the operators XNNPACK declines)."""

    fn: Callable
    xnnpack: Callable = lambda ctx, i: True
    builtin: bool = False


# ------------------------------------------------------------------------------------------------
# converters
# ------------------------------------------------------------------------------------------------

_EIGHT_BIT = ("int8", "uint8")


def _quant8(op: Op, *ts: TensorQ) -> None:
    for t in ts:
        if t.dtype not in _EIGHT_BIT or t.scale.size != 1:
            raise op.fail(f"tensor {t.name!r} is {t.dtype} with {t.scale.size} scales (int8 or uint8 per-tensor "
                          "expected)")


def _quantize(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    if x.dtype in _EIGHT_BIT:  # requantization between 8-bit types
        return _lut(ctx, op, ir.Affine(op.lname, (op.src(x),)))
    if x.dtype != "float32":
        raise op.fail(f"{x.dtype} -> {y.dtype} (float32, int8 or uint8 inputs expected)")
    op.int8(y)
    if y.dtype == "int16":
        return ir.Affine(op.lname, (op.src(x),), quant=op.record(R.Quantize16Op, (x,), y))
    if op.mode == "builtin":  # pragma: no cover - XNNPACK takes every float32 -> int8 QUANTIZE
        raise op.fail("float32 -> int8 on TF-Lite's optimized built-in kernel, whose arithmetic is not emulated")
    return ir.Affine(op.lname, (op.src(x),), quant=op.record(R.QuantizeOp, (x,), y))


def _lut(ctx: Ctx, op: Op, layer: ir.Layer, alpha: float = 0.0):
    """``layer`` (the op's float meaning) executing the 8-bit unary op by its table (:mod:`.tables`)."""
    x, y = op.x, op.y
    _quant8(op, x, y)
    if op.name != "QUANTIZE" and x.dtype != "int8":
        raise op.fail(f"{x.dtype} input (int8 expected)")
    args = (op.name, x.s, x.zp, y.s, y.zp)
    kw = dict(alpha=alpha, in_dtype=x.dtype, out_dtype=y.dtype)
    try:
        table = tables.unary_lut(*args, op.mode, **kw)
        tail = None
        if op.name == "QUANTIZE" and op.mode == "builtin" and x.dtype == y.dtype == "int8":
            tail = tables.unary_lut(*args, "reference", **kw)
    except ValueError as e:
        raise op.fail(str(e)) from None
    rec = op.record(R.LutOp, (x,), y, table=table, in_min=-128 if x.dtype == "int8" else 0, tail_table=tail)
    return dataclasses.replace(layer, quant=rec)


def _unary(ctx: Ctx, op: Op):
    src = (op.src(op.x),)
    if op.name == "LEAKY_RELU":
        alpha = float(np.float32(op.opt.alpha))
        return _lut(ctx, op, ir.LeakyRelu(op.lname, src, alpha=alpha), alpha)
    if op.name == "RELU_N1_TO_1":
        return _lut(ctx, op, ir.Clip(op.lname, src, lo=-1.0, hi=1.0))
    act = {"LOGISTIC": "sigmoid", "TANH": "tanh", "HARD_SWISH": "hard_silu", "RELU": "relu", "RELU6": "relu6"}
    return _lut(ctx, op, ir.Activation(op.lname, src, activation=act[op.name]))


def _softmax(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    beta = float(np.float32(op.opt.beta))
    try:
        from .softmax import check_output_quant, reference_params

        check_output_quant(y.s, y.zp)
        if op.mode == "reference":
            reference_params(x.s, beta)
    except ValueError as e:
        raise op.fail(str(e)) from None
    if op.mode == "reference" and x.shape[-1] > 4095:
        raise op.fail(f"{x.shape[-1]} classes (TF-Lite's reference kernel overflows past 4095)")
    return ir.Activation(op.lname, (op.src(x),), activation="softmax",
                         quant=op.record(R.SoftmaxOp, (x,), y, beta=beta))


def _unary_xnnpack(ctx: Ctx, i: int) -> bool:
    """:func:`.tables.xnnpack_takes` on the operator's quantization."""
    o = ctx.ops[i]
    x, y = ctx.T(o["inputs"][0]), ctx.T(o["outputs"][0])
    if x.dtype not in _EIGHT_BIT or y.dtype not in _EIGHT_BIT or x.scale.size != 1 or y.scale.size != 1:
        return False
    alpha = float(getattr(ctx.opts[i][1], "alpha", 0.0) or 0.0)
    return tables.xnnpack_takes(o["op_name"], x.s, x.zp, y.s, y.zp, alpha=alpha, in_dtype=x.dtype, out_dtype=y.dtype)


def _quantize_xnnpack(ctx: Ctx, i: int) -> bool:
    """float32 -> int8 always; between 8-bit types as :func:`.tables.xnnpack_takes` says."""
    if ctx.T(ctx.ops[i]["inputs"][0]).dtype == "float32":
        return True
    return _unary_xnnpack(ctx, i)


def _dequantize(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x)
    if y.dtype != "float32":
        raise op.fail(f"output type {y.dtype}")
    return ir.Affine(op.lname, (op.src(x),), quant=op.record(R.DequantizeOp, (x,), y))


def _mac_weights(ctx: Ctx, op: Op, nout_axis: int):
    """(int64 weights, the weight tensor, int64 biases, per-channel float32 weight scales); biases are int32
    (int64 in an int16x8 model)."""
    w_t = ctx.T(op.ins[1])
    if w_t.dtype != "int8":
        raise op.fail(f"{w_t.dtype} weights (int8 expected)")
    if np.any(w_t.zero_point != 0):
        raise op.fail("weights with nonzero zero points")
    w = ctx.const(op.ins[1]).astype(np.int64)
    nout = w.shape[nout_axis]
    bias_idx = op.ins[2] if len(op.ins) > 2 else -1
    if bias_idx >= 0:
        b_t = ctx.T(bias_idx)
        want = "int64" if ctx.act == "int16" else "int32"
        if b_t.dtype != want:
            raise op.fail(f"{b_t.dtype} bias ({want} expected{' in an int16x8 model' if want == 'int64' else ''})")
        bias = ctx.const(bias_idx).astype(np.int64).reshape(-1)
    else:
        bias = np.zeros(nout, np.int64)
    sw = w_t.scale.astype(np.float32)
    if sw.size not in (1, nout):
        raise op.fail(f"{sw.size} weight scales for {nout} output channels")
    return w, w_t, bias, np.broadcast_to(sw, (nout,)).copy()


def _requant_fields(op: Op, x: TensorQ, y: TensorQ, sw) -> dict:
    if op.mode == "xnnpack":
        return {"scale32": ((x.s * sw).astype(np.float32) / y.s).astype(np.float32)}
    real = np.float64(x.s) * sw.astype(np.float64) / np.float64(y.s)
    m, shift = rq.quantize_multiplier(real)
    return {"multiplier": m, "shift": shift}


def _mac(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    act = op.act()
    name = op.name
    w, w_t, bias, sw = _mac_weights(ctx, op, 3 if name == "DEPTHWISE_CONV_2D" else 0)
    fkw = dict(round_away=(name == "FULLY_CONNECTED" and op.mode == "reference"), **_requant_fields(op, x, y, sw))
    lo, hi = op.bounds(act, y)
    src = op.src(x)
    common = dict(bias=bias.astype(np.float64), activation=act)
    if name == "FULLY_CONNECTED":
        if getattr(op.opt, "keepNumDims", False) and len(x.shape) > 2:
            raise op.fail("keep_num_dims with a multi-dimensional input")
        if getattr(op.opt, "weightsFormat", 0) != 0:
            raise op.fail("shuffled weights format")
        kernel = w.T.astype(np.float32)  # (in, out)
        if x.index in ctx.merged:  # rows = batch x positions: a Dense over the last axis of the batch-first tensor
            if x.shape[-1] != kernel.shape[0] or y.index not in ctx.merged:
                raise op.fail(f"input {x.shape} / output {y.shape} for weights {w.shape}")
        else:
            if int(np.prod(x.shape[1:])) != kernel.shape[0] or len(y.shape) != 2:
                raise op.fail(f"input {x.shape} / output {y.shape} for weights {w.shape}")
            if len(x.shape) > 2:  # TF-Lite flattens the input to (-1, in)
                flat = ir.Reshape(op.lname + "_flatten", (src,), target=(-1,))
                ctx.layers.append(flat)
                src = flat.name
        colsum = w.sum(axis=1)
        return ir.Dense(op.lname, (src,), kernel=kernel, quant=_mac_record(op, x, w_t, y, colsum, bias, lo, hi, fkw),
                        **common)
    dil = (getattr(op.opt, "dilationHFactor", 1), getattr(op.opt, "dilationWFactor", 1))
    padding = padding_of(op.opt)
    pre = ctx.pending_dilation.pop(x.index, None)
    if pre is not None:  # SPACE_TO_BATCH_ND -> CONV (valid) -> BATCH_TO_SPACE_ND: one dilated convolution
        if dil != (1, 1) or padding != "valid" or (op.opt.strideH, op.opt.strideW) != (1, 1):
            raise op.fail("a space-to-batch convolution that is not stride-1, undilated and valid")
        src, dil, x = pre
    if name == "CONV_2D":
        kernel = np.transpose(w, (1, 2, 3, 0)).astype(np.float32)  # OHWI -> HWIO
        if kernel.shape[2] != x.shape[3]:
            raise op.fail(f"grouped convolution (input {x.shape[3]} channels, filter {kernel.shape[2]})")
        colsum = w.sum(axis=(1, 2, 3))
        cls = ir.Conv2D
    else:
        C = x.shape[3]
        nout = w.shape[3]
        if nout % C:
            raise op.fail(f"{nout} output channels for {C} input channels")
        kernel = w.reshape(w.shape[1], w.shape[2], C, nout // C).astype(np.float32)
        colsum = w.sum(axis=(0, 1, 2))
        cls = ir.DepthwiseConv2D
    return cls(op.lname, (src,), kernel=kernel, strides=(op.opt.strideH, op.opt.strideW), padding=padding,
               dilation=dil, quant=_mac_record(op, x, w_t, y, colsum, bias, lo, hi, fkw), **common)


def _mac_record(op, x, w_t, y, colsum, bias, lo, hi, fkw):
    common = dict(mac=op.ctx.mac, colsum=colsum.astype(np.int64), bias=bias, lo=lo, hi=hi)
    if op.ctx.act == "int16":
        kind = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dw", "FULLY_CONNECTED": "fc"}[op.name]
        has_bias = len(op.ins) > 2 and op.ins[2] >= 0
        return op.record(R.Mac16Op, (x, w_t), y, layer_op=kind, w_scales=w_t.scale.astype(np.float32),
                         bias_bits=64 if has_bias else "none", **common)
    return op.record(R.MacOp, (x, w_t), y, **fkw, **common)


def _transpose_conv(ctx: Ctx, op: Op):
    """TRANSPOSE_CONV: inputs (output shape, OHWI weights, input, optional bias)."""
    x, y = op.tensor(op.ins[2]), op.y
    op.int8(x, y)
    act = op.act()
    op_w = dataclasses.replace(op, ins=[op.ins[2], op.ins[1], *op.ins[3:]])
    w, w_t, bias, sw = _mac_weights(ctx, op_w, 0)
    if len(x.shape) != 4 or w.shape[3] != x.shape[3]:
        raise op.fail(f"input {x.shape} for OHWI weights {w.shape}")
    kernel = np.transpose(w, (1, 2, 3, 0)).astype(np.float32)  # OHWI -> (kh, kw, C_in, C_out)
    lo, hi = op.bounds(act, y)
    rec = op.record(R.MacOp, (x, w_t), y, mac=ctx.mac, colsum=w.sum(axis=(1, 2, 3)).astype(np.int64), bias=bias,
                    lo=lo, hi=hi, neon_block=8 if op.mode == "builtin" else 0, **_requant_fields(op, x, y, sw))
    return ir.Conv2DTranspose(op.lname, (op.src(x),), kernel=kernel, bias=bias.astype(np.float64), activation=act,
                              strides=(op.opt.strideH, op.opt.strideW), padding=padding_of(op.opt),
                              size=tuple(y.shape[1:3]), quant=rec)


def _transpose_conv_xnnpack(ctx: Ctx, i: int) -> bool:
    """XNNPACK takes TRANSPOSE_CONV when its output shape is a constant and, with SAME padding, the kernel
    is at least the stride on both axes."""
    o, opt = ctx.ops[i], ctx.opts[i][1]
    if int(o["inputs"][0]) in ctx.produced:
        return False
    kh, kw = ctx.T(o["inputs"][1]).shape[1:3]
    return not (padding_of(opt) == "same" and (kh < opt.strideH or kw < opt.strideW))


def _pool(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    if not x.same_quant(y):
        raise op.fail("input and output quantization differ")
    lo, hi = R.act_bounds(op.act(), y, "reference")
    opt = op.opt
    return ir.Pool2D(op.lname, (op.src(x),), op="max" if op.name == "MAX_POOL_2D" else "avg",
                     pool_size=(opt.filterHeight, opt.filterWidth), strides=(opt.strideH, opt.strideW),
                     padding=padding_of(opt), quant=op.record(R.PoolOp, (x,), y, lo=lo, hi=hi))


def _mean(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    rank = len(x.shape)
    axes = tuple(sorted({int(a) % rank for a in ctx.const(op.ins[1]).reshape(-1)}))
    if not axes or 0 in axes:
        raise op.fail(f"mean over axes {list(axes)} (the batch axis 0 must stay)")
    keep = bool(op.opt.keepDims)
    if ctx.act == "int16" and (rank != 4 or axes != (1, 2)):
        raise op.fail(f"int16 mean over axes {list(axes)} (int16x8 models: over H and W of NHWC only)")
    rec = op.record(R.MeanOp, (x,), y, axes=axes, keepdims=keep)
    if rank == 4 and axes == (1, 2):
        return ir.GlobalAvgPool2D(op.lname, (op.src(x),), keepdims=keep, quant=rec)
    return ir.Mean(op.lname, (op.src(x),), axes=tuple(a - 1 for a in axes), keepdims=keep, quant=rec)


def _binary(ctx: Ctx, op: Op):
    """ADD, SUB, MUL, MAXIMUM, MINIMUM (broadcasting; one operand may be a constant)."""
    ta, tb = op.tensor(op.ins[0]), op.tensor(op.ins[1])
    y = op.y
    op.int8(ta, tb, y)
    const_pos = [k for k, t in enumerate((ta, tb)) if ctx.is_const(t.index)]
    if len(const_pos) > 1:
        raise op.fail("two constant operands")
    act = op.act() if op.name in ("ADD", "SUB", "MUL") else "linear"
    lo, hi = op.bounds(act, y)
    kw = dict(lo=lo, hi=hi)
    if ctx.act == "int16":
        if op.name != "ADD" or const_pos or ta.shape != tb.shape:
            raise op.fail("int16x8 models: only ADD of two computed tensors of the same shape")
        return ir.Add(op.lname, (op.src(ta), op.src(tb)), quant=op.record(R.Add16Op, (ta, tb), y, **kw))
    if not const_pos:
        rec = op.record(R.BinaryOp, (ta, tb), y, **kw)
        srcs = (op.src(ta), op.src(tb))
        if op.name == "ADD":
            return ir.Add(op.lname, srcs, quant=rec)
        if op.name == "MUL":
            return ir.Mul(op.lname, srcs, quant=rec)
        return ir.Binary(op.lname, srcs, op={"SUB": "sub", "MAXIMUM": "max", "MINIMUM": "min"}[op.name], quant=rec)
    k = const_pos[0]
    t_c, t_x = (ta, tb) if k == 0 else (tb, ta)
    codes = ctx.const(t_c.index).astype(np.int64)
    if codes.ndim > len(y.shape):
        raise op.fail(f"a constant of shape {codes.shape} for an output of shape {y.shape}")
    rec = op.record(R.BinaryOp, (ta, tb), y, const=codes, const_pos=k, **kw)
    # the IR layer states the float meaning: an affine map (or a clip) of the other operand
    real = (codes - t_c.zp).astype(np.float64) * float(t_c.s)
    if real.size > 1 and (real.ndim == 0 or real.size != real.shape[-1]):
        raise op.fail(f"a constant operand of shape {codes.shape} (a scalar or one value per channel expected)")
    c = real.reshape(-1) if real.size > 1 else float(real.reshape(-1)[0])
    src = (op.src(t_x),)
    if op.name == "MUL":
        return ir.Affine(op.lname, src, scale=c, quant=rec)
    if op.name == "ADD":
        return ir.Affine(op.lname, src, offset=c, quant=rec)
    if op.name == "SUB":
        return ir.Affine(op.lname, src, scale=1.0 if k == 1 else -1.0, offset=-c if k == 1 else c, quant=rec)
    if real.size > 1:
        raise op.fail(f"{op.name.lower()} with a per-channel constant")
    bound = {"lo": c} if op.name == "MAXIMUM" else {"hi": c}
    return ir.Clip(op.lname, src, quant=rec, **bound)


def _binary_xnnpack(ctx: Ctx, i: int) -> bool:
    """:func:`.binary.xnnpack_takes` on the operator's quantization (MUL, ADD, SUB: scale-ratio ranges)."""
    from .binary import xnnpack_takes

    o = ctx.ops[i]
    ta, tb, y = (ctx.T(t) for t in (o["inputs"][0], o["inputs"][1], o["outputs"][0]))
    if any(t.dtype != "int8" or t.scale.size != 1 for t in (ta, tb, y)):
        return False
    return xnnpack_takes(o["op_name"], (ta.s, ta.zp), (tb.s, tb.zp), (y.s, y.zp), ta.shape, tb.shape,
                         ctx.is_const(tb.index))


def _reshape(ctx: Ctx, op: Op):
    x = op.x
    y = ctx.T(op.outs[0])
    if x.dtype != y.dtype or (x.dtype == "int8" and not x.same_quant(y)):
        raise op.fail("a change of type or quantization")
    src = op.src(x)
    xs = tuple(x.shape)
    target = tuple(y.shape)
    if len(op.ins) > 1:  # the shape operand (constant, or computed from shapes for a batch of 1)
        t = [int(d) for d in ctx.shape_value(op.ins[1]).reshape(-1)]
        if t.count(-1) == 1:
            t[t.index(-1)] = int(np.prod(xs)) // max(1, -int(np.prod(t)))
        if int(np.prod(t)) != int(np.prod(xs)) or min(t) < 0:
            raise op.fail(f"target shape {t} for an input of shape {xs}")
        target = tuple(t)
    if target[0] != 1:
        # The converter's FULLY_CONNECTED on a rank > 2 input: RESHAPE (1, ..., K) -> (rows, K), batch merged
        if xs[0] != 1 or len(target) != 2 or target[-1] != xs[-1] or target[0] != int(np.prod(xs[:-1])):
            raise op.fail(f"reshape {xs} -> {target} does not keep the batch axis first (only a FULLY_CONNECTED on "
                          "a rank > 2 input may merge it with the leading axes)")
        consumers = [j for j, o in enumerate(ctx.ops) if y.index in (int(t) for t in o["inputs"])]
        if not consumers or any(ctx.ops[j]["op_name"] != "FULLY_CONNECTED" for j in consumers):
            raise op.fail(f"reshape {xs} -> {target} merges the batch with other axes (only before FULLY_CONNECTED)")
        ctx.merged[y.index] = xs
        for j in consumers:  # the FC output keeps the leading axes: (1, ..., K) -> (1, ..., N)
            out = ctx.T(ctx.ops[j]["outputs"][0])
            ctx.merged[out.index] = (*xs[:-1], int(ctx.const(ctx.ops[j]["inputs"][1]).shape[0]))
        return src
    if x.index in ctx.merged and target == tuple(xs):  # the RESHAPE back after such an FC
        return src
    y = dataclasses.replace(y, shape=target)
    ctx.shapes[y.index] = target
    return ir.Reshape(op.lname, (src,), target=target[1:], quant=op.record(R.ReshapeOp, (x,), y))


def _pad(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    if not x.same_quant(y) or len(x.shape) != 4:
        raise op.fail("only 4-D int8 PAD with equal input/output quantization")
    p = ctx.const(op.ins[1]).astype(np.int64).reshape(-1, 2)
    if p.shape[0] != 4 or np.any(p[[0, 3]] != 0) or np.any(p < 0):
        raise op.fail(f"paddings {p.tolist()} (only non-negative H and W padding)")
    value = y.zp
    if op.name == "PADV2" and len(op.ins) > 2:
        c = ctx.const(op.ins[2]).reshape(-1)
        if c.size != 1:
            raise op.fail(f"constant_values of {c.size} elements")
        value = int(c[0])
    return ir.ZeroPad2D(op.lname, (op.src(x),), padding=((int(p[1, 0]), int(p[1, 1])), (int(p[2, 0]), int(p[2, 1]))),
                        value=float(value), quant=op.record(R.PadOp, (x,), y, value=value))


def _space_to_batch(ctx: Ctx, op: Op):
    """SPACE_TO_BATCH_ND -> CONV_2D / DEPTHWISE_CONV_2D (valid, stride 1) -> BATCH_TO_SPACE_ND, which the
    converter writes for a dilated convolution, becomes one dilated convolution on the input padded with
    the zero point (SPACE_TO_BATCH_ND pads with the output zero point; the padded cells add zero to every
    sum). The BATCH_TO_SPACE_ND crops are taken off the bottom / right padding."""
    x, y = op.x, ctx.T(op.outs[0])
    op.int8(x, y)
    if not x.same_quant(y) or len(x.shape) != 4:
        raise op.fail("only 4-D int8 SPACE_TO_BATCH_ND with equal input/output quantization")
    block = tuple(int(b) for b in ctx.const(op.ins[1]).reshape(-1))
    pads = ctx.const(op.ins[2]).astype(np.int64).reshape(-1, 2)
    cons = [j for j, o in enumerate(ctx.ops) if y.index in (int(t) for t in o["inputs"])]
    if (len(block) != 2 or len(cons) != 1 or ctx.ops[cons[0]]["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D")):
        raise op.fail("only the space-to-batch pattern of a dilated convolution (block 2-D, one convolution after it)")
    conv_out = int(ctx.ops[cons[0]]["outputs"][0])
    after = [j for j, o in enumerate(ctx.ops) if conv_out in (int(t) for t in o["inputs"])]
    if len(after) != 1 or ctx.ops[after[0]]["op_name"] != "BATCH_TO_SPACE_ND":
        raise op.fail("the convolution after SPACE_TO_BATCH_ND is not followed by BATCH_TO_SPACE_ND")
    b2s = ctx.ops[after[0]]
    if tuple(int(b) for b in ctx.const(b2s["inputs"][1]).reshape(-1)) != block:
        raise op.fail("BATCH_TO_SPACE_ND's block differs")
    crops = ctx.const(b2s["inputs"][2]).astype(np.int64).reshape(-1, 2)
    if np.any(crops[:, 0] != 0) or np.any(crops[:, 1] > pads[:, 1]):
        raise op.fail(f"crops {crops.tolist()} for paddings {pads.tolist()}")
    pad = tuple((int(pads[k, 0]), int(pads[k, 1] - crops[k, 1])) for k in range(2))
    src = op.src(x)
    padded_shape = (1, x.shape[1] + sum(pad[0]), x.shape[2] + sum(pad[1]), x.shape[3])
    if any(p for pr in pad for p in pr):
        layer = ir.ZeroPad2D(op.lname, (src,), padding=pad, value=float(x.zp),
                             quant=op.record(R.PadOp, (x,), dataclasses.replace(y, shape=padded_shape), value=x.zp))
        ctx.layers.append(layer)
        src = layer.name
    ctx.pending_dilation[y.index] = (src, block, dataclasses.replace(x, shape=padded_shape))
    ctx.merged[y.index] = padded_shape
    ctx.merged[conv_out] = tuple(ctx.T(b2s["outputs"][0]).shape)
    return src


def _batch_to_space(ctx: Ctx, op: Op):
    x = op.x
    if x.index not in ctx.merged:
        raise op.fail("only the batch-to-space of a dilated convolution (after SPACE_TO_BATCH_ND and a convolution)")
    return op.src(x)


def _reshape_like(ctx: Ctx, op: Op):
    """EXPAND_DIMS / SQUEEZE: a reshape to the output's static shape."""
    x, y = op.x, op.y
    if x.dtype != y.dtype or (x.dtype == "int8" and not x.same_quant(y)):
        raise op.fail("a change of type or quantization")
    if y.shape[0] != 1:
        raise op.fail(f"output shape {y.shape} does not keep the batch dimension first")
    return ir.Reshape(op.lname, (op.src(x),), target=tuple(y.shape[1:]), quant=op.record(R.ReshapeOp, (x,), y))


def _resize(ctx: Ctx, op: Op):
    x, y = op.x, op.y
    op.int8(x, y)
    if not x.same_quant(y) or len(x.shape) != 4:
        raise op.fail("only 4-D int8 resizing with equal input/output quantization (TF-Lite's kernels do not "
                      "requantize; XNNPACK refuses such a model)")
    size = tuple(int(v) for v in ctx.const(op.ins[1]).reshape(-1))
    ac, hp = bool(op.opt.alignCorners), bool(op.opt.halfPixelCenters)
    if ac and hp:
        raise op.fail("align_corners together with half_pixel_centers (TF-Lite's kernel refuses it)")
    method = "bilinear" if op.name == "RESIZE_BILINEAR" else "nearest"
    return ir.Resize2D(op.lname, (op.src(x),), size=size, method=method, align_corners=ac, half_pixel_centers=hp,
                       quant=op.record(R.ResizeOp, (x,), y, method=method, align_corners=ac, half_pixel_centers=hp))


def _concat(ctx: Ctx, op: Op):
    y = op.y
    xs = [op.tensor(t) for t in op.ins]
    op.int8(y, *xs)
    if any(not t.same_quant(y) for t in xs):
        raise op.fail("inputs quantized unlike the output (TF-Lite's int8 kernels and XNNPACK refuse it)")
    if getattr(op.opt, "fusedActivationFunction", 0):
        raise op.fail("a fused activation (TF-Lite's kernel requires NONE)")
    axis = int(op.opt.axis) % len(y.shape)
    if axis == 0:
        raise op.fail("concatenation along the batch axis")
    srcs = []
    for t in xs:
        if ctx.is_const(t.index):
            raise op.fail(f"a constant input ({t.name!r})")
        srcs.append(op.src(t))
    return ir.Concat(op.lname, tuple(srcs), axis=axis - 1, quant=op.record(R.ConcatOp, xs, y))


def _concat_xnnpack(ctx: Ctx, i: int) -> bool:
    """XNNPACK takes a CONCATENATION of 2 to 5 inputs."""
    return 2 <= len(ctx.ops[i]["inputs"]) <= 5


def _reshape_xnnpack(ctx: Ctx, i: int) -> bool:
    """XNNPACK declines a RESHAPE whose shape operand is computed at run time."""
    ins = ctx.ops[i]["inputs"]
    return not (len(ins) > 1 and int(ins[1]) in ctx.produced)


_NO = lambda ctx, i: False  # noqa: E731

#: TF-Lite builtin op name -> converter. (SHAPE, STRIDED_SLICE, PACK, ... that only compute a RESHAPE's
#: shape are skipped before this table is consulted.)
CONVERTERS: dict[str, OpConverter] = {
    "QUANTIZE": OpConverter(_quantize, xnnpack=_quantize_xnnpack, builtin=True),
    "DEQUANTIZE": OpConverter(_dequantize),
    "CONV_2D": OpConverter(_mac),
    "DEPTHWISE_CONV_2D": OpConverter(_mac),
    "FULLY_CONNECTED": OpConverter(_mac),
    "TRANSPOSE_CONV": OpConverter(_transpose_conv, xnnpack=_transpose_conv_xnnpack, builtin=True),
    "MAX_POOL_2D": OpConverter(_pool, builtin=True),
    "AVERAGE_POOL_2D": OpConverter(_pool, xnnpack=_NO, builtin=True),
    "MEAN": OpConverter(_mean),
    "ADD": OpConverter(_binary, xnnpack=_binary_xnnpack, builtin=True),
    "SUB": OpConverter(_binary, xnnpack=_binary_xnnpack, builtin=True),
    "MUL": OpConverter(_binary, xnnpack=_binary_xnnpack, builtin=True),
    "MAXIMUM": OpConverter(_binary, xnnpack=_NO, builtin=True),
    "MINIMUM": OpConverter(_binary, xnnpack=_NO, builtin=True),
    "RESHAPE": OpConverter(_reshape, xnnpack=_reshape_xnnpack, builtin=True),
    "PAD": OpConverter(_pad, builtin=True),
    "PADV2": OpConverter(_pad, xnnpack=_NO, builtin=True),
    "EXPAND_DIMS": OpConverter(_reshape_like, xnnpack=_NO, builtin=True),
    "SQUEEZE": OpConverter(_reshape_like, xnnpack=_NO, builtin=True),
    "SOFTMAX": OpConverter(_softmax, xnnpack=_NO, builtin=True),
    "LOGISTIC": OpConverter(_unary, xnnpack=_unary_xnnpack, builtin=True),
    "TANH": OpConverter(_unary, xnnpack=_unary_xnnpack, builtin=True),
    "HARD_SWISH": OpConverter(_unary, xnnpack=_NO, builtin=True),
    "LEAKY_RELU": OpConverter(_unary, xnnpack=_unary_xnnpack, builtin=True),
    "RELU": OpConverter(_unary, xnnpack=_NO, builtin=True),
    "RELU6": OpConverter(_unary, xnnpack=_NO, builtin=True),
    "RELU_N1_TO_1": OpConverter(_unary, xnnpack=_NO, builtin=True),
    "RESIZE_BILINEAR": OpConverter(_resize, builtin=True),
    "RESIZE_NEAREST_NEIGHBOR": OpConverter(_resize, xnnpack=_NO, builtin=True),
    "CONCATENATION": OpConverter(_concat, xnnpack=_concat_xnnpack, builtin=True),
    "SPACE_TO_BATCH_ND": OpConverter(_space_to_batch, xnnpack=_NO, builtin=True),
    "BATCH_TO_SPACE_ND": OpConverter(_batch_to_space, xnnpack=_NO, builtin=True),
}

#: The TF-Lite builtin ops the importer maps (int8 activations, int8 weights, int32 biases).
SUPPORTED_OPS = tuple(CONVERTERS)

#: the ops an int16x8 model may hold (XNNPACK takes none of them: they run on TF-Lite's kernels)
INT16_OPS = ("QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN",
             "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "EXPAND_DIMS", "SQUEEZE")
