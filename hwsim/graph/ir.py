"""The network IR and its op registry: what the frontends produce and what the runner, the quantizer and the
cost model consume.

A :class:`Network` is an immutable list of layers in topological order. Every layer names its
producers in ``inputs`` (the network's input is called ``"input"``). Tensors are NHWC (or NC after
Flatten/Dense) with the batch dimension left out of every shape recorded here.

Only the operations the emulated MAC array executes carry weights (:class:`Conv2D`,
:class:`DepthwiseConv2D`, :class:`Dense`); batch normalisation is folded into them by the importer,
and activations are fused into the producing layer where Keras had them there. The remaining layers
(pooling, reshapes, padding, rescaling, residual adds) are computed by the runner in float32 on the
dequantized values, exactly as written in each class's docstring.

**The op registry.** Each op is one class here (:data:`OPS` maps ``kind`` to it) that states
everything the rest of hwsim asks of it:

* its attributes (dataclass fields, validated) and ``output_shape(in_shapes)``;
* ``run(ins, spec, seed, offset)``: its execution on a batch: float32 numpy for the non-MAC ops, the
  emulated MAC array (:mod:`kernels`, with the layer's MAC spec) for the MAC ops;
* ``quant_rule``: what :func:`quant.quantize_model` does with it: ``"mac"`` (quantized operands, a
  MAC spec), ``"same"`` (the output only moves or selects input values, so it keeps the input's
  quantization) or ``"float"`` (computed on dequantized values);
* for MAC ops, ``gemm_dims(in_shape, out_shape)``: the layer as a matrix product, which the cost
  model (:func:`hwsim.cycles.layer_gemm`) maps onto the array.

Adding an op means adding one class here and listing it in :data:`OPS`; a frontend then produces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

import kernels
from kernels.elementwise import ACTIVATIONS, activate, bias_activate

INPUT = "input"


def _check_activation(name: str, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"layer {name!r}: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return t


def conv_output_hw(h: int, w: int, kh: int, kw: int, strides, padding: str) -> tuple[int, int]:
    """Output height and width of a 2-D window op, with Keras/TensorFlow's 'valid'/'same' rules."""
    sh, sw = _pair(strides)
    if padding == "same":
        return (math.ceil(h / sh), math.ceil(w / sw))
    if padding == "valid":
        return ((h - kh) // sh + 1, (w - kw) // sw + 1)
    raise ValueError(f"unknown padding {padding!r}; valid: 'valid', 'same'")


@dataclass(frozen=True, eq=False)
class Layer:
    """Base class. ``name`` is unique in the network; ``inputs`` are producer layer names."""

    name: str
    inputs: tuple[str, ...]
    #: Set by :mod:`quant`: an object with ``run(layer, inputs, seed, offset)`` that executes this layer
    #: on integer / scaled hardware (scales, zero points, requantization) instead of the default rule.
    quant: object = field(default=None, kw_only=True)

    kind = "layer"
    #: True for the layers the MAC array computes (they carry a kernel and take a MAC spec).
    is_mac = False
    #: what the quantizer does with the layer (module docstring): "mac", "same" or "float"
    quant_rule = "float"

    def output_shape(self, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError

    def run(self, ins: list[np.ndarray], spec=None, seed=None, offset: int = 0) -> np.ndarray:  # pragma: no cover
        """The layer on a batch: ``ins`` are its inputs (batch first); ``spec``/``seed``/``offset`` are used
        by MAC layers only (``offset``: index of the batch's first image in the whole run)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class MacLayer(Layer):
    """Base of the layers the MAC array computes: ``activation(mac(x, kernel) + bias)``."""

    kernel: np.ndarray = None
    bias: np.ndarray | None = None
    activation: str = "linear"

    is_mac = True
    quant_rule = "mac"
    #: True for the convolutions (an NHWC input, ``strides`` and ``padding``); False for Dense
    spatial = False
    #: True when the cost model maps the layer one input channel at a time (depthwise)
    per_channel = False

    @property
    def out_channels(self) -> int:
        """Output channels (the length of ``bias``)."""
        return int(self.kernel.shape[-1])

    def per_output_channel(self, v):
        """A per-output-channel vector shaped to broadcast against ``kernel``."""
        return np.asarray(v)

    def kernel_by_output_channel(self, w):
        """``w`` (shaped like ``kernel``) with the output channels on the last axis."""
        return w

    def mac(self, x, kernel, spec, seed=None, offset: int = 0, padding=None):  # pragma: no cover
        """The products and sums of the layer on the emulated array (no bias, no activation), as a new array
        (:meth:`run` adds the bias in place); ``offset`` is the stochastic-rounding counter of the batch's first
        output; ``padding`` overrides the layer's (spatial layers only)."""
        raise NotImplementedError

    def gemm_dims(self, in_shape, out_shape) -> dict:  # pragma: no cover
        """The layer as a matrix product, :class:`hwsim.cycles.GemmShape`'s fields."""
        raise NotImplementedError

    def run(self, ins, spec=None, seed=None, offset: int = 0):
        """``activation(mac + bias)``: the kernels' stochastic counters are offset by ``offset`` images'
        outputs; bias and activation in the MAC output's precision."""
        x = ins[0]
        per_image = int(np.prod(self.output_shape([x.shape[1:]])))
        y = self.mac(x, self.kernel, spec, seed=seed, offset=offset * per_image)
        return bias_activate(y, self.bias, self.activation)  # in place: mac returns a new array


@dataclass(frozen=True, eq=False)
class Conv2D(MacLayer):
    """2-D convolution (cross-correlation, as Keras): ``kernel`` is HWIO, ``bias`` has length O or is None.

    Output = activation(conv(x, kernel) + bias). ``dilation`` spaces the kernel taps (the MAC sees only
    the real taps: the emulated sum runs over the kernel dilated with zeros, whose zero products leave
    every rounded sum unchanged). ``groups`` splits the input channels (``I = C / groups`` per group)
    and the filters into ``groups`` independent convolutions, concatenated; group ``g`` > 0 draws its
    stochastic rounding from the seed mixed with ``g``, and each group counts its own outputs (O / groups
    per pixel: the batch's first counter is ``offset / groups``, so results do not depend on where a batch
    starts). The cost model maps each group as a sub-layer.
    """

    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    kind = "conv2d"
    spatial = True

    def mac(self, x, kernel, spec, seed=None, offset: int = 0, padding=None):
        k = _dilate(kernel, self.dilation)
        if self.groups == 1:
            return kernels.conv2d(x, k, spec, stride=self.strides, padding=padding or self.padding, seed=seed,
                                  offset=offset)
        ci, co = k.shape[2], k.shape[3] // self.groups
        outs = [kernels.conv2d(np.ascontiguousarray(x[..., g * ci:(g + 1) * ci]),
                               np.ascontiguousarray(k[..., g * co:(g + 1) * co]), spec, stride=self.strides,
                               padding=padding or self.padding, seed=_group_seed(seed, g),
                               offset=offset // self.groups)
                for g in range(self.groups)]
        return np.concatenate(outs, axis=-1)

    def gemm_dims(self, in_shape, out_shape):
        kh, kw, ci, co = self.kernel.shape
        (h, w, _), (ho, wo, _) = in_shape, out_shape
        g = self.groups
        return dict(pixels=ho * wo, window=kh * kw * ci, filters=co // g, repeats=g, in_elems=h * w * ci,
                    out_elems=ho * wo * co // g, weight_elems=kh * kw * ci * co // g, bias_elems=_size(self.bias) // g,
                    fh=kh, fw=kw, cin=ci, in_hw=(h, w), out_hw=(ho, wo), strides=tuple(self.strides),
                    dilation=tuple(self.dilation))

    def __post_init__(self):
        object.__setattr__(self, "strides", _pair(self.strides))
        object.__setattr__(self, "dilation", _pair(self.dilation))
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 4:
            raise ValueError(f"layer {self.name!r}: Conv2D kernel must be 4-D HWIO, got shape {np.shape(self.kernel)}")
        if min(self.dilation) < 1:
            raise ValueError(f"layer {self.name!r}: dilation must be >= 1, got {self.dilation}")
        if not isinstance(self.groups, int) or self.groups < 1 or self.kernel.shape[3] % self.groups:
            raise ValueError(f"layer {self.name!r}: groups={self.groups!r} must be a positive integer dividing the "
                             f"{self.kernel.shape[3]} filters")

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        kh, kw, ci, co = self.kernel.shape
        if c != ci * self.groups:
            raise ValueError(f"layer {self.name!r}: input has {c} channels, kernel expects {ci} x {self.groups} groups")
        return (*conv_output_hw(h, w, *_extent(kh, kw, self.dilation), self.strides, self.padding), co)


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(MacLayer):
    """Depthwise convolution: ``kernel`` has Keras' shape (kh, kw, C, depth_multiplier).

    Output channel ``c * depth_multiplier + m`` is input channel ``c`` convolved with ``kernel[:, :, c, m]``.
    The cost model maps it per channel (``repeats = C`` sub-layers of one input channel), as SCALE-Sim does.
    """

    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    dilation: tuple[int, int] = (1, 1)

    kind = "depthwise"
    spatial = True
    per_channel = True

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[2] * self.kernel.shape[3])

    def per_output_channel(self, v):
        return np.asarray(v).reshape(self.kernel.shape[2], self.kernel.shape[3])

    def kernel_by_output_channel(self, w):
        return w.reshape(*w.shape[:2], -1)

    def mac(self, x, kernel, spec, seed=None, offset: int = 0, padding=None):
        return kernels.depthwise_conv2d(x, _dilate(kernel, self.dilation), spec, stride=self.strides,
                                        padding=padding or self.padding, seed=seed, offset=offset)

    def gemm_dims(self, in_shape, out_shape):
        kh, kw, c, m = self.kernel.shape
        (h, w, _), (ho, wo, _) = in_shape, out_shape
        bias = _size(self.bias)
        return dict(pixels=ho * wo, window=kh * kw, filters=m, repeats=c, in_elems=h * w, out_elems=ho * wo * m,
                    weight_elems=kh * kw * m, bias_elems=bias // c if bias else 0, fh=kh, fw=kw, cin=1,
                    in_hw=(h, w), out_hw=(ho, wo), strides=tuple(self.strides), dilation=tuple(self.dilation))

    def __post_init__(self):
        object.__setattr__(self, "strides", _pair(self.strides))
        object.__setattr__(self, "dilation", _pair(self.dilation))
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 4:
            raise ValueError(f"layer {self.name!r}: DepthwiseConv2D kernel must be 4-D, got shape {np.shape(self.kernel)}")
        if min(self.dilation) < 1:
            raise ValueError(f"layer {self.name!r}: dilation must be >= 1, got {self.dilation}")

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        kh, kw, ci, m = self.kernel.shape
        if c != ci:
            raise ValueError(f"layer {self.name!r}: input has {c} channels, kernel expects {ci}")
        return (*conv_output_hw(h, w, *_extent(kh, kw, self.dilation), self.strides, self.padding), c * m)


@dataclass(frozen=True, eq=False)
class Dense(MacLayer):
    """Fully connected: ``kernel`` is (in, out). Output = activation(x @ kernel + bias), over the last axis
    (an input of more dimensions is a batch of positions)."""

    kind = "dense"

    def mac(self, x, kernel, spec, seed=None, offset: int = 0, padding=None):
        lead = x.shape[:-1]
        y = kernels.matmul(x.reshape(-1, x.shape[-1]), kernel, spec, seed=seed, offset=offset)
        return y.reshape(*lead, kernel.shape[1])

    def gemm_dims(self, in_shape, out_shape):
        n_in, n_out = self.kernel.shape
        positions = math.prod(in_shape[:-1]) if len(in_shape) > 1 else 1
        return dict(pixels=positions, window=n_in, filters=n_out, repeats=1, in_elems=positions * n_in,
                    out_elems=positions * n_out, weight_elems=n_in * n_out, bias_elems=_size(self.bias), fh=1, fw=1,
                    cin=n_in, in_hw=(positions, 1), out_hw=(positions, 1))

    def __post_init__(self):
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 2:
            raise ValueError(f"layer {self.name!r}: Dense kernel must be 2-D (in, out), got shape {np.shape(self.kernel)}")

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        if shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"layer {self.name!r}: input has {shape[-1]} features, kernel expects {self.kernel.shape[0]}")
        return (*shape[:-1], self.kernel.shape[1])


def transpose_padding(out_size: int, k: int, s: int, padding: str) -> int:
    """The leading (top / left) padding of a transposed convolution producing ``out_size`` (TF-Lite's
    ``ComputePaddingHeightWidth`` on the output size, ``tensorflow/lite/kernels/padding.h``):
    ``o = ceil(out / s)`` ("same") or ``(out + s - k) // s`` ("valid"), ``total = max((o - 1) s + k - out,
    0)``, leading ``total // 2`` (the odd unit goes to the bottom / right)."""
    o = -(-out_size // s) if padding == "same" else (out_size + s - k) // s
    return max((o - 1) * s + k - out_size, 0) // 2


@dataclass(frozen=True, eq=False)
class Conv2DTranspose(MacLayer):
    """Transposed convolution (Keras' ``Conv2DTranspose``, TF-Lite's TRANSPOSE_CONV): ``kernel`` is
    (kh, kw, C_in, C_out). Input pixel (iy, ix) adds ``x[iy, ix] @ kernel[ky, kx]`` to output pixel
    ``(iy * sh - pad_t + ky, ix * sw - pad_l + kx)`` where that lies inside the ``size`` = (OH, OW)
    output (default ``in * s`` for "same", ``(in - 1) * s + k`` for "valid"); ``pad_t, pad_l`` are
    ``pad_begin`` (ONNX's explicit pads) or else from :func:`transpose_padding`.

    On the MAC array it is the convolution (stride 1, "valid") of the input spread out with ``s - 1``
    filler cells between pixels and ``k - 1 - pad`` around, with the spatially flipped kernel; the filler
    is 0 (``fill`` overrides it), whose products leave every rounded sum unchanged. The cost model maps
    it as a GEMM of the input pixels by ``kh * kw * C_out`` columns (col2im), i.e. the real MACs only.
    """

    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    size: tuple[int, int] | None = None
    #: explicit leading (top, left) padding (ONNX ``pads``), instead of the one ``padding`` implies
    pad_begin: tuple[int, int] | None = None

    kind = "conv2d_transpose"
    spatial = True

    def __post_init__(self):
        object.__setattr__(self, "strides", _pair(self.strides))
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 4:
            raise ValueError(f"layer {self.name!r}: Conv2DTranspose kernel must be 4-D (kh, kw, C_in, C_out), got "
                             f"shape {np.shape(self.kernel)}")
        if self.padding not in ("same", "valid"):
            raise ValueError(f"layer {self.name!r}: padding {self.padding!r}; valid: 'same', 'valid'")
        if self.size is not None:
            object.__setattr__(self, "size", _pair(self.size))
        if self.pad_begin is not None:
            object.__setattr__(self, "pad_begin", tuple(int(v) for v in self.pad_begin))
            if self.size is None or min(self.pad_begin) < 0:
                raise ValueError(f"layer {self.name!r}: pad_begin {self.pad_begin} needs an explicit size and "
                                 "non-negative values")

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        kh, kw = self.kernel.shape[:2]
        sh, sw = self.strides
        if self.padding == "same":
            return (h * sh, w * sw)
        return ((h - 1) * sh + kh, (w - 1) * sw + kw)

    def spread(self, x, fill=0.0):
        """The input as the stride-1 convolution sees it: pixels ``s`` apart, ``fill`` between and around."""
        n, h, w, c = x.shape
        kh, kw = self.kernel.shape[:2]
        (sh, sw), (oh, ow) = self.strides, self.out_hw(h, w)
        if self.pad_begin is not None:
            top, left = kh - 1 - self.pad_begin[0], kw - 1 - self.pad_begin[1]
        else:
            top = kh - 1 - transpose_padding(oh, kh, sh, self.padding)
            left = kw - 1 - transpose_padding(ow, kw, sw, self.padding)
        hs, ws = oh + kh - 1, ow + kw - 1
        canvas = np.full((n, hs + max(0, -top), ws + max(0, -left), c), fill, dtype=x.dtype)
        t0, l0 = max(top, 0), max(left, 0)
        rows = [t0 + i * sh for i in range(h) if t0 + i * sh < canvas.shape[1]]
        cols = [l0 + j * sw for j in range(w) if l0 + j * sw < canvas.shape[2]]
        canvas[:, rows[0]:rows[-1] + 1:sh, cols[0]:cols[-1] + 1:sw, :] = x[:, :len(rows), :len(cols), :]
        return np.ascontiguousarray(canvas[:, max(0, -top):max(0, -top) + hs, max(0, -left):max(0, -left) + ws, :])

    def mac(self, x, kernel, spec, seed=None, offset: int = 0, padding=None, fill=0.0):
        flipped = np.ascontiguousarray(kernel[::-1, ::-1])
        return kernels.conv2d(self.spread(x, fill), flipped, spec, stride=(1, 1), padding="valid", seed=seed,
                              offset=offset)

    def gemm_dims(self, in_shape, out_shape):
        kh, kw, ci, co = self.kernel.shape
        (h, w, _), (ho, wo, _) = in_shape, out_shape
        return dict(pixels=h * w, window=ci, filters=kh * kw * co, repeats=1, in_elems=h * w * ci,
                    out_elems=ho * wo * co, weight_elems=kh * kw * ci * co, bias_elems=_size(self.bias), fh=1, fw=1,
                    cin=ci, in_hw=(h, w), out_hw=(h, w))

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        kh, kw, ci, co = self.kernel.shape
        if c != ci:
            raise ValueError(f"layer {self.name!r}: input has {c} channels, kernel expects {ci}")
        return (*self.out_hw(h, w), co)


@dataclass(frozen=True, eq=False)
class Pool2D(Layer):
    """Max or average pooling. ``padding``: ``"valid"``, ``"same"`` (TensorFlow's rule) or explicit
    ``((top, bottom), (left, right))``. Padded cells never win a max; average pooling averages over the
    input cells only (Keras, and ONNX's ``count_include_pad=0``), or with ``count_pad`` over the
    padded window too (ONNX's ``count_include_pad=1``)."""

    op: str = "max"  # "max" | "avg"
    pool_size: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    padding: str | tuple = "valid"
    count_pad: bool = False

    kind = "pool"

    @property
    def quant_rule(self):
        return "same" if self.op == "max" else "float"

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        n, H, W, C = x.shape
        kh, kw = self.pool_size
        sh, sw = self.strides
        OH, OW = self.output_shape([(H, W, C)])[:2]
        if not isinstance(self.padding, str):
            (pt, pb), (pl, pr) = self.padding
        elif self.padding == "same":
            pt = max((OH - 1) * sh + kh - H, 0) // 2
            pl = max((OW - 1) * sw + kw - W, 0) // 2
            pb = max((OH - 1) * sh + kh - H, 0) - pt
            pr = max((OW - 1) * sw + kw - W, 0) - pl
        else:
            pt = pl = pb = pr = 0
        fill = -np.inf if self.op == "max" else 0.0
        xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill) if pt or pb or pl or pr else x
        if self.op == "avg":
            ones = np.pad(np.ones((1, H, W, 1), x.dtype), ((0, 0), (pt, pb), (pl, pr), (0, 0)),
                          constant_values=1 if self.count_pad else 0)
        out = cnt = None
        for dh in range(kh):
            for dw in range(kw):
                sl = xp[:, dh:dh + (OH - 1) * sh + 1:sh, dw:dw + (OW - 1) * sw + 1:sw, :]
                if self.op == "max":
                    out = sl.copy() if out is None else np.maximum(out, sl, out=out)
                else:
                    c = ones[:, dh:dh + (OH - 1) * sh + 1:sh, dw:dw + (OW - 1) * sw + 1:sw, :]
                    out = sl.astype(x.dtype) if out is None else out + sl
                    cnt = c.copy() if cnt is None else cnt + c
        return out / cnt if self.op == "avg" else out

    def __post_init__(self):
        object.__setattr__(self, "pool_size", _pair(self.pool_size))
        object.__setattr__(self, "strides", _pair(self.strides))
        if self.op not in ("max", "avg"):
            raise ValueError(f"layer {self.name!r}: pooling op must be 'max' or 'avg', got {self.op!r}")
        if not isinstance(self.padding, str):
            pads = tuple(tuple(int(v) for v in p) for p in self.padding)
            if len(pads) != 2 or any(len(p) != 2 or min(p) < 0 for p in pads):
                raise ValueError(f"layer {self.name!r}: explicit padding must be ((top, bottom), (left, right)) of "
                                 f"non-negative ints, got {self.padding!r}")
            object.__setattr__(self, "padding", pads)

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        if isinstance(self.padding, str):
            return (*conv_output_hw(h, w, *self.pool_size, self.strides, self.padding), c)
        (pt, pb), (pl, pr) = self.padding
        return (*conv_output_hw(h + pt + pb, w + pl + pr, *self.pool_size, self.strides, "valid"), c)


@dataclass(frozen=True, eq=False)
class GlobalAvgPool2D(Layer):
    """Mean over H and W: (H, W, C) -> (C,) (or (1, 1, C) with ``keepdims``)."""

    keepdims: bool = False
    kind = "global_avg_pool"

    def run(self, ins, spec=None, seed=None, offset=0):
        """The mean accumulated in float64, returned in the input's dtype."""
        return ins[0].mean(axis=(1, 2), keepdims=self.keepdims, dtype=np.float64).astype(ins[0].dtype)

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        return (1, 1, c) if self.keepdims else (c,)


@dataclass(frozen=True, eq=False)
class Reshape(Layer):
    """Row-major reshape (Flatten is ``target=(-1,)``)."""

    target: tuple[int, ...] = (-1,)
    kind = "reshape"
    quant_rule = "same"

    def run(self, ins, spec=None, seed=None, offset=0):
        return ins[0].reshape(ins[0].shape[0], *self.target)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return tuple(np.empty(shape, dtype=np.uint8).reshape(self.target).shape) if shape else tuple(self.target)


@dataclass(frozen=True, eq=False)
class ZeroPad2D(Layer):
    """Constant padding of H and W: ``padding`` = ((top, bottom), (left, right)), filled with ``value``
    (0; a quantized graph pads integer codes with their zero point)."""

    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    value: float = 0.0
    kind = "zero_pad"
    quant_rule = "same"

    def run(self, ins, spec=None, seed=None, offset=0):
        (t, b), (le, r) = self.padding
        return np.pad(ins[0], ((0, 0), (t, b), (le, r), (0, 0)), constant_values=self.value)

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        (t, b), (l, r) = self.padding
        return (h + t + b, w + l + r, c)


@dataclass(frozen=True, eq=False)
class Affine(Layer):
    """Elementwise ``x * scale + offset`` (Keras Rescaling, Normalization, or a batch norm with no conv to fold into).

    ``scale`` and ``offset`` are scalars or vectors along ``axis`` of the tensor without its batch
    dimension (default -1: the channel axis).
    """

    scale: np.ndarray | float = 1.0
    offset: np.ndarray | float = 0.0
    axis: int = -1
    kind = "affine"

    def _along(self, v, ndim, dt):
        v = np.asarray(v, dt)
        if v.ndim == 0 or self.axis in (-1, ndim - 2):
            return v
        shape = [1] * (ndim - 1)
        shape[self.axis] = v.size
        return v.reshape(shape)

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        dt = x.dtype
        return (x * self._along(self.scale, x.ndim, dt) + self._along(self.offset, x.ndim, dt)).astype(dt, copy=False)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"layer {self.name!r}: axis {self.axis} out of range for a tensor of shape {shape}")
        n = shape[self.axis]
        for what in ("scale", "offset"):
            size = np.size(getattr(self, what))
            if np.ndim(getattr(self, what)) and size not in (1, n):
                raise ValueError(f"layer {self.name!r}: {what} has {size} values, axis {self.axis} has {n}")
        return shape


