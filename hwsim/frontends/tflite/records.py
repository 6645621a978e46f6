"""The TF-Lite int8 ops' exact arithmetic: :class:`TensorQ` (a tensor's quantization) and one *quant
record* per imported op (``layer.quant``). ``record.run(layer, inputs, seed, offset)`` maps the input
codes (float32 arrays of exact integers, as :func:`hwsim.run` carries them) to the output's.

The formulas, per op and per kernel mode, are in :mod:`hwsim.frontends.tflite`'s docstring and in each
record's docstring; the sources they come from (TensorFlow 2.21's ``tensorflow/lite/kernels`` and the
XNNPACK it bundles) are cited there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwsim.graph import ir
from kernels.formats import FixedFormat
from kernels.mac import MacSpec
from kernels.ops import same_padding

from quant import requant as rq

# ------------------------------------------------------------------------------------------------
# tensors and arithmetic helpers
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TensorQ:
    """One TF-Lite tensor: ``dtype`` ("int8", "float32", "int32"), ``shape`` with the batch, and its
    affine quantization (``scale`` float32 and ``zero_point`` int64 arrays, one entry per tensor or
    per channel along ``axis``; empty for float tensors)."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: np.ndarray = field(repr=False)
    zero_point: np.ndarray = field(repr=False)
    axis: int = 0

    @property
    def s(self) -> np.float32:
        """The per-tensor scale (float32)."""
        return np.float32(self.scale[0])

    @property
    def zp(self) -> int:
        return int(self.zero_point[0])

    def same_quant(self, other: "TensorQ") -> bool:
        return (self.dtype == other.dtype and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))


_round_away = rq.round_half_away


def _codes(x) -> np.ndarray:
    """int64 codes from a float array of exact integers (as the runner carries them)."""
    return np.asarray(x).astype(np.int64)


def _out(q) -> np.ndarray:
    return np.asarray(q).astype(np.float32)


#: the code range of each activation type
QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def act_bounds(activation: str, y: TensorQ, kernels_: str) -> tuple[int, int]:
    """Output bounds of a fused activation, in the codes of ``y``'s type (see the module docstring)."""
    lo, hi = QRANGE[y.dtype]
    if activation == "linear":
        return lo, hi
    s, zp = y.s, y.zp

    def q(v):
        if kernels_ == "xnnpack":  # xnn_qs8_quantize: lrintf(clamp(v / scale + zp))
            f = np.float32(np.float32(np.float32(v) / s) + np.float32(zp))
            return int(np.rint(np.clip(f, np.float32(lo), np.float32(hi))))
        return zp + int(_round_away(np.float32(np.float32(v) / s)))  # CalculateActivationRangeQuantized

    lo = max(lo, q(0.0))
    if activation == "relu6":
        hi = min(hi, q(6.0))
    return lo, hi


# ------------------------------------------------------------------------------------------------
# quant records (one per IR layer); run(layer, inputs, seed, offset) -> float32 array
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TFLiteOp:
    """Base of the quant records: the TF-Lite op (``op``, its ``index`` in the model), whose
    arithmetic it reproduces (``kernels``: "xnnpack" = inside the XNNPACK delegate, "builtin" = on
    TF-Lite's optimized built-in kernel outside it, "reference" = TF-Lite's reference kernel) and its
    tensors (``inputs``, ``output``; :class:`TensorQ`). ``run(layer, inputs, seed, offset)`` maps the
    input codes (float32 arrays of exact integers) to the output's."""

    op: str
    index: int
    kernels: str
    inputs: tuple[TensorQ, ...]
    output: TensorQ

    def describe(self) -> str:
        return f"TF-Lite {self.op} #{self.index} ({self.kernels})"


@dataclass(frozen=True, eq=False)
class QuantizeOp(TFLiteOp):
    """QUANTIZE float32 -> int8."""

    def run(self, layer, inputs, seed=None, offset=0):
        x = np.asarray(inputs[0], dtype=np.float32)
        y = self.output
        if self.kernels == "xnnpack":
            v = np.rint(x * (np.float32(1) / y.s))
        else:
            v = _round_away(x / y.s)
        return _out(np.clip(v + np.float32(y.zp), -128, 127))


