"""TF-Lite int8 models in hwsim: import a ``.tflite`` file into the network IR and execute it bit for
bit as ``tf.lite.Interpreter`` does. (Float models go to :mod:`hwsim.frontends.tflite_float`.)

``load_tflite(path)`` returns a :class:`hwsim.graph.ir.Network` whose layers carry *quant records*
(``layer.quant``); ``hwsim.run(network, images)`` then returns exactly what the interpreter returns
(the dequantized float32 output for a float-output model, the int8 values otherwise).
``convert_keras(model, images, path)`` writes such a model from Keras (full-integer quantization).

Values between layers
---------------------
Every int8 tensor travels through ``hwsim.run`` as a float32 array holding its exact integer codes
``q`` (-128..127); its real value ``scale * (q - zero_point)`` is never formed. The scales and
zero points live in the quant records (:class:`TensorQ`), one per tensor, as in the ``.tflite``
file. Float tensors (the model's float input, the DEQUANTIZE output) are float32 values. So the
network input is what the interpreter's input tensor takes (float pixels for the zoo models) and
the IR keeps the TF-Lite graph: QUANTIZE and DEQUANTIZE become :class:`hwsim.graph.ir.Affine` layers,
CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED the MAC layers (their ``kernel`` holds the int8
weights, HWIO / (kh, kw, C, M) / (in, out), and ``bias`` the int32 biases), MAX/AVERAGE_POOL_2D
``Pool2D``, MEAN over H and W ``GlobalAvgPool2D``, ADD ``Add``, RESHAPE ``Reshape``, PAD
``ZeroPad2D`` (padded with the zero point).

Which arithmetic: ``kernels=``
------------------------------
The interpreter does not have one int8 arithmetic. With its default settings
(``tf.lite.Interpreter(path)``) the XNNPACK delegate executes every op it supports and TF-Lite's
built-in kernels the rest; ``OpResolverType.BUILTIN_REF`` runs TF-Lite's reference kernels. The two
requantize differently (about 0.1 % of conv outputs differ by one), so the emulator has both:

* ``kernels="xnnpack"`` (default; equals ``tf.lite.Interpreter(path)``): the ops of the XNNPACK
  partition use XNNPACK's arithmetic, the others TF-Lite's built-in kernels. Which ops XNNPACK takes
  is checked at load time against the partition the interpreter really makes.
* ``kernels="reference"`` (equals ``experimental_op_resolver_type=OpResolverType.BUILTIN_REF``):
  TF-Lite's reference kernels.

TF-Lite's own optimized built-in kernels without the delegate
(``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) are not emulated: on x86 some of them run NEON code through
NEON_2_SSE with other roundings (1x1 CONV_2D, DEPTHWISE_CONV_2D with depth multiplier > 1, MEAN with
keep_dims, DEQUANTIZE were measured to differ from both variants).

Per op (``acc`` is the exact int32 accumulator, ``zp``/``s`` zero points and scales, ``[lo, hi]`` the
int8 range intersected with the fused activation's; "round-even" is round half to even, "round-away"
half away from zero; ``f32(.)`` one float32 operation):

* MAC layers (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), both variants:
  ``acc = sum((x - zp_x) * w) + bias``, computed as TF-Lite's optimized kernels and XNNPACK do:
  the int8 input is padded with ``zp_x`` (not 0) and the int8 x int8 MACs run on the emulated MAC
  array (:mod:`kernels` with the ``int8_int32`` spec by default; products and int32 sums exact),
  then ``zp_x * sum(w)`` (per output channel, over the whole window) is subtracted and the bias
  added, in int64 (equal to TF-Lite's int32 sum; the wrap cannot trigger at these sizes).
  Requantization (the hardware's rescaling stage):

  - xnnpack: XNNPACK's "fp32" requantization, :func:`quant.requant.fp32_requantize`:
    ``y = clamp(round-even(f32(f32(acc) * scale)), lo - zp_y, hi - zp_y) + zp_y`` with the float32
    ``scale = f32(f32(s_x * s_w[c]) / s_y)`` per output channel;
  - reference: TF-Lite's fixed-point multiplier ``(m, shift) = QuantizeMultiplier(double(s_x) *
    double(s_w[c]) / double(s_y))`` and ``y = clamp(MultiplyByQuantizedMultiplier(acc, m, shift) +
    zp_y, lo, hi)`` (:mod:`quant.requant`) with double rounding for CONV_2D and DEPTHWISE_CONV_2D;
    FULLY_CONNECTED rounds the exact ``acc * m * 2**(shift - 31)`` once, ties away from zero -- both
    measured on the TF 2.21 interpreter (``tests/test_requant.py``).

* Activation bounds: reference ``lo = max(-128, zp_y)`` for RELU/RELU6 and
  ``hi = min(127, zp_y + round-away(f32(6 / s_y)))`` for RELU6 (``CalculateActivationRangeQuantized``);
  xnnpack ``round-even(clamp(f32(f32(v / s_y) + zp_y), -128, 127))`` for v = 0, 6 (``xnn_qs8_quantize``).
* QUANTIZE float32 -> int8: xnnpack ``clamp(round-even(f32(x * f32(1 / s)) ) + zp)``; reference
  ``clamp(round-away(f32(x / s)) + zp)``.
* DEQUANTIZE int8 -> float32: ``f32(float(q - zp) * s)`` (both).
* ADD (same shapes): xnnpack (``xnn_init_qs8_add_minmax_scalar_params`` / qs8-vadd):
  ``r_a = f32(s_a / s_y)``, ``r_b = f32(s_b / s_y)``, ``shift = 20 - exponent(max(r_a, r_b))``,
  ``m_a = round-even(r_a * 2**shift)``, ``m_b`` alike, ``y = clamp(((2**(shift-1) - m_a zp_a - m_b zp_b
  + m_a a + m_b b) >> shift) + zp_y, lo, hi)``. reference (``reference_integer_ops::Add``):
  ``left_shift = 20``, ``twice = 2 * max(s_a, s_b)``; the input multipliers ``s_a / twice``,
  ``s_b / twice`` and the output multiplier ``twice / (2**20 s_y)`` are quantized with
  ``QuantizeMultiplier`` (double); ``a' = MBQM((a - zp_a) * 2**20, m_a, shift_a)``, ``b'`` alike,
  ``y = clamp(MBQM(a' + b', m_y, shift_y) + zp_y, lo, hi)`` (double rounding).
* MEAN over H, W (GlobalAveragePooling2D), ``n = H * W``, ``S = sum(q) - zp_x * n``: xnnpack (qs8
  reduce): ``scale = f32(f32(s_x / s_y) * f32(1 / n))``,
  ``y = clamp(round-away(f32(f32(f32(S) * scale) + zp_y)))`` -- ties away from zero, unlike XNNPACK's
  conv requantization (measured with crafted power-of-two scale ratios, where ties are frequent).
  reference (``QuantizedMeanOrSum``): ``(m, shift) = QuantizeMultiplier(double(s_x) / double(s_y))``,
  ``k = min(floor(log2 n), 32, 31 + shift)``, ``m' = (m * 2**k) // n``,
  ``y = clamp(MBQM(S, m', shift - k) + zp_y)`` (also when input and output quantization are equal).
* AVERAGE_POOL_2D (not delegated to XNNPACK for int8; both variants): over the window's in-bounds
  cells (``count`` of them), ``y = clamp(round-away(sum(q) / count))`` computed as TF-Lite does,
  ``(sum + count/2) / count`` (C division) for positive sums, ``(sum - count/2) / count`` otherwise.
* MAX_POOL_2D: the maximum over the in-bounds cells, clamped to ``[lo, hi]``. RESHAPE, PAD: exact.
* SHAPE / STRIDED_SLICE / PACK / CONCATENATION / GATHER / SLICE on int32 tensors that only compute a
  RESHAPE's target shape (Keras' ``Flatten`` converted with a dynamic batch) are skipped: the RESHAPE
  takes its static output shape. Such a RESHAPE is not delegated to XNNPACK, which splits the
  delegate's partition (the emulator models that and checks it).

Any other op, or an op configuration outside these (dilated convolutions, broadcasting ADD, MEAN
over other axes, int16 activations, ...), raises ``ValueError`` naming it.

The MAC spec: ``load_tflite(path, mac=...)`` (default the ``int8_int32`` preset) is the MAC unit the
convolution and dense sums run on; the TF-Lite bit-exactness holds for ``int8_int32``. Another spec
(e.g. 6-bit operands, a float accumulator) emulates that hardware on the same int8 tensors: operands
are rounded into its formats by :mod:`kernels` and its sums replace the exact ones, the zero-point
correction, bias and requantization stay as above (so the result is that hardware under TF-Lite's
scheme, not something the interpreter can check). ``hwsim.run``'s own ``mac=`` argument does not
reach these layers.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwsim.graph import ir
from kernels.mac import MacSpec, as_spec
from kernels.ops import same_padding

from quant import requant as rq

__all__ = ["load_tflite", "convert_keras", "convert_keras_float", "SUPPORTED_OPS", "KERNELS", "TensorQ", "interpreter"]

KERNELS = ("xnnpack", "reference")

#: The TF-Lite builtin ops the importer maps (int8 activations, int8 weights, int32 biases).
SUPPORTED_OPS = ("QUANTIZE", "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                 "AVERAGE_POOL_2D", "MEAN", "ADD", "RESHAPE", "PAD")

# Ops the TF 2.21 XNNPACK delegate takes in a full-int8 model (AVERAGE_POOL_2D int8 stays on TF-Lite's
# kernel); checked against the interpreter's real partition in ``load_tflite``.
_XNNPACK_OPS = frozenset(SUPPORTED_OPS) - {"AVERAGE_POOL_2D"}

# Ops whose TF-Lite optimized built-in kernel (outside the delegate) computes what the emulator does.
_BUILTIN_EXACT = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "PAD"})

# int32 shape arithmetic that only feeds a RESHAPE's shape operand (skipped, see _shape_only_ops)
_SHAPE_OPS = frozenset({"SHAPE", "STRIDED_SLICE", "PACK", "CONCATENATION", "GATHER", "SLICE"})

_ACT = {0: "linear", 1: "relu", 3: "relu6"}
_ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def _quiet_tf():
    import warnings

    from quant.tfimport import tensorflow

    tf = tensorflow()

    warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
    warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated.*")
    return tf


def interpreter(model, kernels: str = "xnnpack", preserve_all_tensors: bool = False):
    """A ``tf.lite.Interpreter`` (tensors allocated) for ``model`` (a path or the bytes) running the
    arithmetic ``kernels`` names: "xnnpack" = the default interpreter, "reference" = ``BUILTIN_REF``,
    "builtin" = ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``. The oracle the tests compare against."""
    tf = _quiet_tf()
    R = tf.lite.experimental.OpResolverType
    kind = {"xnnpack": R.AUTO, "reference": R.BUILTIN_REF, "builtin": R.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if kernels not in kind:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(kind)}")
    content = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    it = tf.lite.Interpreter(model_content=bytes(content), experimental_op_resolver_type=kind[kernels],
                             experimental_preserve_all_tensors=preserve_all_tensors)
    it.allocate_tensors()
    return it


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
            pads = [same_padding(n, k, s, "same") for n, k, s in zip(x.shape[1:3], (kh, kw), layer.strides)]
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
        x = inputs[0]
        if not layer.spatial and np.ndim(x) > 2:  # FULLY_CONNECTED flattens its input
            x = np.reshape(x, (len(x), -1))
        return _out(self.requantize(self.accumulate(layer, x, seed=seed, offset=offset)))


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
    """PAD with the zero point (the code of real 0)."""

    def run(self, layer, inputs, seed=None, offset=0):
        (t, b), (le, r) = layer.padding
        return np.pad(np.asarray(inputs[0], dtype=np.float32), ((0, 0), (t, b), (le, r), (0, 0)),
                      constant_values=np.float32(self.output.zp))


@dataclass(frozen=True, eq=False)
class ReshapeOp(TFLiteOp):
    """RESHAPE (row-major, codes unchanged)."""

    def run(self, layer, inputs, seed=None, offset=0):
        x = np.asarray(inputs[0], dtype=np.float32)
        return x.reshape(len(x), *layer.target)


# ------------------------------------------------------------------------------------------------
# import
# ------------------------------------------------------------------------------------------------

def _read_model(path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TF-Lite model not found: {p}")
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{p}: not a TF-Lite model (no 'TFL3' flatbuffer identifier; {len(data)} bytes)")
    return data


def _open(data: bytes, where, kernels_: str):
    try:
        return interpreter(data, kernels_)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: corrupt or unreadable TF-Lite model: {str(e).strip()}") from None


def _tensor(d) -> TensorQ:
    qp = d["quantization_parameters"]
    return TensorQ(index=int(d["index"]), name=str(d["name"]), dtype=np.dtype(d["dtype"]).name,
                   shape=tuple(int(i) for i in d["shape"]), scale=np.asarray(qp["scales"], dtype=np.float32),
                   zero_point=np.asarray(qp["zero_points"], dtype=np.int64), axis=int(qp["quantized_dimension"]))


def _options(data: bytes, nops: int, where):
    """(builtin op name, options object) per operator of subgraph 0, from the flatbuffer schema."""
    _quiet_tf()
    from tensorflow.lite.python import schema_py_generated as S

    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    try:
        model = S.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() != 1:
            raise ValueError(f"{model.SubgraphsLength()} subgraphs (control flow); only single-graph models are supported")
        sub = model.Subgraphs(0)
        out = []
        for i in range(sub.OperatorsLength()):
            op = S.OperatorT.InitFromObj(sub.Operators(i))
            code = S.OperatorCodeT.InitFromObj(model.OperatorCodes(op.opcodeIndex))
            b = max(code.builtinCode, code.deprecatedBuiltinCode)
            out.append((names.get(b, f"BUILTIN_{b}"), op.builtinOptions))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    except Exception as e:  # a flatbuffer the interpreter accepted but the schema reader cannot walk
        raise ValueError(f"{where}: corrupt or unreadable TF-Lite model: {type(e).__name__}: {e}") from None
    if len(out) != nops:
        raise ValueError(f"{where}: the interpreter lists {nops} operators but the flatbuffer holds {len(out)}")
    return out


def _unsupported(where, index, name, why="", supported=SUPPORTED_OPS, what=""):
    """The error for operator ``index``: ``why`` it cannot be imported, or (no ``why``) the ``supported`` list."""
    if why:
        return ValueError(f"{where}: TF-Lite op {name} (operator #{index}) is not supported: {why}")
    return ValueError(f"{where}: TF-Lite op {name} (operator #{index}) is not supported{what}; supported ops: "
                      f"{', '.join(supported)}")


def _activation(opt, where, index, name):
    a = getattr(opt, "fusedActivationFunction", 0)
    if a not in _ACT:
        raise _unsupported(where, index, name, f"fused activation {_ACT_NAMES.get(a, a)} (supported: NONE, RELU, RELU6)")
    return _ACT[a]


def _padding(opt):
    _quiet_tf()
    from tensorflow.lite.python import schema_py_generated as S

    return "same" if opt.padding == S.Padding.SAME else "valid"


def _delegated_outputs(data: bytes, where) -> set[int] | None:
    """Tensor indices the XNNPACK delegate's partitions output in the default interpreter (None if
    nothing was delegated)."""
    it = _open(data, where, "xnnpack")
    outs: set[int] = set()
    found = False
    for op in it._get_ops_details():
        if op["op_name"] == "DELEGATE":
            found = True
            outs.update(int(t) for t in op["outputs"])
    return outs if found else None


def _shape_only_ops(ops, tensors) -> set[int]:
    """Operators that only compute a RESHAPE's target shape (SHAPE -> STRIDED_SLICE -> PACK ... on int32,
    what the converter emits for Keras' Flatten with a dynamic batch): every output is an int32 tensor
    read only as the shape operand of a RESHAPE or by another such operator. The emulator takes the
    RESHAPE's static output shape, so these are skipped."""
    consumers: dict[int, list[tuple[int, int]]] = {}
    for i, op in enumerate(ops):
        for pos, t in enumerate(op["inputs"]):
            consumers.setdefault(int(t), []).append((i, pos))
    skip: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i in range(len(ops) - 1, -1, -1):
            op = ops[i]
            if i in skip or op["op_name"] not in _SHAPE_OPS:
                continue
            outs = [int(t) for t in op["outputs"]]
            if all(np.dtype(tensors[t]["dtype"]) == np.int32 and consumers.get(t) and
                   all((ops[c]["op_name"] == "RESHAPE" and pos == 1) or c in skip for c, pos in consumers[t])
                   for t in outs):
                skip.add(i)
                changed = True
    return skip


