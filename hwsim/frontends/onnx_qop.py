"""onnxruntime's QOperator models in hwsim: QLinearConv, QLinearMatMul and the com.microsoft QGemm,
QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu and QLinearGlobalAveragePool, executed with
onnxruntime's integer arithmetic.

Tensors between these layers are uint8 / int8 codes held as float32 (QuantizeLinear and
DequantizeLinear at the graph's edges, :mod:`hwsim.graph.ir`). Per layer (``zp`` zero points, ``s``
scales, ``[lo, hi]`` the output type's range, ``f32(.)`` one float32 operation, RNE round half to even):

* **QLinearConv / QLinearMatMul / QGemm**: the exact integer accumulator ``acc = sum((x - zp_x) * w) + bias``
  (the products and int32 sums on the emulated MAC array, :mod:`kernels`, with an exact integer spec by
  default; the input padded with ``zp_x``), then MLAS's requantization (``MlasRequantizeOutput``,
  ``onnxruntime/core/mlas/lib/qlmul / qgemm`` output processors):
  ``y = RNE(clamp(f32(f32(acc) * scale), lo - zp_y, hi - zp_y)) + zp_y`` with
  ``scale = f32(f32(s_x * s_w[c]) / s_y)`` (QLinearConv's order, ``qlinearconv.cc``) or
  ``f32(f32(f32(alpha * s_a) * s_b[c]) / s_y)`` (QGemm, ``quant_gemm.cc::ComputeOutputScale``).
  Weight zero points must be 0.
* **QLinearAdd** (MLAS's AVX2 kernel with FMA, ``qladd_avx2.cpp``, the "XNN float multiply" form):
  ``r_a = f32(s_a / s_c)``, ``r_b = f32(s_b / s_c)``, ``K = f32(zp_c - fma(r_a, zp_a, f32(r_b * zp_b)))``,
  ``y = clamp(RNE(fma(a, r_a, fma(b, r_b, K))), lo, hi)`` on the codes ``a``, ``b``.
* **QLinearMul** (MLAS's SSE2 kernel, ``qlmul.cpp``): ``ratio = f32(f32(s_a * s_b) / s_c)``,
  ``y = clamp(RNE(f32(f32((a - zp_a) * (b - zp_b)) * ratio) + zp_c), lo, hi)``, broadcasting.
* **QLinearSigmoid / QLinearLeakyRelu**: onnxruntime's 256-entry table, built with MLAS's float kernels
  (:mod:`hwsim.frontends.onnx_mlas`: the FMA3 logistic polynomial, then ``MlasQuantizeLinear``).
* **QLinearGlobalAveragePool** (NCHW): ``acc = sum(x) - zp_x * N`` over the ``N = H * W`` pixels, then the
  same requantization with ``scale = f32(s_x / f32(s_y * N))`` (``qlinear_global_average_pool.cc``,
  ``CheckQLinearGlobalAveragePoolScaleAndSize``).

These were checked against onnxruntime 1.32 (session option ``session.x64quantprecision = 1``) on an
AVX-512 VNNI CPU, where its u8s8 products are exact.

**Which integer sums** (``load_onnx(..., ort_cpu=)``, :data:`ORT_CPUS`): by default (``"exact"``) the products
and int32 sums are exact, which is onnxruntime with ``x64quantprecision = 1`` anywhere, and its default
session on CPUs with VNNI. Its default session on an x86 CPU with AVX2 and no VNNI (``"avx2"``) runs MLAS's
AVX2 u8s8 kernels, which add each pair of adjacent u8 x s8 products (``vpmaddubsw``) with saturation to int16
before the int32 sum: QLinearConv, QLinearMatMul and QGemm get the ``ort_u8s8_pairs`` MAC preset there (for
a convolution, K runs over the channels of one kernel tap, then the next tap), except a QLinearConv with one
input and one output channel per group (depthwise, or a one-channel convolution), which
``qlinearconv.cc`` sends to MLAS's depthwise kernel: exact. A depthwise QLinearConv with a channel
multiplier above 1 is refused under ``"avx2"`` (neither rule reproduces it). Checked against onnxruntime
1.32's default session with the CPU's AVX-512 and VNNI hidden through CPUID faulting (``tests/_cpumask.c``):
three CNNs on 500 images, and single convolutions with 1 to 16 input channels. ``mac=`` instead puts any
MAC spec on all of these layers (integer operand formats must hold the codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwsim.graph import ir
from kernels.formats import FixedFormat
from kernels.mac import as_spec
from quant import requant as rq


def _f32(x):
    return np.asarray(x, np.float64).astype(np.float32)


def requantize(acc, scale, zp: int, lo: int, hi: int):
    """MLAS's ``MlasRequantizeOutput``: RNE(clamp(f32(f32(acc) * scale))) + zp, the same float32 rescaling as
    XNNPACK's (:func:`quant.requant.fp32_requantize`); the codes as float32."""
    return rq.fp32_requantize(acc, scale, zp, lo, hi).astype(np.float32)