@dataclass(frozen=True, eq=False)
class Activation(Layer):
    """A standalone activation layer."""

    activation: str = "linear"
    kind = "activation"

    def run(self, ins, spec=None, seed=None, offset=0):
        return activate(ins[0].copy(), self.activation)

    def __post_init__(self):
        _check_activation(self.name, self.activation)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class Add(Layer):
    """Elementwise sum of its inputs (residual connections) with numpy broadcasting, then ``activation``."""

    activation: str = "linear"
    kind = "add"

    def run(self, ins, spec=None, seed=None, offset=0):
        ins = align_batched(ins)
        y = ins[0]
        for other in ins[1:]:
            y = y + other
        return activate(y if len(ins) > 1 else y.copy(), self.activation)

    def __post_init__(self):
        _check_activation(self.name, self.activation)

    def output_shape(self, in_shapes):
        return _broadcast(self.name, "Add", in_shapes)


@dataclass(frozen=True, eq=False)
class Mul(Layer):
    """Elementwise product of its inputs with numpy broadcasting (a squeeze-and-excite gate of shape
    (1, 1, C) scales an (H, W, C) tensor), in float32."""

    kind = "mul"

    def run(self, ins, spec=None, seed=None, offset=0):
        ins = align_batched(ins)
        y = ins[0]
        for other in ins[1:]:
            y = y * other
        return y

    def output_shape(self, in_shapes):
        return _broadcast(self.name, "Mul", in_shapes)


