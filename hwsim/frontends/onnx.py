"""Float ONNX models (as ``torch.onnx.export`` writes them) and onnxruntime's QDQ models in hwsim:
:func:`load_onnx`.

Every node becomes IR layers through one converter per op type (:data:`CONVERTERS`); the network then
runs with any MAC spec and every other part of hwsim, like an imported Keras model.

**Layouts.** ONNX image tensors are NCHW, the IR's are NHWC. The network takes and returns what the
ONNX model does: a 4-D input (N, C, H, W) is transposed to NHWC by the first layer (``<input>_nhwc``)
and a 4-D output transposed back. Inside, every 4-D ONNX tensor lives as NHWC, so weights are
converted (OIHW -> HWIO) and an op whose meaning depends on the axis order (Flatten, Reshape of an
image tensor) transposes to CHW order first, so a Gemm after a Flatten reads its rows as ONNX does.

**Ops** (``pads`` explicit, ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID; all of them with batch 1
shapes inferred statically):

=========================================  ===========================================================
ONNX                                       IR
=========================================  ===========================================================
Conv (groups 1, depthwise, any groups;     Conv2D / DepthwiseConv2D; explicit pads other than
strides, dilations, pads)                  TensorFlow's "same" become a ZeroPad2D before a "valid" conv
ConvTranspose (group 1; strides, pads,     Conv2DTranspose (explicit leading pads and output size)
output_padding, output_shape, auto_pad)
Resize of H, W (linear: half_pixel,        Resize2D (source coordinates divided by ONNX's float32 scales)
pytorch_half_pixel, align_corners,
asymmetric; nearest: asymmetric + floor)
Gemm (transB, alpha, beta; transA 0),      Dense (kernel ``alpha * B``, bias ``beta * C``)
MatMul by a constant
Add, Mul (broadcasting), Sub, Div by a     Add / Mul; Affine for a scalar or per-channel constant
constant
BatchNormalization                         Affine, folded into the conv before it (graph pass)
Relu, Sigmoid, Tanh, HardSwish, Softmax    Activation (softmax over the channel / last axis)
LeakyRelu                                  LeakyRelu
Clip, HardSigmoid                          Clip (HardSigmoid: Affine then Clip to [0, 1])
MaxPool, AveragePool (pads, ceil_mode,     Pool2D (``ceil_mode``: trailing padding for the extra
count_include_pad), GlobalAveragePool,     window, except with count_include_pad where it grows)
ReduceMean over H and W                    GlobalAvgPool2D
Flatten, Reshape, Squeeze, Unsqueeze       Reshape (through CHW order for image tensors)
Concat                                     Concat
Pad (constant zeros on H and W)            ZeroPad2D
QuantizeLinear, DequantizeLinear (per      QuantizeLinear / DequantizeLinear, float32 as onnxruntime's
tensor, int8 / uint8) on computed tensors  MLAS (weights: DequantizeLinear of constants is folded)
Identity, Dropout                          nothing (the consumer reads the input)
Constant, Shape and any node of            folded to constants (onnx's reference evaluator)
constants (Gather, Unsqueeze, Cast, ...)
=========================================  ===========================================================

**QDQ models** (``onnxruntime.quantization.quantize_static`` with ``QuantFormat.QDQ``) therefore run with
the graph's own semantics, what onnxruntime computes with graph optimizations disabled: activations
are quantized and dequantized where the graph says, and every Conv / Gemm runs in float32 on
dequantized values (``hwsim.run``'s default ``mac="fp32"``; another MAC spec emulates other hardware).
QOperator models (QLinearConv, QLinearMatMul, and com.microsoft QGemm, QLinearAdd, QLinearMul,
QLinearGlobalAveragePool) run with onnxruntime's integer arithmetic: :mod:`hwsim.frontends.onnx_qop`.
QONNX models (Brevitas' ``export_qonnx``: Quant, BipolarQuant, Trunc) run with qonnx's executor
semantics: :mod:`hwsim.frontends.onnx_qonnx`.

Anything else raises ``ValueError`` naming the node, its op type and domain, and the supported ops;
an unsupported attribute value names the attribute.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hwsim.graph import ir, passes

IMAGE = "nhwc"  # an ONNX NCHW tensor held as NHWC
PLAIN = "plain"  # held in ONNX's own axis order
TO_NHWC, TO_NCHW = (1, 2, 0), (2, 0, 1)


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a runtime dependency
        raise ImportError("reading .onnx files needs the onnx package: pip install onnx") from None
    return onnx


class _Ctx:
    def __init__(self, where, graph):
        onnx = _onnx()
        self.where = where
        self.consts: dict[str, np.ndarray] = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.tensors: dict[str, tuple[str, str]] = {}  # ONNX name -> (IR layer, layout)
        self.shapes: dict[str, tuple[int, ...]] = {ir.INPUT: ()}  # IR layer -> shape without batch
        self.layers: list[ir.Layer] = []

    # -------------------------------------------------------------------------------- bookkeeping
    def add(self, layer) -> str:
        layer_shape = layer.output_shape([self.shapes[s] for s in layer.inputs])
        self.shapes[layer.name] = tuple(int(i) for i in layer_shape)
        self.layers.append(layer)
        return layer.name

    def unique(self, name) -> str:
        """``name``, or ``name_2``, ... : free among the layers and the nodes' names."""
        base, n = name, 1
        while name in self.shapes or name in getattr(self, "reserved", ()):
            n += 1
            name = f"{base}_{n}"
        return name

    def onnx_shape(self, t) -> tuple[int, ...]:
        """The ONNX shape (batch 1) of computed tensor ``t``."""
        src, layout = self.tensors[t]
        s = self.shapes[src]
        return (1, *(s[i] for i in TO_NCHW)) if layout == IMAGE else (1, *s)

    def src(self, node, k=0):
        t = node.input[k]
        if t not in self.tensors:
            raise self.error(node, f"input {t!r} is neither the model input nor computed by a supported node")
        return self.tensors[t]

    def const(self, node, k, required=True):
        t = node.input[k] if k < len(node.input) else ""
        if t in self.consts:
            return self.consts[t]
        if required:
            raise self.error(node, f"input {k} ({t!r}) must be a constant")
        return None

    def error(self, node, why):
        return ValueError(f"{self.where}: node {node.name!r} ({node.op_type}, domain {node.domain or 'ai.onnx'}) is "
                          f"not supported: {why}")

    def as_layout(self, t, layout, name):
        """IR layer holding ONNX tensor ``t`` in ``layout`` (a Transpose added when it is held otherwise)."""
        src, have = self.tensors[t]
        if have == layout or len(self.shapes[src]) != 3:
            return src
        perm = TO_NCHW if layout == PLAIN else TO_NHWC
        return self.add(ir.Transpose(self.unique(f"{name}_{'chw' if layout == PLAIN else 'hwc'}"), (src,), perm=perm))

    def out(self, node, ir_name, layout, k=0):
        self.tensors[node.output[k]] = (ir_name, layout)