@dataclass(frozen=True, eq=False)
class QLinearMac:
    """The quant record of a QLinearConv / QLinearMatMul / QGemm layer (module docstring). The layer's
    ``kernel`` holds the int8 weights, its ``bias`` the int32 bias."""

    x_zp: int
    colsum: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    y_zp: int
    lo: int
    hi: int
    mac: object

    def run(self, layer, inputs, seed=None, offset=0):
        x = np.asarray(inputs[0], np.float32)
        per_image = int(np.prod(layer.output_shape([x.shape[1:]])))
        y = layer.mac(x, layer.kernel, self.mac, seed=seed, offset=int(offset) * per_image)
        correction = self.bias - np.int64(self.x_zp) * self.colsum
        spec = as_spec(self.mac)
        if isinstance(spec.out_format, FixedFormat):
            return requantize(np.rint(np.asarray(y, np.float64)).astype(np.int64) + correction, self.scale,
                              self.y_zp, self.lo, self.hi)
        # a float MAC result (mac=): past int32, the requantizer's input, it gives the end of the output range of
        # its sign (an overflow to inf too); NaN is an error
        acc, over = rq.accumulator_input(y, correction, rq.INT32_MIN, rq.INT32_MAX, f"layer {layer.name!r} ({spec.name})")
        return rq.saturate_output(requantize(acc, self.scale, self.y_zp, self.lo, self.hi), over, self.lo, self.hi)


@dataclass(frozen=True, eq=False)
class QLinearAddRecord:
    ra: float
    rb: float
    k: float
    lo: int
    hi: int

    @classmethod
    def from_scales(cls, sa, za, sb, zb, sc, zc, lo, hi) -> "QLinearAddRecord":
        """The record of ``QLinearAdd`` with these scales and zero points (module docstring)."""
        ra, rb = float(np.float32(np.float32(sa) / np.float32(sc))), float(np.float32(np.float32(sb) / np.float32(sc)))
        k = float(_f32(float(zc) - float(_f32(ra * float(za) + float(_f32(rb * float(zb)))))))
        return cls(ra, rb, k, int(lo), int(hi))

    def run(self, layer, inputs, seed=None, offset=0):
        a, b = (np.asarray(v, np.float64) for v in inputs)
        t = _f32(b * self.rb + self.k).astype(np.float64)  # fma: the product is exact in float64
        t = _f32(a * self.ra + t)
        return np.clip(np.rint(t), self.lo, self.hi).astype(np.float32)


