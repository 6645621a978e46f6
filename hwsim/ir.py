"""The network IR: what the Keras importer produces and what the runner and the cost model consume.

A :class:`Network` is an immutable list of layers in topological order. Every layer names its
producers in ``inputs`` (the network's input is called ``"input"``). Tensors are NHWC (or NC after
Flatten/Dense) with the batch dimension left out of every shape recorded here.

Only the operations the emulated MAC array executes carry weights (:class:`Conv2D`,
:class:`DepthwiseConv2D`, :class:`Dense`); batch normalisation is folded into them by the importer,
and activations are fused into the producing layer where Keras had them there. The remaining layers
(pooling, reshapes, padding, rescaling, residual adds) are computed by the runner in float32 on the
dequantized values, exactly as written in each class's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kernels.elementwise import ACTIVATIONS  # noqa: E402  (one list of activations)
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

    def output_shape(self, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as Keras): ``kernel`` is HWIO, ``bias`` has length O or is None.

    Output = activation(conv(x, kernel) + bias).
    """

    kernel: np.ndarray = None
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str = "linear"

    kind = "conv2d"
    is_mac = True

    def __post_init__(self):
        object.__setattr__(self, "strides", _pair(self.strides))
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 4:
            raise ValueError(f"layer {self.name!r}: Conv2D kernel must be 4-D HWIO, got shape {np.shape(self.kernel)}")

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        kh, kw, ci, co = self.kernel.shape
        if c != ci:
            raise ValueError(f"layer {self.name!r}: input has {c} channels, kernel expects {ci}")
        return (*conv_output_hw(h, w, kh, kw, self.strides, self.padding), co)


@dataclass(frozen=True, eq=False)
class DepthwiseConv2D(Layer):
    """Depthwise convolution: ``kernel`` has Keras' shape (kh, kw, C, depth_multiplier).

    Output channel ``c * depth_multiplier + m`` is input channel ``c`` convolved with ``kernel[:, :, c, m]``.
    """

    kernel: np.ndarray = None
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str = "linear"

    kind = "depthwise"
    is_mac = True

    def __post_init__(self):
        object.__setattr__(self, "strides", _pair(self.strides))
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 4:
            raise ValueError(f"layer {self.name!r}: DepthwiseConv2D kernel must be 4-D, got shape {np.shape(self.kernel)}")

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        kh, kw, ci, m = self.kernel.shape
        if c != ci:
            raise ValueError(f"layer {self.name!r}: input has {c} channels, kernel expects {ci}")
        return (*conv_output_hw(h, w, kh, kw, self.strides, self.padding), c * m)


@dataclass(frozen=True, eq=False)
class Dense(Layer):
    """Fully connected: ``kernel`` is (in, out). Output = activation(x @ kernel + bias)."""

    kernel: np.ndarray = None
    bias: np.ndarray | None = None
    activation: str = "linear"

    kind = "dense"
    is_mac = True

    def __post_init__(self):
        _check_activation(self.name, self.activation)
        if self.kernel is None or np.ndim(self.kernel) != 2:
            raise ValueError(f"layer {self.name!r}: Dense kernel must be 2-D (in, out), got shape {np.shape(self.kernel)}")

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        if shape[-1] != self.kernel.shape[0]:
            raise ValueError(f"layer {self.name!r}: input has {shape[-1]} features, kernel expects {self.kernel.shape[0]}")
        return (*shape[:-1], self.kernel.shape[1])


@dataclass(frozen=True, eq=False)
class Pool2D(Layer):
    """Max or average pooling. Average pooling with 'same' padding averages over the valid cells only (Keras)."""

    op: str = "max"  # "max" | "avg"
    pool_size: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    padding: str = "valid"

    kind = "pool"

    def __post_init__(self):
        object.__setattr__(self, "pool_size", _pair(self.pool_size))
        object.__setattr__(self, "strides", _pair(self.strides))
        if self.op not in ("max", "avg"):
            raise ValueError(f"layer {self.name!r}: pooling op must be 'max' or 'avg', got {self.op!r}")

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        return (*conv_output_hw(h, w, *self.pool_size, self.strides, self.padding), c)


@dataclass(frozen=True, eq=False)
class GlobalAvgPool2D(Layer):
    """Mean over H and W: (H, W, C) -> (C,) (or (1, 1, C) with ``keepdims``)."""

    keepdims: bool = False
    kind = "global_avg_pool"

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        return (1, 1, c) if self.keepdims else (c,)


@dataclass(frozen=True, eq=False)
class Reshape(Layer):
    """Row-major reshape (Flatten is ``target=(-1,)``)."""

    target: tuple[int, ...] = (-1,)
    kind = "reshape"

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return tuple(np.empty(shape, dtype=np.uint8).reshape(self.target).shape) if shape else tuple(self.target)


@dataclass(frozen=True, eq=False)
class ZeroPad2D(Layer):
    """Zero padding: ``padding`` = ((top, bottom), (left, right))."""

    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    kind = "zero_pad"

    def output_shape(self, in_shapes):
        (h, w, c), = in_shapes
        (t, b), (l, r) = self.padding
        return (h + t + b, w + l + r, c)


@dataclass(frozen=True, eq=False)
class Affine(Layer):
    """Elementwise ``x * scale + offset`` (Keras Rescaling, Normalization, or a batch norm with no conv to fold into).

    ``scale`` and ``offset`` broadcast against the channel (last) axis.
    """

    scale: np.ndarray | float = 1.0
    offset: np.ndarray | float = 0.0
    kind = "affine"

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class Activation(Layer):
    """A standalone activation layer."""

    activation: str = "linear"
    kind = "activation"

    def __post_init__(self):
        _check_activation(self.name, self.activation)

    def output_shape(self, in_shapes):
        (shape,) = in_shapes
        return shape


@dataclass(frozen=True, eq=False)
class Add(Layer):
    """Elementwise sum of its inputs (residual connections), then ``activation``."""

    activation: str = "linear"
    kind = "add"

    def __post_init__(self):
        _check_activation(self.name, self.activation)

    def output_shape(self, in_shapes):
        first = in_shapes[0]
        for s in in_shapes[1:]:
            if s != first:
                raise ValueError(f"layer {self.name!r}: Add inputs differ in shape: {in_shapes}")
        return first


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