@dataclass(frozen=True, eq=False)
class Binary(Layer):
    """``a - b``, ``maximum(a, b)`` or ``minimum(a, b)`` (``op`` = "sub", "max", "min") of its two inputs,
    with numpy broadcasting, in float32."""

    op: str = "sub"
    kind = "binary"
    OPS = {"sub": np.subtract, "max": np.maximum, "min": np.minimum}

    def __post_init__(self):
        if self.op not in self.OPS:
            raise ValueError(f"layer {self.name!r}: unknown binary op {self.op!r}; valid: {', '.join(self.OPS)}")
        if len(self.inputs) != 2:
            raise ValueError(f"layer {self.name!r}: {self.op} takes 2 inputs, got {len(self.inputs)}")

    def run(self, ins, spec=None, seed=None, offset=0):
        return self.OPS[self.op](*align_batched(ins))

    def output_shape(self, in_shapes):
        return _broadcast(self.name, self.op, in_shapes)


@dataclass(frozen=True, eq=False)
class LeakyRelu(Layer):
    """``x`` where ``x >= 0``, else ``alpha * x`` (in the input's precision)."""

    alpha: float = 0.2
    kind = "leaky_relu"

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        return np.where(x >= 0, x, x * x.dtype.type(self.alpha))

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class Mean(Layer):
    """The mean over ``axes`` (of the tensor without its batch), accumulated in float64; ``keepdims``
    keeps the reduced axes with size 1. (Over H and W of NHWC, :class:`GlobalAvgPool2D` says the same.)"""

    axes: tuple[int, ...] = (-1,)
    keepdims: bool = False
    kind = "mean"

    def _axes(self, rank: int) -> tuple[int, ...]:
        axes = tuple(sorted({a % rank for a in self.axes})) if rank else ()
        if not axes or any(not -rank <= a < rank for a in self.axes):
            raise ValueError(f"layer {self.name!r}: axes {self.axes} invalid for a rank-{rank} tensor")
        return axes

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        axes = tuple(a + 1 for a in self._axes(x.ndim - 1))
        return x.mean(axis=axes, keepdims=self.keepdims, dtype=np.float64).astype(x.dtype)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        axes = self._axes(len(shape))
        if self.keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in axes)