def load_tflite(path, kernels: str = "xnnpack", mac="int8_int32") -> ir.Network:
    """Import the TF-Lite int8 model at ``path`` into a :class:`hwsim.graph.ir.Network` that
    :func:`hwsim.run` executes bit-exactly as ``tf.lite.Interpreter`` (``kernels="xnnpack"``, the
    interpreter's default) or its reference kernels (``kernels="reference"``); see the module
    docstring for the arithmetic of every op. ``mac``: the MAC spec for the conv/dense sums.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a corrupt file, an
    unsupported op (named) or configuration. Reading never writes anything.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}")
    mac = as_spec(mac)
    where = str(path)
    data = _read_model(path)
    it = _open(data, where, "builtin")
    ops = it._get_ops_details()
    opts = _options(data, len(ops), where)
    tensors = {int(d["index"]): d for d in it.get_tensor_details()}
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"{where}: {len(ins)} inputs and {len(outs)} outputs; hwsim runs single-input, single-output models")
    in_t, out_t = _tensor(ins[0]), _tensor(outs[0])
    if len(in_t.shape) < 2 or in_t.shape[0] != 1:
        raise ValueError(f"{where}: input shape {in_t.shape}: expected a batch dimension of 1 first")
    from . import tflite_float

    if tflite_float.is_float_model(ops, tensors):  # float32 / float16-weight models: plain IR, any MAC spec
        return tflite_float.load_float_tflite(where, it, ops, opts, tensors, _shape_only_ops(ops, tensors))

    def T(i) -> TensorQ:
        return _tensor(tensors[int(i)])

    def const(i) -> np.ndarray:
        try:
            return np.array(it.get_tensor(int(i)))
        except ValueError as e:
            raise ValueError(f"{where}: cannot read constant tensor {int(i)}: {e}") from None

    producer = {in_t.index: ir.INPUT}
    layers: list[ir.Layer] = []
    shape_only = _shape_only_ops(ops, tensors)
    produced = {int(t) for op in ops for t in op["outputs"]}
    delegated = [kernels == "xnnpack" and _xnnpack_takes(ops, i, produced, shape_only) for i in range(len(ops))]

    for i, (op, (oname, opt)) in enumerate(zip(ops, opts)):
        name = op["op_name"]
        if name != oname:
            raise ValueError(f"{where}: operator #{i} is {name} for the interpreter but {oname} in the flatbuffer")
        if i in shape_only:
            continue
        if name not in SUPPORTED_OPS:
            raise _unsupported(where, i, name)
        op_in = [int(t) for t in op["inputs"]]
        op_out = [int(t) for t in op["outputs"]]
        if len(op_out) != 1:
            raise _unsupported(where, i, name, f"{len(op_out)} outputs")
        y = T(op_out[0])
        x = T(op_in[0])
        src = producer.get(x.index)
        if src is None:
            raise _unsupported(where, i, name, f"input tensor {x.index} ({x.name}) is neither the model input nor produced by an op")
        lname = f"op{i:03d}_{name.lower()}"
        ekind = "reference" if kernels == "reference" else ("xnnpack" if delegated[i] else "builtin")
        if ekind == "builtin" and name not in _BUILTIN_EXACT:
            raise _unsupported(where, i, name, "it would run outside the XNNPACK delegate on TF-Lite's optimized "
                               "built-in kernel, whose arithmetic is not emulated")

        def check_int8(*ts):
            for t in ts:
                if t.dtype != "int8" or t.scale.size != 1:
                    raise _unsupported(where, i, name, f"tensor {t.name!r} is {t.dtype} with {t.scale.size} scales "
                                       "(int8 per-tensor activations expected)")

        if y.shape[0] != 1:
            raise _unsupported(where, i, name, f"output shape {y.shape} does not keep the batch dimension first")

        if name == "QUANTIZE":
            if x.dtype != "float32":
                raise _unsupported(where, i, name, f"{x.dtype} -> {y.dtype} requantization (only float32 -> int8)")
            check_int8(y)
            layer = ir.Affine(lname, (src,), quant=QuantizeOp(name, i, ekind, (x,), y))
        elif name == "DEQUANTIZE":
            check_int8(x)
            if y.dtype != "float32":
                raise _unsupported(where, i, name, f"output type {y.dtype}")
            layer = ir.Affine(lname, (src,), quant=DequantizeOp(name, i, ekind, (x,), y))
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            check_int8(x, y)
            act = _activation(opt, where, i, name)
            w_t = T(op_in[1])
            if w_t.dtype != "int8":
                raise _unsupported(where, i, name, f"{w_t.dtype} weights (int8 expected)")
            if np.any(w_t.zero_point != 0):
                raise _unsupported(where, i, name, "weights with nonzero zero points")
            w = const(op_in[1]).astype(np.int64)
            nout = w.shape[0] if name != "DEPTHWISE_CONV_2D" else w.shape[3]
            bias_idx = op_in[2] if len(op_in) > 2 else -1
            if bias_idx >= 0:
                b_t = T(bias_idx)
                if b_t.dtype != "int32":
                    raise _unsupported(where, i, name, f"{b_t.dtype} bias (int32 expected)")
                bias = const(bias_idx).astype(np.int64).reshape(-1)
            else:
                bias = np.zeros(nout, np.int64)
            sw = w_t.scale.astype(np.float32)
            if sw.size not in (1, nout):
                raise _unsupported(where, i, name, f"{sw.size} weight scales for {nout} output channels")
            sw = np.broadcast_to(sw, (nout,)).copy()
            fkw = dict(round_away=(name == "FULLY_CONNECTED" and ekind == "reference"))
            if ekind == "xnnpack":
                fkw["scale32"] = ((x.s * sw).astype(np.float32) / y.s).astype(np.float32)
            else:
                real = np.float64(x.s) * sw.astype(np.float64) / np.float64(y.s)
                fkw["multiplier"], fkw["shift"] = rq.quantize_multiplier(real)
            lo, hi = _act_bounds(act, y, "xnnpack" if ekind == "xnnpack" else "reference")
            if name == "FULLY_CONNECTED":
                if getattr(opt, "keepNumDims", False) and len(x.shape) > 2:
                    raise _unsupported(where, i, name, "keep_num_dims with a multi-dimensional input")
                if getattr(opt, "weightsFormat", 0) != 0:
                    raise _unsupported(where, i, name, "shuffled weights format")
                kernel = w.T.astype(np.float32)  # (in, out)
                if int(np.prod(x.shape[1:])) != kernel.shape[0] or len(y.shape) != 2:
                    raise _unsupported(where, i, name, f"input {x.shape} / output {y.shape} for weights {w.shape}")
                if len(x.shape) > 2:  # TF-Lite flattens the input to (-1, in)
                    rname = lname + "_flatten"
                    layers.append(ir.Reshape(rname, (src,), target=(-1,)))
                    src = rname
                colsum = w.sum(axis=1)
                make = lambda q: ir.Dense(lname, (src,), kernel=kernel, bias=bias.astype(np.float64),  # noqa: E731
                                          activation=act, quant=q)
            else:
                if (opt.dilationHFactor, opt.dilationWFactor) != (1, 1):
                    raise _unsupported(where, i, name, f"dilation {opt.dilationHFactor}x{opt.dilationWFactor}")
                if name == "CONV_2D":
                    kernel = np.transpose(w, (1, 2, 3, 0)).astype(np.float32)  # OHWI -> HWIO
                    if kernel.shape[2] != x.shape[3]:
                        raise _unsupported(where, i, name, f"grouped convolution (input {x.shape[3]} channels, "
                                           f"filter {kernel.shape[2]})")
                    colsum = w.sum(axis=(1, 2, 3))
                    cls = ir.Conv2D
                else:
                    C = x.shape[3]
                    if nout % C:
                        raise _unsupported(where, i, name, f"{nout} output channels for {C} input channels")
                    kernel = w.reshape(w.shape[1], w.shape[2], C, nout // C).astype(np.float32)
                    colsum = w.sum(axis=(0, 1, 2))
                    cls = ir.DepthwiseConv2D
                make = lambda q: cls(lname, (src,), kernel=kernel, bias=bias.astype(np.float64),  # noqa: E731
                                     strides=(opt.strideH, opt.strideW), padding=_padding(opt), activation=act, quant=q)
            layer = make(MacOp(name, i, ekind, (x, w_t), y, mac=mac, colsum=colsum.astype(np.int64), bias=bias,
                               lo=lo, hi=hi, **fkw))
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            check_int8(x, y)
            if not x.same_quant(y):
                raise _unsupported(where, i, name, "input and output quantization differ")
            act = _activation(opt, where, i, name)
            lo, hi = _act_bounds(act, y, "reference")
            layer = ir.Pool2D(lname, (src,), op="max" if name == "MAX_POOL_2D" else "avg",
                              pool_size=(opt.filterHeight, opt.filterWidth), strides=(opt.strideH, opt.strideW),
                              padding=_padding(opt), quant=PoolOp(name, i, ekind, (x,), y, lo=lo, hi=hi))
        elif name == "MEAN":
            check_int8(x, y)
            axes = sorted(int(a) % len(x.shape) for a in const(op_in[1]).reshape(-1))
            if len(x.shape) != 4 or axes != [1, 2]:
                raise _unsupported(where, i, name, f"mean over axes {axes} of a {len(x.shape)}-D tensor "
                                   "(only over H and W of NHWC)")
            layer = ir.GlobalAvgPool2D(lname, (src,), keepdims=bool(opt.keepDims),
                                       quant=MeanOp(name, i, ekind, (x,), y))
        elif name == "ADD":
            b_t = T(op_in[1])
            check_int8(x, b_t, y)
            if x.shape != b_t.shape:
                raise _unsupported(where, i, name, f"broadcasting {x.shape} + {b_t.shape}")
            src2 = producer.get(b_t.index)
            if src2 is None:
                raise _unsupported(where, i, name, "a constant operand")
            act = _activation(opt, where, i, name)
            lo, hi = _act_bounds(act, y, "xnnpack" if ekind == "xnnpack" else "reference")
            layer = ir.Add(lname, (src, src2), activation="linear",
                           quant=AddOp(name, i, ekind, (x, b_t), y, lo=lo, hi=hi))
        elif name == "RESHAPE":
            if x.dtype != y.dtype or (x.dtype == "int8" and not x.same_quant(y)):
                raise _unsupported(where, i, name, "a change of type or quantization")
            layer = ir.Reshape(lname, (src,), target=tuple(y.shape[1:]), quant=ReshapeOp(name, i, ekind, (x,), y))
        elif name == "PAD":
            check_int8(x, y)
            if not x.same_quant(y) or len(x.shape) != 4:
                raise _unsupported(where, i, name, "only 4-D int8 PAD with equal input/output quantization")
            p = const(op_in[1]).astype(np.int64).reshape(-1, 2)
            if p.shape[0] != 4 or np.any(p[[0, 3]] != 0) or np.any(p < 0):
                raise _unsupported(where, i, name, f"paddings {p.tolist()} (only non-negative H and W padding)")
            layer = ir.ZeroPad2D(lname, (src,), padding=((int(p[1, 0]), int(p[1, 1])), (int(p[2, 0]), int(p[2, 1]))),
                                 quant=PadOp(name, i, ekind, (x,), y))
        else:  # pragma: no cover - SUPPORTED_OPS is exhaustive above
            raise _unsupported(where, i, name)
        layers.append(layer)
        producer[y.index] = lname

    if out_t.index not in producer:
        raise ValueError(f"{where}: the output tensor {out_t.index} is not produced by any op")
    net = ir.Network(name=Path(path).stem, input_shape=in_t.shape[1:], layers=layers, output=producer[out_t.index],
                     meta={"source": str(path), "format": "tflite", "kernels": kernels, "mac": mac.name,
                           "input_dtype": in_t.dtype, "output_dtype": out_t.dtype,
                           "input_quant": (float(in_t.scale[0]), int(in_t.zero_point[0])) if in_t.scale.size else None,
                           "output_quant": (float(out_t.scale[0]), int(out_t.zero_point[0])) if out_t.scale.size else None})
    shapes = net.shapes
    for layer in net.layers:
        q = layer.quant
        if isinstance(q, TFLiteOp) and tuple(q.output.shape[1:]) != tuple(shapes[layer.name]):
            raise _unsupported(where, q.index, q.op, f"output shape {q.output.shape[1:]} but the IR computes "
                               f"{shapes[layer.name]}")
    if kernels == "xnnpack":
        _check_partition(data, ops, delegated, out_t.index, where)
    return net


def _xnnpack_takes(ops, i: int, produced: set[int], shape_only: set[int]) -> bool:
    """Whether the TF 2.21 XNNPACK delegate runs operator ``i`` (of a model ``load_tflite`` accepts):
    the ops of ``_XNNPACK_OPS``, except a RESHAPE whose shape operand is computed at run time."""
    name = ops[i]["op_name"]
    if i in shape_only or name not in _XNNPACK_OPS:
        return False
    if name == "RESHAPE" and len(ops[i]["inputs"]) > 1 and int(ops[i]["inputs"][1]) in produced:
        return False
    return True


def _check_partition(data: bytes, ops, delegated: list[bool], graph_out: int, where):
    """The emulator assumes XNNPACK runs exactly the operators marked ``delegated``: compare the tensors
    its partitions would output with the ones the interpreter's DELEGATE nodes do output."""
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            consumers.setdefault(int(t), []).append(i)
    predicted = set()
    for i, op in enumerate(ops):
        if not delegated[i]:
            continue
        for t in (int(t) for t in op["outputs"]):
            if t == graph_out or any(not delegated[c] for c in consumers.get(t, [])):
                predicted.add(t)
    actual = _delegated_outputs(data, where) or set()
    if predicted != actual:
        raise ValueError(f"{where}: the XNNPACK delegate partitions this model differently than the emulator assumes "
                         f"(partition outputs: interpreter {sorted(actual)}, emulator {sorted(predicted)}); "
                         "use kernels='reference' and compare with the BUILTIN_REF interpreter")


