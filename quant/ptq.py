"""Post-training quantization: :func:`quantize_model` maps a float network onto number formats.

It returns a new :class:`hwsim.graph.ir.Network` whose MAC layers (Conv2D, DepthwiseConv2D, Dense) carry a
:class:`QuantLayer` in their ``quant`` field; :func:`hwsim.run` executes those instead of the float
rule. Non-MAC layers (pooling, reshapes, residual adds, rescaling) still run in float32 on the
dequantized values. The input network is never modified.

The emulated hardware of one MAC layer (:meth:`QuantLayer.run`), exactly:

1. **Input quantization.** The float32 input ``x`` becomes format values
   ``v = clip(Q_A(x / s_in + zp_in), vmin, vmax)`` (:class:`quant.scales.QParams`: float64 division
   and addition, round to nearest even, saturate; ``s_in``, ``zp_in`` per tensor). The MAC array's
   left operand is ``v - zp_in`` (exact): for an asymmetric ``int<N>`` format that is an
   ``int<N+1>`` value, so the MAC unit's operand format is widened by one bit, as TF-Lite's kernels
   add the input offset in 32-bit registers before multiplying. MX formats: ``x`` goes to the kernel
   unscaled and the kernel applies the OCP block scales along the channel (reduction) axis.
2. **Weights**, quantized once by :func:`quantize_model`: ``w_v = clip(Q_W(w / s_w + zp_w), ...)``
   with per-output-channel (``per_channel=True``) or per-tensor scales; the right operand is
   ``w_v - zp_w`` (symmetric weights: ``zp_w = 0``, the operand is ``w_v`` in the weight format).
3. **MAC array**: :func:`kernels.conv2d` / :func:`kernels.depthwise_conv2d` / :func:`kernels.matmul`
   with the layer's :class:`kernels.MacSpec` (exact semantics in :mod:`kernels.mac`). Its operand
   formats are the (widened) activation and weight formats; the accumulator, product format,
   rounding and order come from ``mac`` (a MacSpec or preset, whose own operand formats are
   replaced) or, by default, a 32-bit integer accumulator that wraps (``FixedFormat(32, a.frac +
   b.frac)``: ``int32`` for integer operands, as TF-Lite) when both operands are integer / fixed
   point, else a float32 accumulator with exact products (``fma=True``, one rounding per addition).
4. **Bias** in accumulator units: ``b_acc = Q_acc(bias / M)`` with ``M = s_in * s_w[c]`` (float64),
   rounded to nearest even into the accumulator format (saturating for integer accumulators: int32
   biases). It is added after the last product, as one more addition into the accumulator: exact
   then wrapped / saturated per the spec for integer accumulators; for float accumulators the exact
   sum is rounded once into the accumulator with the spec's accumulation rounding and overflow
   (stochastic counter stage 3 of :mod:`kernels.mac`'s layout, ``t = 0``).
5. **Requantization** (``requant``):

   * ``"float"``: ``y = act(acc * M[c])`` -- one float64 multiplication of the accumulator value by
     the float64 multiplier ``M[c] = s_in * s_w[c]`` (itself one float64 product), then the layer's
     activation in float64, then a float32 cast (round to nearest even). Output scale and clamping
     are left to the next layer's input quantization.
   * ``"tflite"`` (integer formats and accumulator only): TF-Lite's integer output stage with
     :mod:`quant.requant`: ``M[c] = (s_in * s_w[c]) / s_out`` (float64), ``(m0, shift) =
     quantize_multiplier(M[c])``, ``q = clamp(multiply_by_quantized_multiplier(acc, m0, shift) + zp_out,
     lo, hi)`` (double rounding, TF-Lite's default build), where ``[lo, hi]`` is the output
     format's stored range intersected with the activation -- ReLU: ``lo = max(lo, zp_out)``; ReLU6
     also ``hi = min(hi, zp_out + floor(6 / s_out + 0.5))`` -- as TF-Lite folds activations into the
     clamp. The output passes on as ``float32((q - zp_out) * s_out)``. ``s_out``/``zp_out``: when the
     output reaches exactly one MAC layer through max-pooling / reshapes / zero padding only, that
     layer's input parameters (so its input quantization gives back ``q`` exactly); otherwise the
     layer's own output tensor is calibrated with its activation settings.

Calibration (:mod:`quant.calibrate`) observes the float32 network (``hwsim.run(net, x, mac="fp32")``'s
arithmetic) on the calibration images: the input of every MAC layer, and the outputs needed by
``"tflite"``. Activation ranges are per tensor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from kernels.elementwise import activate
from kernels.formats import FixedFormat, MXFormat, parse_format
from kernels.mac import MacSpec, as_spec
from kernels.ops import add_rounded
from kernels.quantize import quantize as kquantize

from . import calibrate as cal
from .scales import QParams, check_scheme, compute_qparams

__all__ = ["quantize_model", "LayerConfig", "QuantLayer", "REQUANT_MODES"]

REQUANT_MODES = ("float", "tflite")
_TFLITE_ACTIVATIONS = ("linear", "relu", "relu6")


def _is_int(fmt) -> bool:
    return isinstance(fmt, FixedFormat) and fmt.frac == 0


@dataclass(frozen=True)
class LayerConfig:
    """How one MAC layer is quantized (validated, immutable).

    ``weights`` / ``activations``: formats (names or objects); ``mac``: None (default accumulator, see
    the module docstring), a :class:`kernels.MacSpec` or a preset name; ``per_channel``: per-output-
    channel weight scales; ``weight_scheme`` / ``act_scheme``: ``"symmetric"`` / ``"asymmetric"``
    (``act_scheme=None``: asymmetric for integer / fixed formats, symmetric otherwise);
    ``weight_scale`` / ``act_scale``: ``"real"``, ``"pow2"``, ``"none"``, ``"mx"`` (None: ``"mx"`` for
    MX formats, ``"real"`` otherwise); ``method`` / ``weight_method``: calibration of activations /
    weights (``"minmax"``, ``"percentile"``, ``"mse"``; unused for tensors with scale ``"none"`` /
    ``"mx"``, which are not calibrated); ``requant``: ``"float"`` or ``"tflite"``.
    """

    weights: object = "int8"
    activations: object = "int8"
    mac: object = None
    per_channel: bool = True
    weight_scheme: str = "symmetric"
    act_scheme: str | None = None
    weight_scale: str | None = None
    act_scale: str | None = None
    method: str = "minmax"
    weight_method: str = "minmax"
    requant: str = "float"

    def __post_init__(self):
        s = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for role in ("weights", "activations"):
            s(role, parse_format(getattr(self, role)))
        if self.act_scheme is None:
            s("act_scheme", "asymmetric" if isinstance(self.activations, FixedFormat) else "symmetric")
        for role, fmt in (("weight_scale", self.weights), ("act_scale", self.activations)):
            if getattr(self, role) is None:
                s(role, "mx" if isinstance(fmt, MXFormat) else "real")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be True or False, got {self.per_channel!r}")
        check_scheme(self.weights, self.weight_scheme, self.weight_scale, f"weights ({self.weights.name})")
        check_scheme(self.activations, self.act_scheme, self.act_scale, f"activations ({self.activations.name})")
        cal.check_method(self.method)
        cal.check_method(self.weight_method)
        if self.mac is not None:
            s("mac", as_spec(self.mac))
        if self.requant not in REQUANT_MODES:
            raise ValueError(f"unknown requant mode {self.requant!r}; valid: {', '.join(REQUANT_MODES)}")
        if self.requant == "tflite":
            for role, fmt, kind in (("weights", self.weights, self.weight_scale),
                                    ("activations", self.activations, self.act_scale)):
                if not _is_int(fmt):
                    raise ValueError(f"requant='tflite' is integer arithmetic: {role} must be an int<N>/uint<N> "
                                     f"format, not {fmt.name}; use requant='float'")
                if kind not in ("real", "pow2"):
                    raise ValueError(f"requant='tflite' rescales by s_in*s_w/s_out: {role} need scale 'real' or "
                                     f"'pow2', not {kind!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.act_scale in ("real", "pow2")

    def describe(self) -> dict:
        d = {k: getattr(self, k) for k in ("per_channel", "weight_scheme", "act_scheme", "weight_scale", "act_scale",
                                            "method", "weight_method", "requant")}
        d.update(weights=self.weights.name, activations=self.activations.name)
        return d


_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(LayerConfig))


def _widen(qp: QParams):
    """The MAC operand format of ``v - zero_point``."""
    fmt = qp.fmt
    if qp.scheme == "asymmetric":
        if fmt.bits + 1 > 32:
            raise ValueError(f"{fmt.name} with a zero point needs a {fmt.bits + 1}-bit MAC operand; at most 31-bit "
                             "formats can be asymmetric")
        return FixedFormat(fmt.bits + 1, fmt.frac, signed=True)
    return fmt


def _mac_spec(cfg: LayerConfig, a, b) -> MacSpec:
    if cfg.mac is not None:
        return cfg.mac.with_(a=a, b=b)
    if isinstance(a, FixedFormat) and isinstance(b, FixedFormat):
        return MacSpec(a, FixedFormat(32, a.frac + b.frac), b=b, overflow="wrap")
    return MacSpec(a, "fp32", b=b, fma=True)


def _mac(layer, x, w, spec, seed, first_image):
    """The layer's MAC kernel on operands ``x`` (NHWC / (..., K)) and ``w`` (the layer's kernel shape),
    for a batch whose first image is number ``first_image`` of the run (the kernels' stochastic counters
    are offset by that many images' outputs, as :mod:`hwsim.graph.runner` does)."""
    offset = first_image * int(np.prod(layer.output_shape([x.shape[1:]])))
    return layer.mac(x, w, spec, seed=seed, offset=offset)


@dataclass(frozen=True, eq=False)
class QuantLayer:
    """The quantized MAC layer: what :func:`hwsim.run` executes (see the module docstring).

    ``act``: input QParams; ``wq``: weight QParams; ``weights``: the MAC's right operand
    (``w_v - zp_w`` in format values; raw float weights for MX formats, which the kernel blocks);
    ``bias``: bias in accumulator units or None; ``multiplier``: ``M[c] = s_in * s_w[c]`` per output
    channel; ``out``/``out_lo``/``out_hi``/``m0``/``shift``: the ``"tflite"`` output stage.
    """

    config: LayerConfig
    spec: MacSpec
    act: QParams
    wq: QParams
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray | None = field(repr=False)
    multiplier: np.ndarray = field(repr=False)
    out: QParams | None = None
    out_lo: float | None = None
    out_hi: float | None = None
    m0: np.ndarray | None = field(default=None, repr=False)
    shift: np.ndarray | None = field(default=None, repr=False)

    @property
    def requant(self) -> str:
        return self.config.requant

    def quantize_input(self, x):
        """The MAC array's left operand for float input ``x``: ``v - zp_in`` (float64), or ``x`` for MX."""
        if self.act.kind == "mx":
            return x
        v = self.act.quantize(x)
        if np.any(self.act.zero_point != 0):
            v = v - self.act.zero_point
        # float32 holds every operand value exactly when the format fits it (the kernels' fast paths)
        return v.astype(np.float32) if self.spec.a.fits_float32 else v

    def accumulate(self, layer, x, seed=None, offset=0):
        """The accumulator values (float64, accumulator format values) for float input ``x``, bias included."""
        acc = np.asarray(_mac(layer, self.quantize_input(x), self.weights, self.spec, seed, offset))
        if self.bias is None:
            return acc.astype(np.float64, copy=False)
        fmt = self.spec.out_format
        b = self.bias
        if isinstance(fmt, FixedFormat):  # both on the accumulator grid, |sum| < 2**53: exact
            s = acc.astype(np.float64, copy=False)  # the kernel's own array when float64: summed in place
            s += b
            if s.size and (s.min() < fmt.min or s.max() > fmt.max):  # wrap / saturate per the spec
                s = np.asarray(kquantize(s, fmt, overflow=self.spec.overflow_for(fmt)), dtype=np.float64)
            return s
        return add_rounded(acc, b, fmt, self.spec.accum_rounding, self.spec.overflow_for(fmt),
                           self.spec.rand_bits, seed, offset * int(np.prod(acc.shape[1:])))

    def run(self, layer, inputs, seed=None, offset=0):
        acc = self.accumulate(layer, inputs[0], seed=seed, offset=offset)
        if self.requant == "float":
            acc *= self.multiplier
            return activate(acc, layer.activation).astype(np.float32)
        from .requant import multiply_by_quantized_multiplier

        zp = self.out.zero_point
        q = multiply_by_quantized_multiplier(acc.astype(np.int64), self.m0, self.shift) + np.int64(zp)
        q = np.clip(q, self.out_lo, self.out_hi)
        return ((q - zp) * self.out.scale).astype(np.float32)

    def describe(self) -> dict:
        d = dict(self.config.describe(), mac=self.spec.name, input=self.act.describe(), weight_params=self.wq.describe())
        if self.out is not None:
            d["output"] = self.out.describe()
        return d


# ------------------------------------------------------------------------------------------------
# quantize_model
# ------------------------------------------------------------------------------------------------

def _expand_scale(d: dict, what: str) -> dict:
    d = dict(d)
    if "scale" in d:
        sc = d.pop("scale")
        if isinstance(sc, Mapping):
            bad = [k for k in sc if k not in ("weights", "activations")]
            if bad:
                raise ValueError(f"{what}: scale mapping keys {bad} unknown; valid: 'weights', 'activations'")
            pairs = {"weight_scale": sc.get("weights"), "act_scale": sc.get("activations")}
        else:
            pairs = {"weight_scale": sc, "act_scale": sc}
        for k, v in pairs.items():
            if v is None:
                continue
            if d.get(k) is not None and d[k] != v:
                raise ValueError(f"{what}: scale={sc!r} contradicts {k}={d[k]!r}")
            d[k] = v
    return d


def _layer_configs(network, base: dict, overrides) -> dict:
    mac_layers = network.mac_layers
    names = [l.name for l in mac_layers]
    per = {}
    if overrides is None:
        pass
    elif callable(overrides):
        for layer in mac_layers:
            d = overrides(layer)
            if d is None:
                continue
            if not isinstance(d, Mapping):
                raise ValueError(f"overrides({layer.name!r}) returned {d!r}; expected a dict of settings or None")
            per[layer.name] = d
    elif isinstance(overrides, Mapping):
        all_names = [l.name for l in network.layers]
        for k in overrides:
            if k not in all_names:
                raise ValueError(f"overrides name an unknown layer {k!r}; MAC layers: {', '.join(names)}")
            if k not in names:
                raise ValueError(f"overrides name {k!r}, which is a {network[k].kind} layer, not a MAC layer; "
                                 f"MAC layers: {', '.join(names)}")
            if not isinstance(overrides[k], Mapping):
                raise ValueError(f"overrides[{k!r}] must be a dict of settings, got {overrides[k]!r}")
        per = dict(overrides)
    else:
        raise ValueError(f"overrides must be a dict layer-name -> settings, a callable(layer) -> settings, or None; "
                         f"got {overrides!r}")
    cfgs = {}
    for layer in mac_layers:
        over = _expand_scale(per.get(layer.name, {}), f"overrides[{layer.name!r}]")
        bad = [k for k in over if k not in _CONFIG_KEYS]
        if bad:
            raise ValueError(f"overrides[{layer.name!r}]: unknown settings {bad}; valid: scale, {', '.join(_CONFIG_KEYS)}")
        kw = dict(base)
        for k, v in over.items():
            kw[k] = v
        try:
            cfg = LayerConfig(**kw)
        except ValueError as exc:
            raise ValueError(f"layer {layer.name!r}: {exc}") from None
        if cfg.requant == "tflite" and layer.activation not in _TFLITE_ACTIVATIONS:
            raise ValueError(f"layer {layer.name!r}: requant='tflite' folds only {', '.join(_TFLITE_ACTIVATIONS)} into "
                             f"the output clamp, not activation {layer.activation!r}; use requant='float' for it")
        cfgs[layer.name] = cfg
    return cfgs


def _check_weights(network):
    for layer in network.mac_layers:
        for what, arr in (("kernel", layer.kernel), ("bias", layer.bias)):
            if arr is None:
                continue
            a = np.asarray(arr)
            bad = ~np.isfinite(a)
            if bad.any():
                idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
                raise ValueError(f"layer {layer.name!r}: {what} holds {int(bad.sum())} non-finite value(s) (first "
                                 f"{a[idx]!r} at index {idx}); quantization needs finite weights")


def _check_calibration(network, images):
    if images is None:
        raise ValueError("calibration images are needed for activation scales (scale 'real' / 'pow2' or "
                         "requant='tflite'): pass calibration=an (N, " + ", ".join(map(str, network.input_shape))
                         + ") array, e.g. 500 training images")
    x = np.asarray(images)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"calibration images must be a numeric array, got dtype {x.dtype}")
    want = tuple(network.input_shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise ValueError(f"calibration images have shape {x.shape}; network {network.name!r} expects "
                         f"(N, {', '.join(map(str, want))})")
    if len(x) == 0:
        raise ValueError("calibration set is empty; pass at least one image")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError(f"calibration images hold {int((~np.isfinite(x)).sum())} non-finite value(s)")
    return x


def _link(network, name, cfgs):
    """The MAC layer that reads ``name``'s output through max-pooling / reshapes / zero padding only
    (each step the single consumer), if its input is integer-quantized with a scale; else None."""
    consumers = {}
    for l in network.layers:
        for s in l.inputs:
            consumers.setdefault(s, []).append(l)
    t = name
    while t != network.output:
        cs = consumers.get(t, [])
        if len(cs) != 1:
            return None
        c = cs[0]
        if c.is_mac:
            cc = cfgs[c.name]
            return c.name if (_is_int(cc.activations) and cc.act_scale in ("real", "pow2")) else None
        if c.quant_rule == "same":
            t = c.name
            continue
        return None
    return None


class _Tap:
    """Calibration hook: observes a MAC layer's input (and output), computes it in float32."""

    def __init__(self, spec, obs_in, obs_out):
        self.spec, self.obs_in, self.obs_out = spec, obs_in, obs_out

    def run(self, layer, inputs, seed=None, offset=0):
        if self.obs_in is not None:
            self.obs_in.update(inputs[0])
        y = layer.run(inputs, self.spec, None, offset)
        if self.obs_out is not None:
            self.obs_out.update(y)
        return y


def _calibrate(network, cfgs, images, ccfg: dict, need_out, batch_size):
    from hwsim.graph import runner

    n = len(images)
    shapes = network.shapes
    fp32 = as_spec("fp32")
    obs_in, obs_out, layers = {}, {}, []
    for layer in network.layers:
        if not layer.is_mac:
            layers.append(layer)
            continue
        cfg = cfgs[layer.name]
        oi = oo = None
        if cfg.needs_calibration:
            size = n * int(np.prod(shapes[layer.inputs[0]]))
            oi = cal.Observer(cfg.method, size, cfg.activations, cfg.act_scheme, cfg.act_scale,
                              cal.CalibConfig(method=cfg.method, **ccfg), f"layer {layer.name!r} input")
        if layer.name in need_out:
            size = n * int(np.prod(shapes[layer.name]))
            oo = cal.Observer(cfg.method, size, cfg.activations, cfg.act_scheme, cfg.act_scale,
                              cal.CalibConfig(method=cfg.method, **ccfg), f"layer {layer.name!r} output")
        obs_in[layer.name], obs_out[layer.name] = oi, oo
        layers.append(dataclasses.replace(layer, quant=_Tap(fp32, oi, oo)))
    tapped = dataclasses.replace(network, layers=tuple(layers), meta=dict(network.meta))
    specs = runner.resolve_specs(tapped, fp32)
    for start in range(0, n, batch_size):
        runner.forward(tapped, images[start:start + batch_size].astype(np.float32), specs, offset=start)
    rin = {k: o.result() for k, o in obs_in.items() if o is not None}
    rout = {k: o.result() for k, o in obs_out.items() if o is not None}
    return rin, rout


def _act_qparams(cfg: LayerConfig, rng, what):
    lo, hi = rng if rng is not None else (0.0, 0.0)
    return compute_qparams(lo, hi, cfg.activations, cfg.act_scheme, cfg.act_scale, what)


def _quantize_weights(layer, cfg: LayerConfig, ccfg: dict):
    w = np.asarray(layer.kernel, dtype=np.float64)
    w2 = layer.kernel_by_output_channel(w)  # output channel = last axis
    what = f"layer {layer.name!r} weights"
    cout = w2.shape[-1]
    shape = (cout,) if cfg.per_channel else ()
    if cfg.weight_scale in ("none", "mx"):
        qp = compute_qparams(np.zeros(shape), np.zeros(shape), cfg.weights, cfg.weight_scheme, cfg.weight_scale, what)
        if cfg.weight_scale == "mx":
            return qp, np.asarray(layer.kernel, dtype=np.float32)
    else:
        lo, hi = cal.tensor_range(w2, cfg.weight_method, cfg.weights, cfg.weight_scheme, cfg.weight_scale,
                                  channel_axis=-1 if cfg.per_channel else None,
                                  cfg=cal.CalibConfig(method=cfg.weight_method, **ccfg), what=what)
        qp = compute_qparams(lo, hi, cfg.weights, cfg.weight_scheme, cfg.weight_scale, what)
    v = qp.quantize(w2)
    if np.any(qp.zero_point != 0):
        v = v - qp.zero_point
    v = v.reshape(w.shape)
    return qp, v.astype(np.float32) if _widen(qp).fits_float32 else v


def _tflite_stage(layer, act: QParams, wq: QParams, out: QParams):
    from .requant import quantize_multiplier

    cout = layer.out_channels
    real = (act.scale * np.broadcast_to(wq.scale, (cout,))) / out.scale
    m0, shift = quantize_multiplier(np.asarray(real, dtype=np.float64))
    zp = float(out.zero_point)
    lo, hi = out.vmin, out.vmax
    if layer.activation in ("relu", "relu6"):
        lo = max(lo, zp)
    if layer.activation == "relu6":
        hi = min(hi, zp + math.floor(6.0 / float(out.scale) + 0.5))
    return m0, shift, lo, hi


def quantize_model(network, weights="int8", activations="int8", mac=None, per_channel=True, calibration=None,
                   method="minmax", weight_method="minmax", scale=None, weight_scheme="symmetric", act_scheme=None,
                   requant="float", overrides=None, percentile=99.99, mse_grid=100, mse_samples=1 << 18,
                   mse_seed=0, batch_size=100):
    """Quantize ``network`` (a :class:`hwsim.graph.ir.Network`) for :func:`hwsim.run`; returns a new Network.

    ``weights`` / ``activations``: formats; ``mac``: MacSpec / preset for the accumulator side (None:
    int32 wrap for integer operands, fp32 with exact products otherwise); ``per_channel``: weight
    scales per output channel; ``calibration``: (N, *input_shape) images (raw pixels, as
    :func:`hwsim.run` takes them) -- needed unless every activation uses ``scale`` ``"none"``/``"mx"``;
    ``method`` / ``weight_method``: ``"minmax"``, ``"percentile"``, ``"mse"``; ``scale``: ``"real"``,
    ``"pow2"``, ``"none"``, ``"mx"`` or None (auto), or a dict ``{"weights": ..., "activations": ...}``;
    ``weight_scheme`` / ``act_scheme``: ``"symmetric"`` / ``"asymmetric"`` (``act_scheme=None``:
    asymmetric for integer formats); ``requant``: ``"float"`` / ``"tflite"``; ``overrides``: a dict
    layer-name -> settings (any of the keyword names above that :class:`LayerConfig` has, plus
    ``scale``), or a callable ``layer -> settings or None``; ``percentile``, ``mse_grid``,
    ``mse_samples``, ``mse_seed``: calibration details (:mod:`quant.calibrate`); ``batch_size``: images
    per calibration batch.

    Every argument is validated before anything is computed; the input network is not modified.
    """
    from hwsim.graph import ir

    if not isinstance(network, ir.Network):
        raise ValueError(f"quantize_model needs a hwsim.graph.ir.Network (e.g. hwsim.load_model(...)), got {network!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    ccfg = dict(percentile=percentile, mse_grid=mse_grid, mse_samples=mse_samples, seed=mse_seed)
    cal.CalibConfig(**ccfg)  # validate
    base = _expand_scale(dict(weights=weights, activations=activations, mac=mac, per_channel=per_channel,
                              method=method, weight_method=weight_method, scale=scale, weight_scheme=weight_scheme,
                              act_scheme=act_scheme, requant=requant), "quantize_model")
    try:
        LayerConfig(**base)
    except ValueError as exc:
        raise ValueError(f"quantize_model: {exc}") from None
    cfgs = _layer_configs(network, base, overrides)
    _check_weights(network)

    # which layers need their own output calibrated ("tflite" outputs not consumed by one MAC input)
    links = {n: _link(network, n, cfgs) for n, c in cfgs.items() if c.requant == "tflite"}
    need_out = {n for n, tgt in links.items() if tgt is None}
    images = None
    if any(c.needs_calibration for c in cfgs.values()) or need_out:
        images = _check_calibration(network, calibration)

    # weights (cheap, and the remaining validation) before the calibration pass
    wparams = {}
    for layer in network.mac_layers:
        wparams[layer.name] = _quantize_weights(layer, cfgs[layer.name], ccfg)  # errors name the layer

    rin, rout = _calibrate(network, cfgs, images, ccfg, need_out, batch_size) if images is not None else ({}, {})

    acts = {}
    for layer in network.mac_layers:
        cfg = cfgs[layer.name]
        acts[layer.name] = _act_qparams(cfg, rin.get(layer.name), f"layer {layer.name!r} input")

    new_layers, summary = [], {}
    for layer in network.layers:
        if not layer.is_mac:
            new_layers.append(layer)
            continue
        cfg = cfgs[layer.name]
        act = acts[layer.name]
        wq, wv = wparams[layer.name]
        try:
            spec = _mac_spec(cfg, _widen(act), _widen(wq))
        except ValueError as exc:
            raise ValueError(f"layer {layer.name!r}: {exc}") from None
        cout = layer.out_channels
        mult = np.asarray(act.scale * np.broadcast_to(wq.scale, (cout,)), dtype=np.float64)
        bias = None
        if layer.bias is not None:
            fmt = spec.out_format
            ovf = "saturate" if isinstance(fmt, FixedFormat) else None
            bias = np.asarray(kquantize(np.asarray(layer.bias, dtype=np.float64) / mult, fmt, overflow=ovf),
                              dtype=np.float64)
        extra = {}
        if cfg.requant == "tflite":
            acc = spec.out_format
            if not (_is_int(acc) and acc.signed):
                raise ValueError(f"layer {layer.name!r}: requant='tflite' needs a signed integer accumulator, not "
                                 f"{acc.name} (mac={spec.name})")
            tgt = links[layer.name]
            out = acts[tgt] if tgt is not None else _act_qparams(cfg, rout[layer.name], f"layer {layer.name!r} output")
            m0, shift, lo, hi = _tflite_stage(layer, act, wq, out)
            extra = dict(out=out, out_lo=lo, out_hi=hi, m0=m0, shift=shift)
        ql = QuantLayer(cfg, spec, act, wq, wv, bias, mult, **extra)
        new_layers.append(dataclasses.replace(layer, quant=ql))
        summary[layer.name] = ql.describe()
    meta = dict(network.meta)
    meta["quant"] = summary
    meta["quant_calibration"] = dict(ccfg, images=0 if images is None else len(images))
    return dataclasses.replace(network, layers=tuple(new_layers), meta=meta)