@dataclass(frozen=True, eq=False)
class DequantizeOp(TFLiteOp):
    """DEQUANTIZE int8 -> float32: ``f32(q - zp) * s``."""

    def run(self, layer, inputs, seed=None, offset=0):
        x = self.inputs[0]
        return (_codes(inputs[0]) - x.zp).astype(np.float32) * x.s


@dataclass(frozen=True, eq=False)
class MacOp(TFLiteOp):
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV: int8 MACs on ``mac``, zero-point
    correction, bias, requantization (see :mod:`hwsim.frontends.tflite`'s docstring). ``colsum`` is
    ``sum(w)`` per output channel.

    TRANSPOSE_CONV (``tensorflow/lite/kernels/transpose_conv.cc``; XNNPACK ``deconvolution-nhwc.c``):
    ``acc[o] = sum((x - zp_x) * w) + bias`` over the taps that reach output pixel ``o`` (the input is
    not padded; the MAC array sees it spread out with the zero point, :class:`hwsim.graph.ir.Conv2DTranspose`),
    requantized as CONV_2D in the xnnpack and reference modes; TF-Lite's optimized kernel requantizes
    the output channels below ``8 * (C // 8)`` in 8-wide NEON blocks (run through NEON_2_SSE on x86)
    whose second rounding is ``(v + 2**(n-1)) >> n`` (ties toward +inf), the others as reference.
    """

    mac: MacSpec = None
    colsum: np.ndarray = field(default=None, repr=False)
    bias: np.ndarray = field(default=None, repr=False)
    scale32: np.ndarray = field(default=None, repr=False)  # xnnpack
    multiplier: np.ndarray = field(default=None, repr=False)  # reference
    shift: np.ndarray = field(default=None, repr=False)
    round_away: bool = False  # reference FULLY_CONNECTED: one exact rounding, ties away from zero
    #: builtin TRANSPOSE_CONV: the output channels below ``neon_block * (C // neon_block)`` are requantized
    #: in NEON blocks whose second rounding is a rounding shift (ties toward +inf); 0 = none
    neon_block: int = 0
    lo: int = -128
    hi: int = 127

    def accumulate(self, layer, x, seed=None, offset=0) -> np.ndarray:
        """The exact int32 accumulators ``sum((x - zp_x) * w) + bias`` (int64 array; with a float MAC result,
        0 where it left the requantizer's range: :meth:`_accumulate`)."""
        return self._accumulate(layer, x, seed, offset)[0]

    def _accumulate(self, layer, x, seed=None, offset=0):
        """(accumulators, over): ``over`` None, or +1 / -1 where a float MAC result left the requantizer's
        range (:meth:`_sums`)."""
        zp = self.inputs[0].zp
        x = np.asarray(x, dtype=np.float32)
        # stochastic counters: element offset of this batch (first image ``offset``) in the whole run
        per_image = int(np.prod(self.output.shape[1:]))
        offset = int(offset) * per_image
        if layer.kind == "conv2d_transpose":  # the spread-out input is filled with the zero point too
            y = layer.mac(x, layer.kernel, self.mac, seed=seed, offset=offset, fill=np.float32(zp))
            return self._sums(layer, y, zp)
        if layer.spatial and layer.padding == "same":  # TF-Lite pads with the input's zero point
            kh, kw = layer.kernel.shape[:2]
            dh, dw = layer.dilation
            ext = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
            pads = [same_padding(n, k, s, "same") for n, k, s in zip(x.shape[1:3], ext, layer.strides)]
            x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=np.float32(zp))
        y = layer.mac(x, layer.kernel, self.mac, seed=seed, offset=offset, padding="valid")
        return self._sums(layer, y, zp)

    #: the requantizer's input range: int32, the int8 ops' accumulator
    _ACC_RANGE = (rq.INT32_MIN, rq.INT32_MAX)

    def _sums(self, layer, y, zp):
        """(``sum((x - zp) * w) + bias`` as int64, over) from the MAC's results ``y = sum(x * w)``. A MAC whose
        result format is an integer one gives integers, used as they are (over None); a float result (``mac=``
        a float accumulator or output format) goes through :func:`quant.requant.accumulator_input`: where it
        leaves :attr:`_ACC_RANGE` (an overflow to inf too) :meth:`run` gives the end of the output range of
        its sign; NaN is an error naming the layer."""
        correction = self.bias - np.int64(zp) * self.colsum
        if isinstance(self.mac.out_format, FixedFormat):
            return np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64) + correction, None
        return rq.accumulator_input(y, correction, *self._ACC_RANGE, f"layer {layer.name!r} ({self.mac.name})")

    def requantize(self, acc) -> np.ndarray:
        zp = self.output.zp
        if self.kernels == "xnnpack":
            return rq.fp32_requantize(acc, self.scale32, zp, self.lo, self.hi)
        if self.round_away:
            y = rq.multiply_by_quantized_multiplier_round_away(acc, self.multiplier, self.shift)
            return np.clip(y + np.int64(zp), self.lo, self.hi)
        if self.kernels == "builtin" and self.neon_block:
            # optimized per-channel Quantize: vrshl(vqrdmulh(acc << left, m), -right) in the NEON blocks
            m, sh = self.multiplier, self.shift
            left, right = np.maximum(sh, 0), np.maximum(-sh, 0)
            v = rq.saturating_rounding_doubling_high_mul(acc << left, m)
            neon = (v + ((np.int64(1) << right) >> 1)) >> right
            y = rq.multiply_by_quantized_multiplier(acc, m, sh)
            C = acc.shape[-1]
            y = np.where(np.arange(C) < (C // self.neon_block) * self.neon_block, neon, y)
            return np.clip(y + np.int64(zp), self.lo, self.hi)
        return rq.requantize(acc, self.multiplier, self.shift, zp, self.lo, self.hi)

    def run(self, layer, inputs, seed=None, offset=0):
        acc, over = self._accumulate(layer, inputs[0], seed=seed, offset=offset)
        return _out(rq.saturate_output(self.requantize(acc), over, self.lo, self.hi))


@dataclass(frozen=True, eq=False)
class PoolOp(TFLiteOp):
    """MAX_POOL_2D / AVERAGE_POOL_2D on the int8 codes (input and output share quantization)."""

    lo: int = -128
    hi: int = 127

    def run(self, layer, inputs, seed=None, offset=0):
        x = _codes(inputs[0])
        n, H, W, C = x.shape
        kh, kw = layer.pool_size
        sh, sw = layer.strides
        OH, OW = ir.conv_output_hw(H, W, kh, kw, layer.strides, layer.padding)
        (pt, pb), (pl, pr) = [same_padding(d, k, s, layer.padding) for d, k, s in ((H, kh, sh), (W, kw, sw))]
        if layer.op == "max":
            xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=np.iinfo(np.int64).min)
        else:
            xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
            ones = np.pad(np.ones((1, H, W, 1), np.int64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        acc = cnt = None
        for dh in range(kh):
            for dw in range(kw):
                sl = xp[:, dh:dh + (OH - 1) * sh + 1:sh, dw:dw + (OW - 1) * sw + 1:sw, :]
                if layer.op == "max":
                    acc = sl.copy() if acc is None else np.maximum(acc, sl)
                else:
                    c = ones[:, dh:dh + (OH - 1) * sh + 1:sh, dw:dw + (OW - 1) * sw + 1:sw, :]
                    acc = sl.copy() if acc is None else acc + sl
                    cnt = c.copy() if cnt is None else cnt + c
        if layer.op == "avg":
            half = cnt // 2
            acc = np.where(acc > 0, (acc + half) // cnt, -((-acc + half) // cnt))  # C division truncates
        return _out(np.clip(acc, self.lo, self.hi))


@dataclass(frozen=True, eq=False)
class MeanOp(TFLiteOp):
    """MEAN over ``axes`` (of the tensor with its batch), ``n`` = the number of reduced elements.

    * xnnpack (``src/operators/reduce-nd.c``, qs8 mean, any axes): the raw codes are summed,
      ``R = sum(q)``; ``scale = f32(f32(s_x / s_y) * f32(1 / n))``; the input zero point is folded into
      a float output zero point ``zp' = f32(zp_y - f32(f32(n * zp_x) * scale))``;
      ``y = clamp(round-away(f32(f32(R * scale) + zp')))`` -- ties away from zero (TF 2.21's XNNPACK
      rounds with ``std::round``; measured with power-of-two scale ratios, where ties are frequent).
    * reference (``reference_ops::QuantizedMeanOrSum``): ``S = sum(q) - zp_x * n``,
      ``(m, shift) = QuantizeMultiplier(double(s_x) / double(s_y))``, ``k = min(floor(log2 n), 32,
      31 + shift)``, ``m' = (m * 2**k) // n``, ``y = clamp(MBQM(S, m', shift - k) + zp_y)`` (also when
      input and output quantization are equal).
    """

    axes: tuple[int, ...] = (1, 2)
    keepdims: bool = False

    def run(self, layer, inputs, seed=None, offset=0):
        q = _codes(inputs[0])
        x, y = self.inputs[0], self.output
        n = int(np.prod([q.shape[a] for a in self.axes]))
        total = q.sum(axis=self.axes, keepdims=self.keepdims)
        if self.kernels == "xnnpack":
            scale = np.float32(np.float32(x.s / y.s) * (np.float32(1) / np.float32(n)))
            zpf = np.float32(np.float32(y.zp) - np.float32(np.float32(n * x.zp) * scale))
            f = (total.astype(np.float32) * scale).astype(np.float32) + zpf
            return _out(np.clip(_round_away(f), -128, 127))
        S = total - np.int64(x.zp) * n
        m, shift = rq.quantize_multiplier(np.float64(x.s) / np.float64(y.s))
        k = min(n.bit_length() - 1, 32, 31 + shift)
        m2 = (m << k) // n
        return _out(np.clip(rq.multiply_by_quantized_multiplier(S, m2, shift - k) + y.zp, *QRANGE[y.dtype]))


@dataclass(frozen=True, eq=False)
class BinaryOp(TFLiteOp):
    """ADD / SUB / MUL / MAXIMUM / MINIMUM of two int8 tensors with broadcasting (:func:`.binary.binary`
    states the arithmetic per kernel mode). ``const``: the codes of a constant operand (at input
    position ``const_pos``), which the IR layer does not take as an input."""

    lo: int = -128
    hi: int = 127
    const: np.ndarray | None = field(default=None, repr=False)
    const_pos: int = 1

    def run(self, layer, inputs, seed=None, offset=0):
        from .binary import binary

        (ta, tb), y = self.inputs, self.output
        args = ((ta.s, ta.zp), (tb.s, tb.zp), (y.s, y.zp), self.kernels, self.lo, self.hi)
        # all images at once: a lower-rank computed input aligned after its batch axis (what broadcasting
        # its batch-1 TF-Lite shape means per image); TF-Lite's optimized kernels round some elements by
        # their position in one invocation's loops, which ``shapes`` (the TF-Lite shapes) states
        ins = ir.align_batched([_codes(v) for v in inputs])
        if self.const is not None:
            ins.insert(self.const_pos, self.const)
        return _out(binary(self.op, ins[0], ins[1], *args, shapes=(ta.shape, tb.shape)))


@dataclass(frozen=True, eq=False)
class PadOp(TFLiteOp):
    """PAD / PADV2 / SPACE_TO_BATCH_ND's padding with the code ``value`` (PAD: the zero point, the code of
    real 0; PADV2: its constant)."""

    value: int = 0

    def run(self, layer, inputs, seed=None, offset=0):
        (t, b), (le, r) = layer.padding
        return np.pad(np.asarray(inputs[0], dtype=np.float32), ((0, 0), (t, b), (le, r), (0, 0)),
                      constant_values=np.float32(self.value))


@dataclass(frozen=True, eq=False)
class ReshapeOp(TFLiteOp):
    """RESHAPE (row-major, codes unchanged)."""

    def run(self, layer, inputs, seed=None, offset=0):
        x = np.asarray(inputs[0], dtype=np.float32)
        return x.reshape(len(x), *layer.target)




def _cdiv(a, b):
    """C integer division (truncation toward zero) of an int64 array by a positive ``b``."""
    a = np.asarray(a, dtype=np.int64)
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def _bilinear_axis_q10(n_in: int, n_out: int, align_corners: bool, half_pixel_centers: bool):
    """TF-Lite's integer bilinear coordinates along one axis (``ComputeInterpolationValuesInteger`` in
    ``tensorflow/lite/kernels/internal/reference/resize_bilinear.h``): the 10-bit scale
    ``(1024 n_in + n_out // 2) // n_out`` (align_corners: of ``n_in - 1`` over ``n_out - 1``), the source
    ``s = o * scale`` (half-pixel: ``+ scale // 2 - 512``), ``lo = max(trunc(s / 1024), 0)``,
    ``hi = min(trunc((s + 1023) / 1024), n_in - 1)``, weights ``w_hi = s - 1024 lo``, ``w_lo = 1024 - w_hi``."""
    if align_corners and n_out > 1:
        sc = (1024 * (n_in - 1) + (n_out - 1) // 2) // (n_out - 1)
    else:
        sc = (1024 * n_in + n_out // 2) // n_out
    s = np.arange(n_out, dtype=np.int64) * sc + (sc // 2 - 512 if half_pixel_centers else 0)
    lo = np.maximum(_cdiv(s, 1024), 0)
    hi = np.minimum(_cdiv(s + 1023, 1024), n_in - 1)
    w_hi = s - 1024 * lo
    return lo, hi, 1024 - w_hi, w_hi


def _bilinear_axis_q11(n_in: int, n_out: int, align_corners: bool, half_pixel_centers: bool):
    """XNNPACK's bilinear coordinates along one axis (``xnn_indirection_init_resize_bilinear2d_hwc_q11``,
    ``src/indirection.c``), in float32: ``scale = f32(f32(n_in - a) / f32(n_out - a))`` (``a = 1`` with
    align_corners and ``n_out != 1``); ``v = f32(o * scale)``, with half-pixel centres
    ``+ f32(f32(0.5 scale) - 0.5)`` (a second rounding, no FMA) clamped to ``[0, n_in - 1]``;
    ``lo = trunc(v)``, ``hi = min(lo + 1, n_in - 1)``, the 11-bit weight ``rint(f32((v - lo) * 2048))``
    (half to even)."""
    a = 1 if (align_corners and n_out != 1) else 0
    scale = np.float32(np.float32(n_in - a) / np.float32(n_out - a))
    v = (np.arange(n_out).astype(np.float32) * scale).astype(np.float32)
    if half_pixel_centers and not align_corners:
        off = np.float32(np.float32(np.float32(0.5) * scale) - np.float32(0.5))
        v = np.clip((v + off).astype(np.float32), np.float32(0), np.float32(n_in - 1)).astype(np.float32)
    lo = v.astype(np.int64)
    w = np.rint(((v - lo.astype(np.float32)).astype(np.float32) * np.float32(2048)).astype(np.float32))
    return lo, np.minimum(lo + 1, n_in - 1), w.astype(np.int64)


def _nearest_axis(n_in: int, n_out: int, align_corners: bool, half_pixel_centers: bool):
    """``reference_ops::ResizeNearestNeighbor``'s float32 source index (``GetNearestNeighbor``):
    ``v = f32(f32(o + (0.5 if half_pixel_centers)) * scale)``, index ``round-away(v)`` with
    align_corners else ``floor(v)``, clamped to ``[0, n_in - 1]``."""
    if align_corners and n_out > 1:
        scale = np.float32(np.float32(n_in - 1) / np.float32(n_out - 1))
    else:
        scale = np.float32(np.float32(n_in) / np.float32(n_out))
    off = np.float32(0.5 if half_pixel_centers else 0.0)
    v = ((np.arange(n_out).astype(np.float32) + off).astype(np.float32) * scale).astype(np.float32)
    idx = np.floor(v + np.float32(0.5)) if align_corners else np.floor(v)
    return np.clip(idx.astype(np.int64), 0, n_in - 1)


@dataclass(frozen=True, eq=False)
class ResizeOp(TFLiteOp):
    """RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR on the int8 codes (input and output share quantization;
    nothing is requantized).

    * bilinear, xnnpack (``src/s8-ibilinear``): with the Q11 weights of :func:`_bilinear_axis_q11`
      (``ah`` across, ``av`` down), ``t = (tl << 11) + (tr - tl) ah``, ``b`` likewise for the bottom row,
      ``acc = (t << 11) + (b - t) av``, ``y = (acc + 2**21) >> 22`` (ties toward +inf).
    * bilinear, builtin and reference (the optimized int8 kernel calls the reference
      ``ResizeBilinearInteger``): with the Q10 weights of :func:`_bilinear_axis_q10`,
      ``acc = sum(q * wy * wx)`` over the four corners (exact), ``y = trunc((acc +- 2**19) / 2**20)``
      (ties away from zero).
    * nearest (XNNPACK never takes it; TF 2.21 sends int8 to the reference kernel in every mode): the
      codes at :func:`_nearest_axis`'s indices.
    """

    method: str = "bilinear"
    align_corners: bool = False
    half_pixel_centers: bool = False

    def run(self, layer, inputs, seed=None, offset=0):
        q = _codes(inputs[0])
        (H, W), (oh, ow) = q.shape[1:3], layer.size
        ac, hp = self.align_corners, self.half_pixel_centers
        if self.method == "nearest":
            return _out(q[:, _nearest_axis(H, oh, ac, hp)][:, :, _nearest_axis(W, ow, ac, hp)])
        g = lambda ys, xs: q[:, ys][:, :, xs]  # noqa: E731
        if self.kernels == "xnnpack":
            yt, yb, av = _bilinear_axis_q11(H, oh, ac, hp)
            xl, xr, ah = _bilinear_axis_q11(W, ow, ac, hp)
            ah, av = ah[None, None, :, None], av[None, :, None, None]
            t = (g(yt, xl) << 11) + (g(yt, xr) - g(yt, xl)) * ah
            b = (g(yb, xl) << 11) + (g(yb, xr) - g(yb, xl)) * ah
            return _out(np.clip(((t << 11) + (b - t) * av + (1 << 21)) >> 22, -128, 127))
        y0, y1, wy0, wy1 = (v[None, :, None, None] if k > 1 else v for k, v in
                            enumerate(_bilinear_axis_q10(H, oh, ac, hp)))
        x0, x1, wx0, wx1 = (v[None, None, :, None] if k > 1 else v for k, v in
                            enumerate(_bilinear_axis_q10(W, ow, ac, hp)))
        acc = (g(y0, x0) * wy0 * wx0 + g(y1, x0) * wy1 * wx0 + g(y0, x1) * wy0 * wx1 + g(y1, x1) * wy1 * wx1)
        return _out(_cdiv(acc + np.where(acc > 0, 1 << 19, -(1 << 19)), 1 << 20))


@dataclass(frozen=True, eq=False)
class ConcatOp(TFLiteOp):
    """CONCATENATION: the codes copied (every kernel requires each input quantized like the output)."""

    def run(self, layer, inputs, seed=None, offset=0):
        return layer.run([np.asarray(a, dtype=np.float32) for a in inputs])


@dataclass(frozen=True, eq=False)
class LutOp(TFLiteOp):
    """An 8-bit elementwise unary op (LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1,
    QUANTIZE between 8-bit types) as its table over the input codes (:mod:`.tables` builds it with the
    kernel's own arithmetic): ``y = table[q - in_min]``.

    ``tail_table``: TF-Lite's optimized int8 -> int8 QUANTIZE rounds its 16-wide vector loop differently
    from its scalar tail, so the last ``n % 16`` of an image's ``n`` elements (flat, row-major) take this
    table instead."""

    table: np.ndarray = field(default=None, repr=False)
    in_min: int = -128
    tail_table: np.ndarray | None = field(default=None, repr=False)

    def run(self, layer, inputs, seed=None, offset=0):
        q = _codes(inputs[0]) - self.in_min
        if self.tail_table is None:
            return _out(self.table[q])
        flat = q.reshape(len(q), -1)
        v = (flat.shape[1] // 16) * 16
        out = np.concatenate([self.table[flat[:, :v]], self.tail_table[flat[:, v:]]], axis=1)
        return _out(out.reshape(q.shape))


@dataclass(frozen=True, eq=False)
class SoftmaxOp(TFLiteOp):
    """SOFTMAX int8 -> int8 over the last axis (:func:`.softmax.softmax`: XNNPACK never takes it; the
    optimized built-in kernel's float32 table, or the reference kernel's gemmlowp fixed point)."""

    beta: float = 1.0

    def run(self, layer, inputs, seed=None, offset=0):
        from .softmax import softmax

        x, y = self.inputs[0], self.output
        return _out(softmax(_codes(inputs[0]), x.s, x.zp, y.s, y.zp, self.beta, self.kernels))


# ------------------------------------------------------------------------------------------------
# int16x8 models (:mod:`.int16`)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Mac16Op(MacOp):
    """int16x8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: the exact accumulator ``sum(x * w) + bias``
    (zero points 0; the MAC array's default spec for these models is int16 x int8 with an exact 53-bit
    accumulator, TF-Lite's int64 one while |acc| < 2**53), requantized by :func:`.int16.mac_requant`
    (``layer_op``: "conv", "dw" or "fc"; ``bias_bits``: 64, or "none" for a FULLY_CONNECTED without bias)."""

    layer_op: str = "conv"
    w_scales: np.ndarray = field(default=None, repr=False)
    bias_bits: object = 64

    #: TF-Lite's int16x8 accumulator is int64; its requantizer (:func:`.int16.mbqm_int64`) holds for |x| < 2**47
    #: (past int32 results it wraps, but the float MAC results beyond this range get the output's ends)
    _ACC_RANGE = (-(2 ** 47 - 1), 2 ** 47 - 1)

    def requantize(self, acc) -> np.ndarray:
        from .int16 import mac_requant

        return mac_requant(acc, self.inputs[0].s, self.w_scales, self.output.s, self.layer_op, self.kernels, self.lo,
                           self.hi, self.bias_bits)



@dataclass(frozen=True, eq=False)
class Quantize16Op(TFLiteOp):
    """QUANTIZE float32 -> int16 (:func:`.int16.quantize_f32_to_i16`)."""

    def run(self, layer, inputs, seed=None, offset=0):
        from .int16 import quantize_f32_to_i16

        return _out(quantize_f32_to_i16(np.asarray(inputs[0], dtype=np.float32), self.output.s, self.kernels))


@dataclass(frozen=True, eq=False)
class Add16Op(TFLiteOp):
    """ADD of two same-shape int16 tensors (:func:`.int16.add`)."""

    lo: int = -32768
    hi: int = 32767

    def run(self, layer, inputs, seed=None, offset=0):
        from .int16 import add

        (ta, tb), y = self.inputs, self.output
        return _out(add(_codes(inputs[0]), _codes(inputs[1]), ta.s, tb.s, y.s, self.kernels, self.lo, self.hi))