# ------------------------------------------------------------------------------------------------
# Keras -> TF-Lite
# ------------------------------------------------------------------------------------------------

def convert_keras(model, representative_images, path, *, per_channel_dense: bool = True) -> Path:
    """Full-integer quantization of a Keras ``model`` with ``tf.lite.TFLiteConverter``: int8 weights
    (per channel) and activations calibrated on ``representative_images`` (an array, one sample per
    row, fed as float32 batches of one), int8-only builtin ops, float32 input and output (a QUANTIZE
    first, a DEQUANTIZE last). Writes the model to ``path`` atomically (a temporary file in the same
    folder, renamed) and returns the path; on failure nothing is written."""
    tf = _quiet_tf()
    images = np.asarray(representative_images)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"representative_images must be a non-empty array of samples, got shape {images.shape}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([images[i:i + 1].astype(np.float32)] for i in range(len(images)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.float32
    conv.inference_output_type = tf.float32
    if not per_channel_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return _write_atomic(conv.convert(), path)


def convert_keras_float(model, path, *, float16: bool = False) -> Path:
    """A float TF-Lite model of the Keras ``model`` (``tf.lite.TFLiteConverter`` defaults; ``float16``:
    float16 weights, dequantized at run time), written to ``path`` atomically; returns the path."""
    tf = _quiet_tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    return _write_atomic(conv.convert(), path)


def _write_atomic(content: bytes, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(source, **options) -> ir.Network:
    """The frontend entry point (:mod:`hwsim.frontends`): :func:`load_tflite` (options ``kernels``, ``mac``)."""
    from . import check_options

    check_options(options, "TF-Lite", ("kernels", "mac"))
    return load_tflite(source, **options)