@dataclass(frozen=True, eq=False)
class QLinearMulRecord:
    """``QLinearMul`` as MLAS's SSE2 kernel (``qlmul.cpp``, ``MlasQLinearMulKernel``) computes it:
    ``ratio = f32(f32(s_a * s_b) / s_c)``, the exact product ``p = (a - zp_a) * (b - zp_b)``,
    ``y = clamp(RNE(f32(f32(p) * ratio) + zp_c), lo, hi)`` (``_mm_cvtps_epi32`` rounds half to even; the
    int16 and 8-bit saturating packs are the clamp). Inputs broadcast as numpy does."""

    ratio: float
    za: int
    zb: int
    zc: int
    lo: int
    hi: int

    def run(self, layer, inputs, seed=None, offset=0):
        a, b = (np.rint(np.asarray(v, np.float64)).astype(np.int64) for v in inputs)
        p = (a - self.za) * (b - self.zb)
        t = _f32(_f32(p.astype(np.float32).astype(np.float64) * self.ratio).astype(np.float64) + self.zc)
        return np.clip(np.rint(t), self.lo, self.hi).astype(np.float32)


@dataclass(frozen=True, eq=False)
class QLinearLookupRecord:
    """An 8-bit elementwise op as onnxruntime runs it, through its 256-entry table
    (:mod:`hwsim.frontends.onnx_mlas`): ``y = table[x - lo]``."""

    table: np.ndarray
    lo: int

    def run(self, layer, inputs, seed=None, offset=0):
        q = np.rint(np.asarray(inputs[0], np.float64)).astype(np.int64) - self.lo
        return self.table[q].astype(np.float32)


@dataclass(frozen=True, eq=False)
class QLinearAvgPoolRecord:
    x_zp: int
    scale: float
    y_zp: int
    lo: int
    hi: int

    def run(self, layer, inputs, seed=None, offset=0):
        x = np.asarray(inputs[0], np.float32)
        n = x.shape[1] * x.shape[2]
        acc = np.rint(x.astype(np.float64).sum(axis=(1, 2), keepdims=layer.keepdims)).astype(np.int64) - self.x_zp * n
        return requantize(acc, self.scale, self.y_zp, self.lo, self.hi)


def _layer_name(ctx, node):
    from .onnx import _name

    return _name(ctx, node)


def _scalar(ctx, node, k, what):
    v = ctx.const(node, k)
    if np.size(v) != 1:
        raise ctx.error(node, f"{what} of shape {np.shape(v)} (per tensor only)")
    return np.asarray(v).reshape(())


def _io(ctx, node, k_scale, k_zp):
    s = np.float32(_scalar(ctx, node, k_scale, "a scale"))
    zp = _scalar(ctx, node, k_zp, "a zero point")
    info = np.iinfo(zp.dtype)
    return s, int(zp), info.min, info.max, zp.dtype


#: ``load_onnx(..., ort_cpu=)``: the onnxruntime x86 kernels whose integer sums the QOperator MAC layers reproduce
ORT_CPUS = {
    "exact": "exact products and int32 sums: onnxruntime with session.x64quantprecision=1 on any CPU, or its "
             "default session on a CPU with VNNI (AVX512-VNNI / AVX-VNNI) or on ARM",
    "avx2": "onnxruntime's default session on an x86 CPU with AVX2 but no VNNI: the u8s8 GEMM under QLinearConv "
            "(groups 1), QLinearMatMul and QGemm adds each pair of adjacent products with saturation to int16 "
            "(vpmaddubsw; the ort_u8s8_pairs MAC preset); a QLinearConv with one input and one output channel "
            "per group (depthwise, or a 1-channel convolution) stays exact",
}


