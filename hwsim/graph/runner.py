"""Run a network IR on the emulated MAC array.

``run(network, images, mac=...)`` evaluates the layers in order on batches of images (a large batch in
slices of whole images, :data:`SLICE_ELEMENTS`):

* A layer whose IR carries a ``quant`` record (set by :mod:`quant`: scales, zero points,
  requantization) is executed by ``layer.quant.run(layer, inputs, seed=..., offset=...)``.
* Otherwise the layer's own ``run`` (the op registry, :mod:`hwsim.graph.ir`): MAC layers (Conv2D,
  DepthwiseConv2D, Dense) go through :mod:`kernels` with the layer's MAC spec (inputs and weights are
  rounded into the spec's operand formats by the kernels), then the bias is added and the activation
  applied in float32 (float64 when the spec's output is wider); all other layers (pooling, padding,
  reshapes, affine, residual adds) are float32 numpy.

Stochastic rounding: every MAC layer gets its own stream, ``seed_l = mix(seed, layer index)``, and
the kernels' counters are offset by the index of the batch's first image, so results do not depend
on the batch size or the thread count.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping

import numpy as np

from kernels._memo import reuse_weights
from kernels.formats import FixedFormat, MXFormat
from kernels.mac import MacSpec, as_spec
from kernels.quantize import check_real_array
from kernels.rng import _mix64_py

from . import ir


def resolve_specs(network: ir.Network, mac) -> dict[str, MacSpec]:
    """One MacSpec per MAC layer from a MacSpec, a preset name, or a mapping layer-name -> spec
    (the key ``"*"`` gives the default for unlisted layers)."""
    names = [l.name for l in network.mac_layers]
    if isinstance(mac, Mapping):
        unknown = [k for k in mac if k != "*" and k not in names]
        if unknown:
            raise ValueError(f"MAC specs given for unknown layers {unknown}; MAC layers: {', '.join(names)}")
        out = {}
        for n in names:
            if n in mac:
                out[n] = as_spec(mac[n])
            elif "*" in mac:
                out[n] = as_spec(mac["*"])
            else:
                raise ValueError(f"no MAC spec for layer {n!r}; give one per MAC layer or a default under '*'")
        return out
    spec = as_spec(mac)
    return {n: spec for n in names}


def _layer_seed(seed, index):
    return int(_mix64_py((int(seed) & 0xFFFFFFFFFFFFFFFF) ^ ((index + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)))


#: the most elements (per tensor, all images together) :func:`forward` lets one layer output hold: a larger
#: batch goes through the network in slices of whole images. Tensors past glibc's largest mmap threshold
#: (32 MiB) get fresh pages on every allocation and leave the caches: cifar_cnn in fp32, batches of 500
#: images (16 M elements in its largest tensor), ran at 326 img/s against 755 img/s in batches of 100; in
#: slices of 2**21 elements (16 MiB in float64, the kernels' operand type) the batches of 500 ran at
#: 909-1037 img/s, in slices of 2**23 at 697-897 (2-core AMD EPYC, --avx2, bench noise about 15 %).
SLICE_ELEMENTS = 1 << 21


def forward(network: ir.Network, x, specs: Mapping[str, MacSpec], seed=None, offset: int = 0):
    """One batch through the network: ``x`` float array (n, *input_shape); returns the output layer's values.

    The batch runs in slices of whole images, each at most :data:`SLICE_ELEMENTS` elements in its largest
    layer output (at least one image). Every layer treats images independently and the stochastic
    counters are offset by each slice's first image, so the result is the same as for the whole batch."""
    largest = max(int(np.prod(s)) for s in network.shapes.values())
    step = max(1, SLICE_ELEMENTS // max(largest, 1))
    if len(x) <= step:
        return _forward(network, x, specs, seed, offset)
    return np.concatenate([_forward(network, x[i:i + step], specs, seed, offset + i) for i in range(0, len(x), step)])


def _forward(network: ir.Network, x, specs: Mapping[str, MacSpec], seed, offset):
    """:func:`forward` on one slice."""
    vals = {ir.INPUT: x}
    remaining = {}
    for l in network.layers:
        for s in l.inputs:
            remaining[s] = remaining.get(s, 0) + 1
    mac_index = 0
    for layer in network.layers:
        ins = [vals[s] for s in layer.inputs]
        lseed = spec = None
        if layer.is_mac:
            lseed = None if seed is None else _layer_seed(seed, mac_index)
            spec = specs[layer.name]
            mac_index += 1
        if layer.quant is not None:
            y = layer.quant.run(layer, ins, seed=lseed, offset=offset)
        else:
            y = layer.run(ins, spec, seed=lseed, offset=offset)
        vals[layer.name] = y
        for s in layer.inputs:
            remaining[s] -= 1
            if remaining[s] == 0 and s != network.output:
                vals.pop(s, None)
    return vals[network.output]


class Progress:
    """A minimal progress bar on stderr (one line, rewritten), silent when ``enabled`` is False."""

    def __init__(self, total: int, label: str = "", enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.perf_counter()

    def update(self, n: int, extra: str = ""):
        self.done += n
        if not self.enabled:
            return
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        el = time.perf_counter() - self.t0
        rate = self.done / el if el > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:6.1f} img/s {extra}")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _check_images(network, images):
    """The images as an array, or a ValueError: wrong shape, a dtype that is not real numbers, NaN or
    infinite values, or values in [0, 1] for a network that rescales raw 0..255 pixels itself."""
    images = check_real_array(images, "images")
    want = network.input_shape
    if images.ndim != len(want) + 1 or tuple(images.shape[1:]) != want:
        raise ValueError(f"images have shape {images.shape}; network {network.name!r} expects (N, {', '.join(map(str, want))})")
    if images.size and images.dtype.kind == "f":
        bad = ~np.isfinite(images)
        if bad.any():
            idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), images.shape))
            raise ValueError(f"images hold {int(bad.sum())} NaN / infinite value(s), the first {images[idx]} at index "
                             f"{idx}; pixels must be finite")
        scale = _pixel_rescale(network)
        if scale is not None and float(np.max(np.abs(images))) <= 1.0 and np.any(images != 0):
            raise ValueError(f"images lie in [-1, 1], but network {network.name!r} rescales its input itself (layer "
                             f"{scale!r} multiplies by {_first_scale(network):.6g}): it takes raw pixels 0..255 "
                             "as stored (uint8); pass those, not images already scaled to 0..1")
    return images