@dataclass(frozen=True, eq=False)
class Resize2D(Layer):
    """Resizing of H and W to ``size`` (rows, cols), ``method`` "nearest" or "bilinear", with TensorFlow's
    coordinate rules (``tf.compat.v1.image.resize`` / TF-Lite RESIZE_*): the source coordinate of output
    index ``i`` is ``i * scale`` (``scale = in / out``), ``(i + 0.5) * scale - 0.5`` with
    ``half_pixel_centers``, or ``i * (in - 1) / (out - 1)`` with ``align_corners``. Bilinear clamps the
    lower source index at 0 and the upper at ``in - 1``; nearest takes ``floor(i * scale)``,
    ``round(i * scale)`` (half away from zero) with ``align_corners`` or ``floor((i + 0.5) * scale)`` with
    ``half_pixel_centers``, clamped to ``in - 1``. Computed in float32."""

    size: tuple[int, int] = (1, 1)
    method: str = "bilinear"
    align_corners: bool = False
    half_pixel_centers: bool = False
    #: ONNX's rule instead of TensorFlow's: the source coordinate divides by these float32 (rows, cols)
    #: scale factors, ``i / scale`` (``(i + 0.5) / scale - 0.5`` with half-pixel centres), where TensorFlow
    #: multiplies by ``in / out``; the two round differently for some sizes (14 -> 16 nearest, for one)
    scales: tuple[float, float] | None = None
    kind = "resize"

    def __post_init__(self):
        object.__setattr__(self, "size", _pair(self.size))
        if self.method not in ("nearest", "bilinear"):
            raise ValueError(f"layer {self.name!r}: resize method {self.method!r} unsupported; valid: nearest, bilinear")
        if min(self.size) < 1:
            raise ValueError(f"layer {self.name!r}: size must be >= 1, got {self.size}")
        if self.align_corners and self.half_pixel_centers:
            raise ValueError(f"layer {self.name!r}: align_corners and half_pixel_centers are exclusive")
        if self.scales is not None:
            object.__setattr__(self, "scales", tuple(float(np.float32(v)) for v in self.scales))
            if len(self.scales) != 2 or min(self.scales) <= 0:
                raise ValueError(f"layer {self.name!r}: scales {self.scales} must be two positive numbers")

    @property
    def quant_rule(self):
        return "same" if self.method == "nearest" else "float"

    def source(self, n_in: int, n_out: int, axis: int = 0) -> np.ndarray:
        """The float32 source coordinate of every output index along one axis."""
        i = np.arange(n_out, dtype=np.float32)
        if self.scales is not None and not self.align_corners:
            f = np.float32(self.scales[axis])
            if self.half_pixel_centers:
                return (i + np.float32(0.5)) / f - np.float32(0.5)
            return i / f
        if self.align_corners and n_out > 1:
            scale = np.float32((n_in - 1) / (n_out - 1))
        else:
            scale = np.float32(n_in / n_out)
        if self.half_pixel_centers:
            return (i + np.float32(0.5)) * scale - np.float32(0.5)
        return i * scale

    def nearest_index(self, n_in: int, n_out: int, axis: int = 0) -> np.ndarray:
        i = np.arange(n_out, dtype=np.float32)
        if self.scales is not None and not (self.align_corners or self.half_pixel_centers):
            return np.clip(np.floor(i / np.float32(self.scales[axis])).astype(np.int64), 0, n_in - 1)
        scale = np.float32((n_in - 1) / (n_out - 1)) if self.align_corners and n_out > 1 else np.float32(n_in / n_out)
        if self.half_pixel_centers:
            v = np.floor((i + np.float32(0.5)) * scale)
        elif self.align_corners:  # std::round: half away from zero (the coordinates are >= 0)
            v = np.floor(i * scale + np.float32(0.5))
        else:
            v = np.floor(i * scale)
        return np.clip(v.astype(np.int64), 0, n_in - 1)

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        for axis, n_out in ((1, self.size[0]), (2, self.size[1])):
            n_in = x.shape[axis]
            if self.method == "nearest":
                x = np.take(x, self.nearest_index(n_in, n_out, axis - 1), axis=axis)
                continue
            x = _lerp(x, axis, self.source(n_in, n_out, axis - 1))
        return x

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        return (*self.size, c)