def _mac_spec(ctx, node, x_dtype, depthwise=False):
    """The MAC spec of a QLinearConv / QLinearMatMul / QGemm layer on ``x_dtype`` codes and int8 weights: the
    ``mac`` given to :func:`hwsim.frontends.onnx.load_onnx`, else the arithmetic ``ort_cpu`` names."""
    from kernels.formats import FixedFormat
    from kernels.mac import MacSpec, as_spec

    codes = "uint8" if x_dtype == np.uint8 else "int8"
    given = getattr(ctx, "qmac", None)
    if given is not None:
        for what, fmt, dtype in (("activations", given.a, codes), ("weights", given.b or given.a, "int8")):
            info = np.iinfo(dtype)
            if isinstance(fmt, FixedFormat) and not (fmt.frac >= 0 and fmt.min <= info.min and info.max <= fmt.max):
                raise ctx.error(node, f"mac={given.name or given}: its {what} format {fmt} cannot hold this layer's "
                                      f"{dtype} codes ({info.min}..{info.max}); an integer or fixed-point operand "
                                      "format must hold them (to emulate narrower integers, quantize the float model "
                                      "with quant.quantize_model)")
        return given
    if getattr(ctx, "ort_cpu", "exact") == "avx2" and not depthwise:
        if codes != "uint8":
            raise ctx.error(node, "ort_cpu='avx2' with int8 activations: only onnxruntime's u8s8 GEMM (uint8 "
                                  "activations) is emulated for CPUs without VNNI; use ort_cpu='exact'")
        return as_spec("ort_u8s8_pairs")
    return MacSpec(a=codes, b="int8", accum="int32", overflow="wrap")