def _pixel_rescale(network):
    """The name of an affine first layer that scales every input channel by at most 1/128 (a Keras
    Rescaling(1/255) and the like: the network takes raw pixels), else None."""
    for layer in network.layers:
        if isinstance(layer, ir.Affine) and list(layer.inputs) == [ir.INPUT]:
            sc = np.abs(np.asarray(layer.scale, dtype=np.float64))
            if sc.size and sc.max() <= 1.0 / 128:
                return layer.name
        return None
    return None


def _first_scale(network):
    return float(np.max(np.abs(np.asarray(network.layers[0].scale, dtype=np.float64))))


def needs_scales(fmt) -> bool:
    """An operand format a float network cannot run on unscaled: integer / fixed point (weights of
    magnitude < 1 round to a few codes, 0..255 pixels saturate) and floats whose largest value is below
    128 (fp6, fp4, e3m4...: pixels and activations saturate). MX formats carry block scales."""
    if isinstance(fmt, MXFormat):
        return False
    return isinstance(fmt, FixedFormat) or fmt.max < 128


def check_specs(network: ir.Network, specs: Mapping[str, MacSpec]):
    """A ValueError when a float (unquantized) MAC layer gets operands that need quantizer scales."""
    for layer in network.mac_layers:
        spec = specs[layer.name]
        if layer.quant is not None:
            continue
        bad = [f.name for f in (spec.a, spec.b) if needs_scales(f)]
        if bad:
            raise ValueError(
                f"layer {layer.name!r} of network {network.name!r} is float, and MAC spec {spec.name} has "
                f"{' / '.join(dict.fromkeys(bad))} operands, which need quantizer scales: run unscaled, pixels and "
                "activations saturate and most weights round to zero (chance accuracy). Quantize the network "
                f"first: quant.quantize_model(net, weights={spec.b.name!r}, activations={spec.a.name!r}, mac=spec, "
                "calibration=training_images); `hwsim run --mac` does this itself, and `hwsim sweep` too")


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be None or an int in [0, 2**64), got {seed!r}")
    return int(seed)