@dataclass(frozen=True, eq=False)
class Concat(Layer):
    """Its inputs joined along ``axis`` (of the tensors without the batch; default -1, the channels)."""

    axis: int = -1
    kind = "concat"

    def run(self, ins, spec=None, seed=None, offset=0):
        ax = self.axis if self.axis < 0 else self.axis + 1
        return np.concatenate(ins, axis=ax)

    def output_shape(self, in_shapes):
        first = list(in_shapes[0])
        ax = self.axis % len(first)
        for s in in_shapes[1:]:
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != ax):
                raise ValueError(f"layer {self.name!r}: Concat inputs differ outside axis {self.axis}: {in_shapes}")
        first[ax] = sum(s[ax] for s in in_shapes)
        return tuple(first)


def _lerp(x, axis: int, src) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at the float32 source coordinates ``src``: between
    ``floor(src)`` and the next index, both clamped to the axis (so a coordinate outside it takes the edge
    value), weights ``src - floor(src)``, in ``x``'s dtype."""
    n = x.shape[axis]
    lo_f = np.floor(src)
    lo = np.clip(lo_f.astype(np.int64), 0, n - 1)
    hi = np.clip(lo_f.astype(np.int64) + 1, 0, n - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (src - lo_f).astype(x.dtype).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


@dataclass(frozen=True, eq=False)
class UpSample2D(Layer):
    """Upsampling by integer ``size`` (rows, cols). ``interpolation="nearest"`` repeats each pixel;
    ``"bilinear"`` is TensorFlow's ``tf.image.resize`` bilinear with half-pixel centres (what Keras 3's
    UpSampling2D calls): source coordinate ``(i + 0.5) / size - 0.5``, clamped at the borders."""

    size: tuple[int, int] = (2, 2)
    interpolation: str = "nearest"
    kind = "upsample"

    def __post_init__(self):
        object.__setattr__(self, "size", _pair(self.size))
        if self.interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"layer {self.name!r}: interpolation {self.interpolation!r} unsupported; "
                             "valid: 'nearest', 'bilinear'")
        if min(self.size) < 1:
            raise ValueError(f"layer {self.name!r}: size must be >= 1, got {self.size}")

    @property
    def quant_rule(self):
        return "same" if self.interpolation == "nearest" else "float"

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        sh, sw = self.size
        if self.interpolation == "nearest":
            return np.repeat(np.repeat(x, sh, axis=1), sw, axis=2)
        for axis, s in ((1, sh), (2, sw)):
            n = x.shape[axis]
            x = _lerp(x, axis, (np.arange(n * s, dtype=np.float32) + np.float32(0.5)) / np.float32(s) - np.float32(0.5))
        return x

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        return (h * self.size[0], w * self.size[1], c)