def qlinear_conv(ctx, node, i):
    """QLinearConv: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp[, B]."""
    names = _layer_name(ctx, node)
    from .onnx import IMAGE, _attrs, _pads

    a = _attrs(node)
    sx, zx, _, _, xdt = _io(ctx, node, 1, 2)
    w = ctx.const(node, 3)
    sw = np.asarray(ctx.const(node, 4), np.float32).reshape(-1)
    if np.any(np.asarray(ctx.const(node, 5)) != 0):
        raise ctx.error(node, "weights with nonzero zero points")
    sy, zy, lo, hi, _ = _io(ctx, node, 6, 7)
    o, ig, kh, kw = w.shape
    bias = ctx.const(node, 8, False) if len(node.input) > 8 and node.input[8] else np.zeros(o, np.int32)
    x = ctx.as_layout(node.input[0], IMAGE, names)
    pads, _ = _pads(ctx, node, (kh, kw), a)
    if pads != [(0, 0), (0, 0)]:
        x = ctx.add(ir.ZeroPad2D(ctx.unique(f"{names}_pad"), (x,), padding=tuple(tuple(int(v) for v in p) for p in pads),
                                 value=float(zx)))
    g = int(a.get("group", 1))
    c_in = ctx.onnx_shape(node.input[0])[1]
    scale = _f32(_f32(np.float64(sx) * sw.astype(np.float64)).astype(np.float64) / np.float64(sy))
    scale = np.broadcast_to(scale, (o,)).astype(np.float32)
    wf = w.astype(np.float32)
    common = dict(bias=np.asarray(bias, np.float64).reshape(-1), strides=tuple(a.get("strides", (1, 1))), padding="valid",
                  dilation=tuple(a.get("dilations", (1, 1))))
    if g == c_in and ig == 1 and g > 1:
        kernel = wf.reshape(c_in, o // c_in, kh, kw).transpose(2, 3, 0, 1)
        colsum = w.astype(np.int64).reshape(o, -1).sum(axis=1)
        cls, extra = ir.DepthwiseConv2D, {}
    elif g == 1:
        kernel = wf.transpose(2, 3, 1, 0)
        colsum = w.astype(np.int64).reshape(o, -1).sum(axis=1)
        cls, extra = ir.Conv2D, {}
    else:
        raise ctx.error(node, f"group={g} (1 or depthwise)")
    # onnxruntime's exact depthwise kernel takes a group conv with one input and one output channel per group
    # (qlinearconv.cc), its GEMM the rest; a channel multiplier > 1 is verified for neither
    if getattr(ctx, "ort_cpu", "exact") == "avx2" and cls is ir.DepthwiseConv2D and o != g:
        raise ctx.error(node, f"ort_cpu='avx2' on a depthwise QLinearConv with channel multiplier {o // g}: "
                              "onnxruntime's integer sums for it on CPUs without VNNI are not emulated; "
                              "use ort_cpu='exact' (x64quantprecision=1)")
    rec = QLinearMac(zx, colsum, np.asarray(bias, np.int64).reshape(-1), scale, zy, lo, hi,
                     _mac_spec(ctx, node, xdt, depthwise=(ig == 1 and o == g)))
    ctx.out(node, ctx.add(cls(names, (x,), kernel=np.ascontiguousarray(kernel), quant=rec, **common, **extra)), IMAGE)


def qgemm(ctx, node, i):
    """QGemm (com.microsoft): A, a_scale, a_zp, B, b_scale, b_zp[, C, y_scale, y_zp]; QLinearMatMul: a, a_scale,
    a_zp, b, b_scale, b_zp, y_scale, y_zp."""
    names = _layer_name(ctx, node)
    from .onnx import PLAIN, _attrs

    a = _attrs(node)
    if a.get("transA", 0):
        raise ctx.error(node, "attribute transA=1 (only 0)")
    sx, zx, _, _, xdt = _io(ctx, node, 1, 2)
    b = ctx.const(node, 3)
    b = b.T if a.get("transB", 0) else b  # (K, N)
    sb = np.asarray(ctx.const(node, 4), np.float32).reshape(-1)
    if np.any(np.asarray(ctx.const(node, 5)) != 0):
        raise ctx.error(node, "weights with nonzero zero points")
    if node.op_type == "QGemm":
        if len(node.input) < 9 or not node.input[7]:
            raise ctx.error(node, "no y_scale (a float output): only quantized outputs")
        c = ctx.const(node, 6, False) if node.input[6] else None
        sy, zy, lo, hi, _ = _io(ctx, node, 7, 8)
        alpha = float(a.get("alpha", 1.0))
        scale = _f32(_f32(_f32(np.float64(np.float32(alpha)) * np.float64(sx)).astype(np.float64)
                          * sb.astype(np.float64)).astype(np.float64) / np.float64(sy))
    else:
        c = None
        sy, zy, lo, hi, _ = _io(ctx, node, 6, 7)
        scale = _f32(_f32(np.float64(sx) * sb.astype(np.float64)).astype(np.float64) / np.float64(sy))
    n_out = b.shape[1]
    bias = np.zeros(n_out, np.int64) if c is None else np.broadcast_to(np.asarray(c, np.int64).reshape(-1), (n_out,))
    src, layout = ctx.src(node)
    if layout != PLAIN:
        raise ctx.error(node, "a matrix product on a 4-D image tensor")
    rec = QLinearMac(zx, b.astype(np.int64).sum(axis=0), np.asarray(bias, np.int64), np.broadcast_to(scale, (n_out,)).astype(np.float32),
                     zy, lo, hi, _mac_spec(ctx, node, xdt))
    ctx.out(node, ctx.add(ir.Dense(names, (src,), kernel=np.ascontiguousarray(b, np.float32),
                                   bias=np.asarray(bias, np.float64), quant=rec)), PLAIN)


def qlinear_add(ctx, node, i):
    """QLinearAdd (com.microsoft): A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp."""
    names = _layer_name(ctx, node)
    sa, za, _, _, _ = _io(ctx, node, 1, 2)
    sb, zb, _, _, _ = _io(ctx, node, 4, 5)
    sc, zc, lo, hi, _ = _io(ctx, node, 6, 7)
    (a_src, la), (b_src, lb) = ctx.src(node, 0), ctx.src(node, 3)
    if la != lb or ctx.shapes[a_src] != ctx.shapes[b_src]:
        raise ctx.error(node, "inputs of different shapes or layouts (no broadcasting)")
    rec = QLinearAddRecord.from_scales(sa, za, sb, zb, sc, zc, lo, hi)
    ctx.out(node, ctx.add(ir.Add(names, (a_src, b_src), quant=rec)), la)


def qlinear_mul(ctx, node, i):
    """QLinearMul (com.microsoft): A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp; B may broadcast (a
    squeeze-and-excite gate of shape (N, C, 1, 1))."""
    names = _layer_name(ctx, node)
    sa, za, _, _, _ = _io(ctx, node, 1, 2)
    sb, zb, _, _, _ = _io(ctx, node, 4, 5)
    sc, zc, lo, hi, _ = _io(ctx, node, 6, 7)
    (a_src, la), (b_src, lb) = ctx.src(node, 0), ctx.src(node, 3)
    if len(ctx.onnx_shape(node.input[0])) != len(ctx.onnx_shape(node.input[3])):
        raise ctx.error(node, "inputs of different ranks (equal ranks only)")
    if lb != la:
        b_src = ctx.as_layout(node.input[3], la, names)
    ratio = float(_f32(np.float64(_f32(np.float64(sa) * np.float64(sb))) / np.float64(sc)))
    rec = QLinearMulRecord(ratio, za, zb, zc, lo, hi)
    ctx.out(node, ctx.add(ir.Mul(names, (a_src, b_src), quant=rec)), la)


def qlinear_lookup(ctx, node, i):
    """QLinearSigmoid / QLinearLeakyRelu (com.microsoft): X, X_scale, X_zp, Y_scale, Y_zp (``alpha``)."""
    from . import onnx_mlas
    from .onnx import _attrs

    names = _layer_name(ctx, node)
    sx, zx, lo, _, dt = _io(ctx, node, 1, 2)
    sy, zy, _, _, dt_y = _io(ctx, node, 3, 4)
    if dt != dt_y:
        raise ctx.error(node, f"input type {np.dtype(dt).name} and output type {np.dtype(dt_y).name} differ")
    src, layout = ctx.src(node)
    if node.op_type == "QLinearSigmoid":
        table = onnx_mlas.qlinear_sigmoid_table(sx, zx, sy, zy, dt)
        layer = ir.Activation(names, (src,), activation="sigmoid", quant=QLinearLookupRecord(table, lo))
    else:
        alpha = float(np.float32(_attrs(node).get("alpha", 0.01)))
        table = onnx_mlas.qlinear_leaky_relu_table(sx, zx, sy, zy, dt, alpha)
        layer = ir.LeakyRelu(names, (src,), alpha=alpha, quant=QLinearLookupRecord(table, lo))
    ctx.out(node, ctx.add(layer), layout)


def qlinear_global_pool(ctx, node, i):
    """QLinearGlobalAveragePool (com.microsoft, channels_last=0): X, x_scale, x_zp, y_scale, y_zp."""
    names = _layer_name(ctx, node)
    from .onnx import IMAGE, _attrs

    if _attrs(node).get("channels_last", 0):
        raise ctx.error(node, "attribute channels_last=1 (only NCHW)")
    sx, zx, _, _, _ = _io(ctx, node, 1, 2)
    sy, zy, lo, hi, _ = _io(ctx, node, 3, 4)
    _, _, h, w = ctx.onnx_shape(node.input[0])
    scale = float(_f32(np.float64(sx) / np.float64(_f32(np.float64(sy) * np.float64(np.float32(h * w))))))
    x = ctx.as_layout(node.input[0], IMAGE, names)
    rec = QLinearAvgPoolRecord(zx, scale, zy, lo, hi)
    ctx.out(node, ctx.add(ir.GlobalAvgPool2D(names, (x,), keepdims=True, quant=rec)), IMAGE)


#: op type -> converter, default domain
CONVERTERS = {"QLinearConv": qlinear_conv, "QLinearMatMul": qgemm}
#: op type -> converter, com.microsoft domain
MS_CONVERTERS = {"QGemm": qgemm, "QLinearAdd": qlinear_add, "QLinearMul": qlinear_mul,
                 "QLinearGlobalAveragePool": qlinear_global_pool, "QLinearSigmoid": qlinear_lookup,
                 "QLinearLeakyRelu": qlinear_lookup}
