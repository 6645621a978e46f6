"""The TF-Lite int8 ops' exact arithmetic: :class:`TensorQ` (a tensor's quantization) and one *quant
record* per imported op (``layer.quant``). ``record.run(layer, inputs, seed, offset)`` maps the input
codes (float32 arrays of exact integers, as :func:`hwsim.run` carries them) to the output's.

The formulas, per op and per kernel mode, are in :mod:`hwsim.frontends.tflite`'s docstring and in each
record's docstring; the sources they come from (TensorFlow 2.21's ``tensorflow/lite/kernels`` and the
XNNPACK it bundles) are cited there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwsim.graph import ir
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


def _round_away(v):
    """C ``std::round`` / TfLiteRound: half away from zero (exact for float inputs)."""
    v = np.asarray(v)
    return np.copysign(np.floor(np.abs(v) + v.dtype.type(0.5)), v)


def _codes(x) -> np.ndarray:
    """int64 codes from a float array of exact integers (as the runner carries them)."""
    return np.asarray(x).astype(np.int64)


def _out(q) -> np.ndarray:
    return np.asarray(q).astype(np.float32)


def _act_bounds(activation: str, y: TensorQ, kernels_: str) -> tuple[int, int]:
    """int8 output bounds of a fused activation (see the module docstring)."""
    lo, hi = -128, 127
    if activation == "linear":
        return lo, hi
    s, zp = y.s, y.zp

    def q(v):
        if kernels_ == "xnnpack":  # xnn_qs8_quantize: lrintf(clamp(v / scale + zp))
            f = np.float32(np.float32(np.float32(v) / s) + np.float32(zp))
            return int(np.rint(np.clip(f, np.float32(-128), np.float32(127))))
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
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: int8 MACs on ``mac``, zero-point correction,
    bias, requantization (see the module docstring). ``colsum`` is ``sum(w)`` per output channel."""

    mac: MacSpec = None
    colsum: np.ndarray = field(default=None, repr=False)
    bias: np.ndarray = field(default=None, repr=False)
    scale32: np.ndarray = field(default=None, repr=False)  # xnnpack
    multiplier: np.ndarray = field(default=None, repr=False)  # reference
    shift: np.ndarray = field(default=None, repr=False)
    round_away: bool = False  # reference FULLY_CONNECTED: one exact rounding, ties away from zero
    lo: int = -128
    hi: int = 127

    def accumulate(self, layer, x, seed=None, offset=0) -> np.ndarray:
        """The exact int32 accumulators ``sum((x - zp_x) * w) + bias`` (int64 array)."""
        zp = self.inputs[0].zp
        x = np.asarray(x, dtype=np.float32)
        # stochastic counters: element offset of this batch (first image ``offset``) in the whole run
        per_image = int(np.prod(self.output.shape[1:]))
        offset = int(offset) * per_image
        if layer.spatial and layer.padding == "same":  # TF-Lite pads with the input's zero point
            kh, kw = layer.kernel.shape[:2]
            dh, dw = layer.dilation
            ext = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
            pads = [same_padding(n, k, s, "same") for n, k, s in zip(x.shape[1:3], ext, layer.strides)]
            x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=np.float32(zp))
        y = layer.mac(x, layer.kernel, self.mac, seed=seed, offset=offset, padding="valid")
        acc = np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64)
        return acc - np.int64(zp) * self.colsum + self.bias

    def requantize(self, acc) -> np.ndarray:
        zp = self.output.zp
        if self.kernels == "xnnpack":
            return rq.fp32_requantize(acc, self.scale32, zp, self.lo, self.hi)
        if self.round_away:
            y = rq.multiply_by_quantized_multiplier_round_away(acc, self.multiplier, self.shift)
            return np.clip(y + np.int64(zp), self.lo, self.hi)
        return rq.requantize(acc, self.multiplier, self.shift, zp, self.lo, self.hi)

    def run(self, layer, inputs, seed=None, offset=0):
        return _out(self.requantize(self.accumulate(layer, inputs[0], seed=seed, offset=offset)))


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
    """MEAN over H and W (see the module docstring)."""

    def run(self, layer, inputs, seed=None, offset=0):
        q = _codes(inputs[0])
        x, y = self.inputs[0], self.output
        n = q.shape[1] * q.shape[2]
        total = q.sum(axis=(1, 2), keepdims=layer.keepdims)
        S = total - np.int64(x.zp) * n
        if self.kernels == "xnnpack":
            scale = np.float32(np.float32(x.s / y.s) * (np.float32(1) / np.float32(n)))
            f = S.astype(np.float32) * scale + np.float32(y.zp)
            return _out(np.clip(_round_away(f), -128, 127))
        m, shift = rq.quantize_multiplier(np.float64(x.s) / np.float64(y.s))
        k = min(n.bit_length() - 1, 32, 31 + shift)
        m2 = (m << k) // n
        return _out(np.clip(rq.multiply_by_quantized_multiplier(S, m2, shift - k) + y.zp, -128, 127))


@dataclass(frozen=True, eq=False)
class AddOp(TFLiteOp):
    """ADD of two same-shape int8 tensors (see the module docstring)."""

    lo: int = -128
    hi: int = 127

    def run(self, layer, inputs, seed=None, offset=0):
        a, b = _codes(inputs[0]), _codes(inputs[1])
        ta, tb = self.inputs
        y = self.output
        if self.kernels == "xnnpack":
            ra = np.float32(ta.s / y.s)
            rb = np.float32(tb.s / y.s)
            mx = max(abs(ra), abs(rb))
            exponent = int(np.float32(mx).view(np.uint32) >> np.uint32(23)) - 127
            shift = 20 - exponent
            if not (12 <= shift <= 30):  # pragma: no cover - the delegate rejects these; load_tflite checks
                raise ValueError(f"{self.describe()}: XNNPACK add scale ratio out of range")
            ma = int(np.rint(np.float32(math.ldexp(float(ra), shift))))
            mb = int(np.rint(np.float32(math.ldexp(float(rb), shift))))
            bias = (1 << (shift - 1)) - ma * ta.zp - mb * tb.zp
            acc = bias + a * ma + b * mb
            return _out(np.clip((acc >> shift) + y.zp, self.lo, self.hi))
        left = 20
        twice = 2.0 * float(max(ta.s, tb.s))
        ma, sa = rq.quantize_multiplier(float(ta.s) / twice)
        mb, sb = rq.quantize_multiplier(float(tb.s) / twice)
        mo, so = rq.quantize_multiplier(twice / ((1 << left) * float(y.s)))
        a2 = rq.multiply_by_quantized_multiplier_smaller_than_one_exp((a - ta.zp) << left, ma, sa)
        b2 = rq.multiply_by_quantized_multiplier_smaller_than_one_exp((b - tb.zp) << left, mb, sb)
        out = rq.multiply_by_quantized_multiplier_smaller_than_one_exp(a2 + b2, mo, so) + y.zp
        return _out(np.clip(out, self.lo, self.hi))


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