def _attrs(node) -> dict:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _name(ctx, node) -> str:
    """The IR name of the node being converted (``node``): its ONNX name (or ``<op type>_<index>``), made
    unique. (Protobuf hands out a new Python object per access, so the name goes by the node's position.)"""
    return ctx.names[ctx.current]


def _same_pads(size, k, s, d):
    eff = (k - 1) * d + 1
    out = math.ceil(size / s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def _pads(ctx, node, kernel_hw, a):
    """``(pads, same)``: the node's ((top, bottom), (left, right)) padding from ``pads`` / ``auto_pad``, and
    TensorFlow's "same" padding for comparison."""
    _, _, h, w = ctx.onnx_shape(node.input[0])
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    same = [_same_pads(n, k, s, d) for n, k, s, d in zip((h, w), kernel_hw, strides, dil)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = same if auto == "SAME_UPPER" else [(b, t) for t, b in same]
    elif auto == "VALID":
        pads = [(0, 0), (0, 0)]
    elif auto == "NOTSET":
        p = list(a.get("pads", (0, 0, 0, 0)))
        pads = [(p[0], p[2]), (p[1], p[3])]
    else:
        raise ctx.error(node, f"attribute auto_pad={auto!r} (valid: NOTSET, SAME_UPPER, SAME_LOWER, VALID)")
    return pads, same


def _spatial(ctx, node, x, kernel_hw, a):
    """``(padding for the IR layer, input layer)``: "same" / "valid", or a ZeroPad2D for other pads."""
    pads, same = _pads(ctx, node, kernel_hw, a)
    if pads == [(0, 0), (0, 0)]:
        return "valid", x
    if pads == same:
        return "same", x
    name = ctx.unique(f"{_name(ctx, node)}_pad")
    return "valid", ctx.add(ir.ZeroPad2D(name, (x,), padding=tuple(tuple(int(v) for v in p) for p in pads)))


def _conv(ctx, node, i):
    a = _attrs(node)
    w = ctx.const(node, 1).astype(np.float32)
    if w.ndim != 4:
        raise ctx.error(node, f"a {w.ndim - 2}-D convolution (only 2-D)")
    bias = ctx.const(node, 2, required=False)
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    c_in = ctx.onnx_shape(node.input[0])[1]
    g = int(a.get("group", 1))
    o, ig, kh, kw = w.shape
    padding, x = _spatial(ctx, node, x, (kh, kw), a)
    common = dict(bias=None if bias is None else bias.astype(np.float32), strides=tuple(a.get("strides", (1, 1))),
                  padding=padding, dilation=tuple(a.get("dilations", (1, 1))))
    name = _name(ctx, node)
    if g == c_in and ig == 1 and g > 1:  # depthwise: output channel c * m + j reads input channel c
        kernel = w.reshape(c_in, o // c_in, kh, kw).transpose(2, 3, 0, 1)
        layer = ir.DepthwiseConv2D(name, (x,), kernel=np.ascontiguousarray(kernel), **common)
    else:
        layer = ir.Conv2D(name, (x,), kernel=np.ascontiguousarray(w.transpose(2, 3, 1, 0)), groups=g, **common)
    ctx.out(node, ctx.add(layer), IMAGE)


def _conv_transpose(ctx, node, i):
    a = _attrs(node)
    w = ctx.const(node, 1).astype(np.float32)  # (C_in, C_out / group, kh, kw)
    if w.ndim != 4:
        raise ctx.error(node, f"a {w.ndim - 2}-D transposed convolution (only 2-D)")
    for key, ok in (("group", 1), ("dilations", [1, 1])):
        if key in a and list(np.atleast_1d(a[key])) != list(np.atleast_1d(ok)):
            raise ctx.error(node, f"attribute {key}={a[key]} (only {ok})")
    _, _, h, wd = ctx.onnx_shape(node.input[0])
    kh, kw = w.shape[2:]
    s = tuple(int(v) for v in a.get("strides", (1, 1)))
    op_ = tuple(int(v) for v in a.get("output_padding", (0, 0)))
    if any(o >= st or o < 0 for o, st in zip(op_, s)):
        raise ctx.error(node, f"attribute output_padding={list(op_)} (each must be >= 0 and < its stride {list(s)})")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    full = [(n - 1) * st + k + o for n, st, k, o in zip((h, wd), s, (kh, kw), op_)]
    if "output_shape" in a or auto in ("SAME_UPPER", "SAME_LOWER"):  # pads from the output size (ONNX spec)
        size = tuple(int(v) for v in a["output_shape"][-2:]) if "output_shape" in a else (h * s[0], wd * s[1])
        total = [f - o for f, o in zip(full, size)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    elif auto in ("NOTSET", "VALID"):
        p = [int(v) for v in a.get("pads", (0, 0, 0, 0))] if auto == "NOTSET" else [0, 0, 0, 0]
        begin = [p[0], p[1]]
        size = (full[0] - p[0] - p[2], full[1] - p[1] - p[3])
    else:
        raise ctx.error(node, f"attribute auto_pad={auto!r} (valid: NOTSET, SAME_UPPER, SAME_LOWER, VALID)")
    if min(begin) < 0 or min(size) < 1:
        raise ctx.error(node, f"pads / output_shape giving output {size} with leading pads {begin}")
    bias = ctx.const(node, 2, required=False)
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    layer = ir.Conv2DTranspose(_name(ctx, node), (x,), kernel=np.ascontiguousarray(w.transpose(2, 3, 0, 1)),
                               bias=None if bias is None else bias.astype(np.float32), strides=s, size=size,
                               pad_begin=tuple(begin))
    ctx.out(node, ctx.add(layer), IMAGE)


def _resize(ctx, node, i):
    """Resize of H and W as :class:`hwsim.graph.ir.Resize2D` computes it: linear with half_pixel /
    pytorch_half_pixel (output > 1), align_corners or asymmetric coordinates; nearest with asymmetric
    coordinates and ``nearest_mode=floor`` (what ``torch.onnx.export`` writes for F.interpolate)."""
    a = _attrs(node)
    dec = lambda k, d: (a.get(k, d).decode() if isinstance(a.get(k, d), bytes) else a.get(k, d))  # noqa: E731
    mode, coord, nearest = dec("mode", "nearest"), dec("coordinate_transformation_mode", "half_pixel"), \
        dec("nearest_mode", "round_prefer_floor")
    if a.get("antialias", 0) or a.get("exclude_outside", 0) or "axes" in a:
        raise ctx.error(node, "attributes antialias / exclude_outside / axes (only their defaults)")
    shape = ctx.onnx_shape(node.input[0])
    if len(shape) != 4:
        raise ctx.error(node, f"a resize of a rank-{len(shape)} tensor (only N, C, H, W)")
    sizes = ctx.const(node, 3, required=False) if len(node.input) > 3 and node.input[3] else None
    scales = ctx.const(node, 2, required=False) if len(node.input) > 2 and node.input[2] else None
    if sizes is not None and np.size(sizes):
        out = tuple(int(v) for v in np.asarray(sizes).reshape(-1))
        factors = tuple(np.float32(o) / np.float32(n) for o, n in zip(out[2:], shape[2:]))  # onnxruntime's
    elif scales is not None and np.size(scales):
        sc = np.asarray(scales, np.float32).reshape(-1)
        out = tuple(int(math.floor(n * float(f))) for n, f in zip(shape, sc))
        if any(abs(float(f) * n - o) > 1e-6 for n, f, o in zip(shape, sc, out)):
            raise ctx.error(node, f"scales {sc.tolist()} that do not give whole output sizes")
        factors = tuple(sc[2:])
    else:
        raise ctx.error(node, "neither scales nor sizes given as constants")
    if out[:2] != shape[:2]:
        raise ctx.error(node, f"a resize of N or C ({shape} -> {out})")
    flags = None
    if mode == "linear":
        if coord == "half_pixel" or (coord == "pytorch_half_pixel" and min(out[2:]) > 1):
            flags = dict(half_pixel_centers=True)
        elif coord == "align_corners":
            flags = dict(align_corners=True)
        elif coord == "asymmetric":
            flags = {}
    elif mode == "nearest" and coord == "asymmetric" and nearest == "floor":
        flags = {}
    if flags is None:
        raise ctx.error(node, f"attributes mode={mode!r}, coordinate_transformation_mode={coord!r}, "
                        f"nearest_mode={nearest!r} (supported: linear with half_pixel, pytorch_half_pixel, "
                        "align_corners or asymmetric; nearest with asymmetric and floor)")
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    ctx.out(node, ctx.add(ir.Resize2D(_name(ctx, node), (x,), size=out[2:], scales=factors,
                                      method="bilinear" if mode == "linear" else "nearest", **flags)), IMAGE)


def _leaky_relu(ctx, node, i):
    src, layout = ctx.src(node)
    alpha = float(_attrs(node).get("alpha", 0.01))
    ctx.out(node, ctx.add(ir.LeakyRelu(_name(ctx, node), (src,), alpha=alpha)), layout)


def _dense(ctx, node, i, kernel, bias):
    x = ctx.src(node)
    if x[1] == IMAGE:
        raise ctx.error(node, "a matrix product on a 4-D image tensor")
    ctx.out(node, ctx.add(ir.Dense(_name(ctx, node), (x[0],), kernel=np.ascontiguousarray(kernel, np.float32),
                                   bias=None if bias is None else np.asarray(bias, np.float32).reshape(-1))), PLAIN)


def _gemm(ctx, node, i):
    a = _attrs(node)
    if a.get("transA", 0):
        raise ctx.error(node, "attribute transA=1 (only 0)")
    b = ctx.const(node, 1).astype(np.float64)
    b = b.T if a.get("transB", 0) else b
    c = ctx.const(node, 2, required=False)
    if c is not None and np.size(c) not in (1, b.shape[1]):
        raise ctx.error(node, f"a bias C of shape {np.shape(c)} for {b.shape[1]} outputs (a vector or a scalar)")
    bias = None if c is None else float(a.get("beta", 1.0)) * np.broadcast_to(np.asarray(c).reshape(-1),
                                                                             (b.shape[1],)).astype(np.float64)
    _dense(ctx, node, i, float(a.get("alpha", 1.0)) * b, bias)


def _matmul(ctx, node, i):
    b = ctx.const(node, 1)
    if b.ndim != 2:
        raise ctx.error(node, f"a constant operand of shape {b.shape} (2-D expected)")
    _dense(ctx, node, i, b, None)


def _per_channel(ctx, node, c, layout, rank):
    """A constant broadcast against a tensor, as a scalar or a vector along the IR's last axis; else None."""
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return c.reshape(())
    shape = (1,) * (rank - c.ndim) + c.shape  # ONNX broadcasting aligns the trailing axes
    axis = 1 if layout == IMAGE else rank - 1
    if all(n == 1 for k, n in enumerate(shape) if k != axis):
        return c.reshape(-1)
    return None


def _binary(ctx, node, i):
    name = _name(ctx, node)
    ca, cb = ctx.const(node, 0, False), ctx.const(node, 1, False)
    if ca is None and cb is None:
        (a, la), (b, lb) = ctx.src(node, 0), ctx.src(node, 1)
        ra, rb = (len(ctx.onnx_shape(t)) for t in node.input[:2])
        if ra != rb:  # ONNX aligns NCHW trailing axes, the IR NHWC ones: only equal ranks map one to one
            raise ctx.error(node, f"{node.op_type} of tensors of ranks {ra} and {rb} (equal ranks only)")
        if la != lb:
            b = ctx.as_layout(node.input[1], la, name)
        if node.op_type == "Add" and ctx.shapes[a] == ctx.shapes[b]:
            layer = ir.Add(name, (a, b))
        elif node.op_type == "Mul":
            layer = ir.Mul(name, (a, b))
        else:
            raise ctx.error(node, f"{node.op_type} of two computed tensors"
                            + (" of different shapes" if node.op_type == "Add" else ""))
        ctx.out(node, ctx.add(layer), la)
        return
    first = ca is None
    x, c = (0, cb) if first else (1, ca)
    src, layout = ctx.src(node, x)
    v = _per_channel(ctx, node, c, layout, len(ctx.onnx_shape(node.input[x])))
    if v is None:
        raise ctx.error(node, f"a constant of shape {np.shape(c)}: only scalars and per-channel constants")
    so = ir.affine_of(node.op_type.lower(), v, first)
    if so is None:
        raise ctx.error(node, "a constant divided by a tensor")
    scale, offset = so
    ctx.out(node, ctx.add(ir.Affine(name, (src,), scale=np.asarray(scale, np.float64),
                                    offset=np.asarray(offset, np.float64))), layout)


def _batchnorm(ctx, node, i):
    a = _attrs(node)
    scale, b, mean, var = (ctx.const(node, k).astype(np.float64) for k in range(1, 5))
    s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    src, layout = ctx.src(node)
    axis = 0 if layout == PLAIN and len(ctx.onnx_shape(node.input[0])) >= 3 else -1  # ONNX axis 1
    ctx.out(node, ctx.add(ir.Affine(_name(ctx, node), (src,), scale=s, offset=b - mean * s, axis=axis)), layout)


_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_silu", "Softmax": "softmax"}


def _activation(ctx, node, i):
    src, layout = ctx.src(node)
    if node.op_type == "Softmax":
        shape = ctx.onnx_shape(node.input[0])
        rank = len(shape)
        axis = int(_attrs(node).get("axis", -1 if ctx.opset >= 13 else 1)) % rank
        if ctx.opset < 13 and any(n != 1 for n in shape[axis + 1:]):
            # before opset 13 Softmax flattens the axes from ``axis`` on: one softmax over all of them
            raise ctx.error(node, f"opset {ctx.opset} Softmax over the flattened axes {axis}.. of {shape} (only "
                            "where every axis after it has size 1)")
        if ctx.opset < 13:
            axis = max(k for k in range(axis, rank) if shape[k] != 1 or k == axis)
        if axis != (1 if layout == IMAGE else rank - 1):
            raise ctx.error(node, f"attribute axis={axis} (softmax over the channel / last axis only)")
    ctx.out(node, ctx.add(ir.Activation(_name(ctx, node), (src,), activation=_ACTS[node.op_type])), layout)


def _clip(ctx, node, i):
    src, layout = ctx.src(node)
    a = _attrs(node)
    lo = ctx.const(node, 1) if len(node.input) > 1 and node.input[1] else a.get("min")  # a bound must be constant
    hi = ctx.const(node, 2) if len(node.input) > 2 and node.input[2] else a.get("max")
    lo, hi = (None if v is None else float(np.asarray(v).reshape(())) for v in (lo, hi))
    ctx.out(node, ctx.add(ir.Clip(_name(ctx, node), (src,), lo=lo, hi=hi)), layout)


def _hard_sigmoid(ctx, node, i):
    src, layout = ctx.src(node)
    a = _attrs(node)
    name = _name(ctx, node)
    aff = ctx.add(ir.Affine(ctx.unique(f"{name}_affine"), (src,), scale=np.float64(a.get("alpha", 0.2)),
                            offset=np.float64(a.get("beta", 0.5))))
    ctx.out(node, ctx.add(ir.Clip(name, (aff,), lo=0.0, hi=1.0)), layout)


def _pool(ctx, node, i):
    a = _attrs(node)
    if tuple(a.get("dilations", (1, 1))) != (1, 1):
        raise ctx.error(node, f"attribute dilations={a['dilations']} (only 1)")
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    k = tuple(a["kernel_shape"])
    s = tuple(a.get("strides", (1, 1)))
    pads = tuple(tuple(int(v) for v in p) for p in _pads(ctx, node, k, a)[0])
    layer = ir.Pool2D(_name(ctx, node), (x,), op="max" if node.op_type == "MaxPool" else "avg", pool_size=k, strides=s,
                      padding=pads, count_pad=bool(a.get("count_include_pad", 0)))
    if a.get("ceil_mode", 0):
        # the output size rounds up, but a window must start inside the input or its leading padding
        # (ONNX's and torch's rule); the last windows then reach past the trailing padding
        _, _, h, w = ctx.onnx_shape(node.input[0])
        ceil = []
        for n, pp, kk, ss in zip((h, w), pads, k, s):
            o = math.ceil((n + sum(pp) - kk) / ss) + 1
            ceil.append(o - 1 if (o - 1) * ss >= n + pp[0] else o)
        floor = layer.output_shape([ctx.shapes[x]])[:2]
        if tuple(ceil) != floor:
            if layer.op == "avg" and layer.count_pad:
                raise ctx.error(node, "attribute ceil_mode=1 with count_include_pad=1 where it changes the output "
                                "size (the divisor would count cells past the padding)")
            pads = tuple((pb, pe + (o - f) * ss) for (pb, pe), o, f, ss in zip(pads, ceil, floor, s))
            layer = ir.Pool2D(layer.name, (x,), op=layer.op, pool_size=k, strides=s, padding=pads,
                              count_pad=layer.count_pad)
    ctx.out(node, ctx.add(layer), IMAGE)


def _global_pool(ctx, node, i):
    if node.op_type == "ReduceMean":
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = ctx.const(node, 1)
        if axes is None:
            raise ctx.error(node, "ReduceMean over all axes (only H and W of an image tensor)")
        if sorted(int(v) % 4 for v in np.asarray(axes).reshape(-1)) != [2, 3] or ctx.src(node)[1] != IMAGE:
            raise ctx.error(node, f"ReduceMean over axes {axes} (only H and W of an image tensor)")
        keep = bool(a.get("keepdims", 1))
    else:
        keep = True
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    ctx.out(node, ctx.add(ir.GlobalAvgPool2D(_name(ctx, node), (x,), keepdims=keep)), IMAGE if keep else PLAIN)


def _reshape_to(ctx, node, i, target):
    """Reshape ONNX tensor ``node.input[0]`` to ONNX shape ``target`` (batch first, kept)."""
    name = _name(ctx, node)
    if target[0] != 1:
        raise ctx.error(node, f"a reshape to {target} that does not keep the batch first")
    x = ctx.as_layout(node.input[0], PLAIN, name)
    if len(target) == 4:  # back to an image tensor: NCHW data -> NHWC
        y = ctx.add(ir.Reshape(ctx.unique(f"{name}_nchw"), (x,), target=tuple(target[1:])))
        ctx.out(node, ctx.add(ir.Transpose(name, (y,), perm=TO_NHWC)), IMAGE)
    else:
        ctx.out(node, ctx.add(ir.Reshape(name, (x,), target=tuple(target[1:]))), PLAIN)


def _reshape(ctx, node, i):
    shape = ctx.onnx_shape(node.input[0])
    op = node.op_type
    a = _attrs(node)
    if op == "Flatten":
        axis = int(a.get("axis", 1)) % len(shape)
        if axis != 1:
            raise ctx.error(node, f"attribute axis={axis} (only 1: keep the batch)")
        target = (1, int(np.prod(shape[1:])))
    elif op == "Reshape":
        t = [int(v) for v in ctx.const(node, 1).reshape(-1)]
        t = [shape[k] if v == 0 and not a.get("allowzero", 0) else v for k, v in enumerate(t)]
        target = np.empty(shape, np.uint8).reshape(t).shape
    else:  # Squeeze / Unsqueeze: axes as an attribute (old opsets) or an input
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = ctx.const(node, 1).reshape(-1)
        if op == "Squeeze":
            ax = {int(v) % len(shape) for v in axes} if axes is not None else {k for k, n in enumerate(shape) if n == 1}
            target = tuple(n for k, n in enumerate(shape) if k not in ax)
        else:
            out = list(shape)
            for v in sorted(int(v) % (len(shape) + len(axes)) for v in axes):
                out.insert(v, 1)
            target = tuple(out)
    _reshape_to(ctx, node, i, tuple(int(v) for v in target))


def _concat(ctx, node, i):
    rank = len(ctx.onnx_shape(node.input[0]))
    axis = int(_attrs(node)["axis"]) % rank
    layout = ctx.src(node)[1]
    srcs = tuple(ctx.as_layout(t, layout, _name(ctx, node)) for t in node.input)
    if axis == 0:
        raise ctx.error(node, "attribute axis=0 (concatenation along the batch)")
    ir_axis = (-1 if axis == 1 else axis - 2) if layout == IMAGE else (-1 if axis == rank - 1 else axis - 1)
    ctx.out(node, ctx.add(ir.Concat(_name(ctx, node), srcs, axis=ir_axis)), layout)


def _pad(ctx, node, i):
    a = _attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    p = a.get("pads")
    p = np.asarray(p if p is not None else ctx.const(node, 1)).astype(np.int64).reshape(-1)
    value = ctx.const(node, 2, False) if len(node.input) > 2 and node.input[2] else a.get("value", 0.0)
    if len(node.input) > 3 and node.input[3]:
        raise ctx.error(node, "the axes input (opset 18): only pads for every axis")
    if mode != "constant" or float(np.asarray(value).reshape(())) != 0.0:
        raise ctx.error(node, f"attribute mode={mode!r} / value {value} (only constant zeros)")
    if len(p) != 8 or np.any(p[[0, 1, 4, 5]] != 0) or np.any(p < 0):
        raise ctx.error(node, f"pads {p.tolist()} (only non-negative H and W padding of an image tensor)")
    x = ctx.as_layout(node.input[0], IMAGE, _name(ctx, node))
    ctx.out(node, ctx.add(ir.ZeroPad2D(_name(ctx, node), (x,), padding=((int(p[2]), int(p[6])), (int(p[3]), int(p[7]))))),
            IMAGE)


def _identity(ctx, node, i):
    ctx.tensors[node.output[0]] = ctx.src(node)


def _shape(ctx, node, i):
    a = _attrs(node)
    shape = np.asarray(ctx.onnx_shape(node.input[0]), np.int64)
    ctx.consts[node.output[0]] = shape[a.get("start", 0):a.get("end", None)]  # ONNX clamps like slicing


def _qdq_params(ctx, node):
    a = _attrs(node)
    scale = ctx.const(node, 1)
    zp = ctx.const(node, 2, False) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
    if np.size(scale) != 1 or np.size(zp) != 1:
        raise ctx.error(node, f"per-axis scales (axis {a.get('axis', 1)}) on a computed tensor: per-tensor only")
    if np.asarray(zp).dtype not in (np.int8, np.uint8):
        raise ctx.error(node, f"zero point of type {np.asarray(zp).dtype} (int8 or uint8)")
    info = np.iinfo(np.asarray(zp).dtype)
    return float(np.asarray(scale, np.float32).reshape(())), int(np.asarray(zp).reshape(())), info.min, info.max


def _quantize(ctx, node, i):
    src, layout = ctx.src(node)
    scale, zp, lo, hi = _qdq_params(ctx, node)
    layer = (ir.QuantizeLinear(_name(ctx, node), (src,), scale=scale, zero_point=zp, qmin=lo, qmax=hi)
             if node.op_type == "QuantizeLinear" else ir.DequantizeLinear(_name(ctx, node), (src,), scale=scale,
                                                                          zero_point=zp))
    ctx.out(node, ctx.add(layer), layout)


#: ONNX op type (default domain) -> converter (module docstring)
CONVERTERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "Resize": _resize, "LeakyRelu": _leaky_relu,
              "Gemm": _gemm, "MatMul": _matmul, "Add": _binary, "Sub": _binary, "Mul": _binary,
              "Div": _binary, "BatchNormalization": _batchnorm, "Clip": _clip, "HardSigmoid": _hard_sigmoid,
              "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "ReduceMean": _global_pool,
              "Flatten": _reshape, "Reshape": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape, "Concat": _concat,
              "Pad": _pad, "Identity": _identity, "Dropout": _identity, "Shape": _shape,
              "QuantizeLinear": _quantize, "DequantizeLinear": _quantize,
              **{k: _activation for k in _ACTS}}


def load_onnx(path, *, name=None, mac=None, ort_cpu="exact") -> ir.Network:
    """The IR of the ONNX model at ``path`` (or an ``onnx.ModelProto``, then called ``name``), see the module
    docstring. ``FileNotFoundError`` names a missing file, ``ValueError`` a corrupt one or an unsupported node.

    For QOperator models (:mod:`hwsim.frontends.onnx_qop`): ``ort_cpu`` picks which onnxruntime integer sums
    the QLinearConv / QLinearMatMul / QGemm layers reproduce (:data:`onnx_qop.ORT_CPUS`: ``"exact"``, the
    default, or ``"avx2"``, its default session on x86 without VNNI); ``mac`` (a MAC spec or preset name)
    replaces that arithmetic in all of them with other hardware, on the same codes, zero points and
    requantization."""
    from . import onnx_qop

    if ort_cpu not in onnx_qop.ORT_CPUS:
        raise ValueError(f"ort_cpu={ort_cpu!r}; valid: {', '.join(map(repr, onnx_qop.ORT_CPUS))}")
    if mac is not None and ort_cpu != "exact":
        raise ValueError(f"mac={mac!r} and ort_cpu={ort_cpu!r}: give one (mac replaces onnxruntime's arithmetic)")
    if mac is not None:
        from kernels.mac import as_spec

        mac = as_spec(mac)
    onnx = _onnx()
    if isinstance(path, onnx.ModelProto):
        model, where = path, name or path.graph.name or "onnx model"
        p = Path(where)
    else:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise FileNotFoundError(f"ONNX model not found: {p}")
        model = None
    try:
        model = onnx.load(str(p)) if model is None else model
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise ValueError(f"{where}: corrupt or invalid ONNX model ({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    graph = model.graph
    ctx = _Ctx(where, graph)
    ctx.qmac, ctx.ort_cpu = mac, ort_cpu
    ctx.opsets = {o.domain or "": o.version for o in model.opset_import}
    ctx.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inputs = [v for v in graph.input if v.name not in ctx.consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"{where}: {len(inputs)} inputs and {len(graph.output)} outputs; hwsim runs single-input, "
                         "single-output models")
    dim_protos = list(inputs[0].type.tensor_type.shape.dim)
    symbolic = [k for k, d in enumerate(dim_protos) if k > 0 and not d.HasField("dim_value")]
    if symbolic:
        raise ValueError(f"{where}: input {inputs[0].name!r} has symbolic size(s) on axes {symbolic} "
                         f"({[d.dim_param or '?' for d in dim_protos]}); export the model with a fixed input size "
                         "(only the batch axis may be dynamic)")
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in dim_protos]
    if len(dims) < 2:
        raise ValueError(f"{where}: input {inputs[0].name!r} has shape {dims}; a batch axis first is expected")
    in_shape = tuple(int(v) for v in dims[1:])
    ctx.shapes[ir.INPUT] = in_shape
    ctx.tensors[inputs[0].name] = (ir.INPUT, PLAIN)
    if len(in_shape) == 3:  # NCHW in: held as NHWC from the first layer on
        ctx.tensors[inputs[0].name] = (ctx.add(ir.Transpose(f"{inputs[0].name}_nhwc", (ir.INPUT,), perm=TO_NHWC)), IMAGE)
    used = {ir.INPUT, *ctx.shapes, *(l.name for l in ctx.layers)}
    ctx.names = []
    for i, node in enumerate(graph.node):  # node names are optional and need not be unique in ONNX
        n = base = node.name or f"{node.op_type}_{i}"
        k = 1
        while n in used:
            k += 1
            n = f"{base}_{k}"
        used.add(n)
        ctx.names.append(n)
    ctx.reserved = used
    from . import onnx_qonnx

    for i, node in enumerate(graph.node):
        ctx.current = i
        table = {**CONVERTERS, **onnx_qop.CONVERTERS} if node.domain in ("", "ai.onnx") else \
            onnx_qop.MS_CONVERTERS if node.domain == "com.microsoft" else \
            onnx_qonnx.QONNX_CONVERTERS if node.domain in onnx_qonnx.DOMAINS else None
        if table is None:
            raise ctx.error(node, f"domain {node.domain!r}; supported: the default ONNX domain "
                            f"({', '.join(sorted({**CONVERTERS, **onnx_qop.CONVERTERS}))}), com.microsoft "
                            f"({', '.join(sorted(onnx_qop.MS_CONVERTERS))}) and {onnx_qonnx.DOMAINS[0]} "
                            f"({', '.join(sorted(onnx_qonnx.QONNX_CONVERTERS))})")
        if table is onnx_qonnx.QONNX_CONVERTERS and node.op_type in table:  # on constants (weights) too
            table[node.op_type](ctx, node, i)
            continue
        if node.op_type == "Constant":
            ctx.consts[node.output[0]] = onnx.numpy_helper.to_array(_attrs(node)["value"]) \
                if "value" in _attrs(node) else np.asarray(next(iter(_attrs(node).values())))
            continue
        if node.input and all(t in ctx.consts or t == "" for t in node.input) and node.op_type != "Shape":
            ctx.consts[node.output[0]] = _evaluate(node, ctx)  # a constant subgraph
            continue
        conv = table.get(node.op_type)
        if conv is None:
            raise ctx.error(node, f"no converter; supported ops in this domain: {', '.join(sorted(table))}")
        conv(ctx, node, i)
    out = graph.output[0].name
    if out not in ctx.tensors:
        raise ValueError(f"{where}: the output {out!r} is not computed by any supported node")
    src = ctx.as_layout(out, PLAIN, "output")
    layers, src = passes.fuse_activations(*passes.fold_batch_norms(ctx.layers, src))
    if (mac is not None or ort_cpu != "exact") and not any(isinstance(la.quant, onnx_qop.QLinearMac) for la in layers):
        raise ValueError(f"{where}: {'mac' if mac is not None else 'ort_cpu'}= applies to QOperator models' "
                         "QLinearConv / QLinearMatMul / QGemm layers and this model has none; a float or QDQ model "
                         "takes its MAC spec in hwsim.run(net, x, mac=...)")
    meta = {"source": where, "format": "onnx"}
    if mac is not None or ort_cpu != "exact":
        meta["mac"] = (mac.name or str(mac)) if mac is not None else f"onnxruntime {ort_cpu}"
    return ir.Network(p.stem, in_shape, layers, output=src, meta=meta)


def _evaluate(node, ctx):
    """The value of a node whose inputs are all constants, by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    feeds = {t: ctx.consts[t] for t in node.input if t}
    try:
        return ReferenceEvaluator(node).run(None, feeds)[0]
    except Exception as exc:
        raise ctx.error(node, f"cannot fold its constant inputs ({type(exc).__name__}: {exc})") from None


def load(source, **options) -> ir.Network:
    """The frontend entry point (:mod:`hwsim.frontends`): :func:`load_onnx` (options ``mac``, ``ort_cpu``)."""
    from . import check_options

    check_options(options, "ONNX", ("mac", "ort_cpu"))
    return load_onnx(source, **options)