@dataclass(frozen=True, eq=False)
class LayerNorm(Layer):
    """Layer normalization over the last axis, in float32 as Keras: ``(x - mean) / sqrt(var + epsilon) *
    gamma + beta`` with the biased variance; ``gamma`` / ``beta`` are None for no scale / no centre."""

    epsilon: float = 1e-3
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None
    kind = "layer_norm"

    def run(self, ins, spec=None, seed=None, offset=0):
        x = ins[0]
        dt = x.dtype
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + dt.type(self.epsilon))
        if self.gamma is not None:
            y = y * np.asarray(self.gamma, dt)
        if self.beta is not None:
            y = y + np.asarray(self.beta, dt)
        return y.astype(dt, copy=False)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        for what in ("gamma", "beta"):
            v = getattr(self, what)
            if v is not None and np.shape(v) != (shape[-1],):
                raise ValueError(f"layer {self.name!r}: {what} has shape {np.shape(v)}, expected ({shape[-1]},)")
        return shape


@dataclass(frozen=True, eq=False)
class Transpose(Layer):
    """A permutation of the axes of the tensor without its batch (the batch stays first): output axis ``i``
    is input axis ``perm[i]``. Frontends of NCHW frameworks use it at the network's edges."""

    perm: tuple[int, ...] = ()
    kind = "transpose"
    quant_rule = "same"

    def run(self, ins, spec=None, seed=None, offset=0):
        return np.ascontiguousarray(np.transpose(ins[0], (0, *(p + 1 for p in self.perm))))

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        if sorted(self.perm) != list(range(len(shape))):
            raise ValueError(f"layer {self.name!r}: perm {self.perm} is not a permutation of {len(shape)} axes")
        return tuple(shape[p] for p in self.perm)