def run(network: ir.Network, images, mac="fp32", batch_size: int = 250, seed=None, progress: bool = False,
        labels=None):
    """Run ``network`` on ``images`` (uint8 NHWC pixels as stored, or any numeric array) with the MAC
    spec(s) ``mac``; returns the output values (float32; float64 if a spec's output is wider).

    ``mac``: a :class:`kernels.MacSpec`, a preset name, or a mapping layer-name -> either (``"*"``:
    default). ``seed``: stochastic rounding seed (None: fresh entropy). ``labels``: only used to
    show the running accuracy on the progress bar.
    """
    return _run(network, _check_images(network, images), mac, batch_size, seed, progress, labels)


def _run(network, images, mac, batch_size, seed, progress, labels):
    """:func:`run` on images :func:`_check_images` has accepted."""
    specs = resolve_specs(network, mac)
    check_specs(network, specs)
    seed = _check_seed(seed)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if seed is None and any(s.is_stochastic for s in specs.values()):
        seed = int(np.random.SeedSequence().entropy) & 0xFFFFFFFFFFFFFFFF
    outs = []
    bar = Progress(len(images), network.name, enabled=progress)
    correct = 0
    # the layers' weights are not written during a run: the kernels round and lay them out once, not once per
    # slice of images (kernels._memo; the same values)
    with reuse_weights():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].astype(np.float32)
            y = forward(network, x, specs, seed=seed, offset=start)
            outs.append(y)
            extra = ""
            if labels is not None:
                correct += int((np.argmax(y.reshape(len(y), -1), axis=1) == labels[start:start + len(y)]).sum())
                extra = f"acc {correct / (start + len(y)):.4f}"
            bar.update(len(y), extra)
    bar.close()
    if not outs:
        return np.zeros((0, *network.shapes[network.output]), dtype=np.float32)
    return np.concatenate(outs)


def _check_labels(network, labels, n_images):
    try:
        lab = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"labels are not an array ({exc})") from None
    n_classes = int(np.prod(network.shapes[network.output]))
    if lab.ndim != 1:
        hint = " (one-hot? pass labels.argmax(axis=1))" if lab.ndim == 2 and lab.shape[-1] == n_classes else ""
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {lab.shape}{hint}")
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class indices, got dtype {lab.dtype}"
                         + (" (convert with labels.astype(int) if they are whole numbers)" if lab.dtype.kind == "f"
                            else ""))
    if len(lab) != n_images:
        raise ValueError(f"{n_images} images but {len(lab)} labels")
    if len(lab) == 0:
        raise ValueError("no images: top-1 accuracy of an empty set is undefined")
    bad = (lab < 0) | (lab >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"label {lab[i]} at index {i} is not a class index of network {network.name!r}: valid "
                         f"0..{n_classes - 1} ({int(bad.sum())} label(s) out of range)")
    return lab.astype(np.int64)


def accuracy(network: ir.Network, images, labels, mac="fp32", batch_size: int = 250, seed=None,
             progress: bool = True) -> float:
    """Top-1 accuracy of ``network`` on (images, labels) with the MAC spec(s) ``mac``.

    ``labels``: class indices, integers in [0, number of outputs), one per image. One-hot or other 2-D
    labels, floats, strings and indices out of range are refused (ValueError), as is an empty set (no
    accuracy to report)."""
    images = _check_images(network, images)
    labels = _check_labels(network, labels, len(images))
    out = _run(network, images, mac, batch_size, seed, progress, labels)
    return float((np.argmax(out.reshape(len(out), -1), axis=1) == labels).mean())