@dataclass(frozen=True, eq=False)
class Clip(Layer):
    """``min(max(x, lo), hi)`` (``None``: no bound), in the input's precision."""

    lo: float | None = None
    hi: float | None = None
    kind = "clip"

    def run(self, ins, spec=None, seed=None, offset=0):
        return np.clip(ins[0], self.lo, self.hi)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class QuantizeLinear(Layer):
    """ONNX QuantizeLinear (per tensor), as onnxruntime's MLAS computes it in float32: ``q = clamp(
    round-half-even(x / scale) + zero_point, qmin, qmax)`` (``onnxruntime/core/mlas/lib/quantize.cpp``,
    ``MlasQuantizeLinear``). The codes travel as float32 values."""

    scale: float = 1.0
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127
    kind = "quantize_linear"

    def run(self, ins, spec=None, seed=None, offset=0):
        x = np.asarray(ins[0], np.float32)
        q = np.rint(x / np.float32(self.scale)) + np.float32(self.zero_point)
        return np.clip(q, self.qmin, self.qmax).astype(np.float32)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class DequantizeLinear(Layer):
    """ONNX DequantizeLinear (per tensor): ``float32(q - zero_point) * scale`` (the integer difference,
    then one float32 multiply, as onnxruntime)."""

    scale: float = 1.0
    zero_point: int = 0
    kind = "dequantize_linear"

    def run(self, ins, spec=None, seed=None, offset=0):
        return (np.asarray(ins[0], np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


def affine_of(op: str, c, tensor_first: bool):
    """``(scale, offset)`` of the Affine that computes ``x op c`` (``tensor_first``) or ``c op x``, for
    ``op`` in add, sub, mul, div and a constant ``c``; None for ``c / x``, which is not affine."""
    c = np.asarray(c, np.float64)
    if op == "add":
        return 1.0, c
    if op == "mul":
        return c, 0.0
    if op == "sub":
        return (1.0, -c) if tensor_first else (-1.0, c)
    if op == "div" and tensor_first:
        return 1.0 / c, 0.0
    if op == "div":
        return None
    raise ValueError(f"unknown elementwise op {op!r}; valid: add, sub, mul, div")


QUANT_ROUNDING = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")


def _round_mode(y, mode: str):
    """Round float array ``y`` to integers in its own dtype: ROUND / HALF_EVEN half to even, CEIL, FLOOR,
    UP (away from zero), DOWN (toward zero), HALF_UP (half away from zero, ``floor(|y| + 0.5)`` in y's
    dtype), HALF_DOWN (half toward zero, ``ceil(|y| - 0.5)``) -- qonnx's ``resolve_rounding_mode``."""
    half = y.dtype.type(0.5)
    return {"ROUND": np.rint, "HALF_EVEN": np.rint, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.trunc,
            "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
            "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + half),
            "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - half)}[mode](y)


def _int_range(bits: float, signed: bool, narrow: bool) -> tuple[np.float32, np.float32]:
    """The integer grid's ends, in float32 as qonnx computes them (``min_int`` / ``max_int``)."""
    b, two, one = np.float32(bits), np.float32(2), np.float32(1)
    if signed:
        return np.float32(-(two ** (b - one)) + (one if narrow else np.float32(0))), np.float32(two ** (b - one) - one)
    return np.float32(0), np.float32(two ** b - (two if narrow else one))


@dataclass(frozen=True, eq=False)
class IntQuant(Layer):
    """Fake quantization onto an integer grid (QONNX's ``Quant``, and ``BipolarQuant`` with ``bipolar``; Brevitas'
    quantizers),
    every step in float32 in this order (``qonnx/custom_op/general/intquant.py``): ``y = x / scale``,
    ``y = y + zero_point``; then for a signed 1-bit grid ``y = 1 if y >= 0 else -1``, else ``y`` clamped to
    the ``bits``-bit grid (signed or not; ``narrow`` drops the most negative code, or for unsigned the
    largest) and rounded with ``rounding`` (:data:`QUANT_ROUNDING`); the output is
    ``(y - zero_point) * scale``. ``scale`` and ``zero_point`` broadcast against the tensor without its batch.
    The grid's ends are computed in float32 too (above 24 bits they round, as in qonnx: a 32-bit bias grid
    ends at 2**31)."""

    scale: np.ndarray | float = 1.0
    zero_point: np.ndarray | float = 0.0
    bits: float = 8
    signed: bool = True
    narrow: bool = False
    rounding: str = "ROUND"
    #: BipolarQuant: ``(1 if x >= 0 else -1) * scale``, the sign of ``x`` itself (a negative subnormal ``x``
    #: whose ``x / scale`` underflows to -0 stays -1)
    bipolar: bool = False
    kind = "int_quant"

    def __post_init__(self):
        object.__setattr__(self, "rounding", str(self.rounding).upper())
        if self.rounding not in QUANT_ROUNDING:
            raise ValueError(f"layer {self.name!r}: rounding {self.rounding!r} unknown; valid: {', '.join(QUANT_ROUNDING)}")
        if not 1 <= float(self.bits) <= 32:
            raise ValueError(f"layer {self.name!r}: bits={self.bits} outside 1..32")
        if np.any(np.asarray(self.scale) <= 0):
            raise ValueError(f"layer {self.name!r}: scales must be positive")

    def run(self, ins, spec=None, seed=None, offset=0):
        f = np.float32
        s, z = np.asarray(self.scale, f), np.asarray(self.zero_point, f)
        if self.bipolar:
            return (np.where(ins[0].astype(f) >= f(0), f(1), f(-1)) * s).astype(f)
        y = ins[0].astype(f) / s + z
        if float(self.bits) == 1.0 and self.signed:
            y = np.where(y >= f(0), f(1), f(-1))
        else:
            lo, hi = _int_range(self.bits, self.signed, self.narrow)
            y = _round_mode(np.clip(y, lo, hi).astype(f), self.rounding)
        return ((y - z) * s).astype(f)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return _broadcast(self.name, "IntQuant", [shape, np.shape(self.scale), np.shape(self.zero_point)])


@dataclass(frozen=True, eq=False)
class TruncQuant(Layer):
    """QONNX's ``Trunc`` (version 2, ``qonnx/custom_op/general/trunc.py``), in float32: the input's integer
    ``y = RNE(x / scale + zero_point)`` is divided by ``t = 2 ** RNE(log2(out_scale / scale))``, clamped
    to the ``bits``-bit grid, rounded with ``rounding`` and returned as ``(y - zero_point / t) * out_scale``
    (the least significant bits dropped, as Brevitas' TruncAvgPool2d does)."""

    scale: np.ndarray | float = 1.0
    zero_point: np.ndarray | float = 0.0
    out_scale: np.ndarray | float = 1.0
    bits: float = 8
    signed: bool = True
    narrow: bool = False
    rounding: str = "FLOOR"
    kind = "trunc_quant"

    __post_init__ = IntQuant.__post_init__

    def run(self, ins, spec=None, seed=None, offset=0):
        f = np.float32
        s, z, o = (np.asarray(v, f) for v in (self.scale, self.zero_point, self.out_scale))
        y = np.rint(ins[0].astype(f) / s + z)
        t = f(2) ** np.rint(np.log2(o / s))
        lo, hi = _int_range(self.bits, self.signed, self.narrow)
        y = _round_mode(np.clip(y / t, lo, hi).astype(f), self.rounding)
        return ((y - z / t) * o).astype(f)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return _broadcast(self.name, "TruncQuant", [shape, np.shape(self.scale), np.shape(self.out_scale)])


#: The op registry: kind -> class.
OPS = {cls.kind: cls for cls in (Conv2D, DepthwiseConv2D, Dense, Conv2DTranspose, Pool2D, GlobalAvgPool2D, Reshape, ZeroPad2D, Affine,
                                 Activation, Add, Mul, Binary, LeakyRelu, Mean, Resize2D, Concat, UpSample2D, LayerNorm,
                                 Transpose, Clip, QuantizeLinear, DequantizeLinear, IntQuant, TruncQuant)}


def align_batched(ins: list[np.ndarray]) -> list[np.ndarray]:
    """Batched inputs of an elementwise op with their ranks aligned after the batch axis: an input of
    lower rank gets size-1 axes right after its batch, so it broadcasts as its shape without the batch
    does (numpy's trailing alignment on the batched arrays would put the batch against a data axis)."""
    r = max(v.ndim for v in ins)
    return [v if v.ndim == r else v.reshape(v.shape[0], *(1,) * (r - v.ndim), *v.shape[1:]) for v in ins]


def _broadcast(name: str, what: str, in_shapes) -> tuple[int, ...]:
    """The numpy broadcast of ``in_shapes`` (an elementwise op's output shape), or a ``ValueError``."""
    try:
        return tuple(np.broadcast_shapes(*in_shapes))
    except ValueError:
        raise ValueError(f"layer {name!r}: {what} inputs do not broadcast: {in_shapes}") from None


def _size(a) -> int:
    return 0 if a is None else int(np.size(a))


def _extent(kh, kw, dilation) -> tuple[int, int]:
    """The rows and columns a dilated kernel spans."""
    return ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1)


def _dilate(kernel, dilation):
    """``kernel`` (kh, kw, ...) with ``dilation - 1`` zero rows / columns between its taps."""
    if tuple(dilation) == (1, 1):
        return kernel
    kh, kw = kernel.shape[:2]
    out = np.zeros((*_extent(kh, kw, dilation), *kernel.shape[2:]), dtype=kernel.dtype)
    out[::dilation[0], ::dilation[1]] = kernel
    return out


def _group_seed(seed, g):
    """Group ``g``'s stochastic-rounding seed: the layer's for group 0, mixed with ``g`` after."""
    if seed is None or g == 0:
        return seed
    from kernels.rng import _mix64_py

    return int(_mix64_py((int(seed) ^ (g * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF))


@dataclass(frozen=True, eq=False)
class Network:
    """A validated, topologically ordered network. ``input_shape`` is (H, W, C) without the batch."""

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    output: str = field(default="")
    #: Free-form provenance (source file, Keras class name, accuracy notes...).
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(int(i) for i in self.input_shape))
        if not self.output:
            if not self.layers:
                raise ValueError("a network needs at least one layer")
            object.__setattr__(self, "output", self.layers[-1].name)
        seen = {INPUT}
        for layer in self.layers:
            if layer.name in seen:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            for src in layer.inputs:
                if src not in seen:
                    raise ValueError(f"layer {layer.name!r} reads {src!r}, which is not produced before it")
            seen.add(layer.name)
        if self.output not in seen:
            raise ValueError(f"output {self.output!r} is not a layer of the network")
        object.__setattr__(self, "_shapes", self._infer_shapes())

    def _infer_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {INPUT: self.input_shape}
        for layer in self.layers:
            shapes[layer.name] = tuple(int(i) for i in layer.output_shape([shapes[s] for s in layer.inputs]))
        return shapes

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Output shape (without batch) of every layer, and of ``"input"``."""
        return dict(self._shapes)

    def input_shape_of(self, layer: Layer | str) -> tuple[int, ...]:
        """The (first) input shape of a layer."""
        layer = self[layer] if isinstance(layer, str) else layer
        return self._shapes[layer.inputs[0]]

    @property
    def mac_layers(self) -> tuple[Layer, ...]:
        return tuple(l for l in self.layers if l.is_mac)

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)
