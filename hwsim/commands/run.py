"""``hwsim run``: top-1 accuracy of a model on CIFAR-10 test images with one MAC spec."""

from __future__ import annotations

import sys
import time

from hwsim.commands import limit_arg


def register(sub):
    p = sub.add_parser("run", help="run a model on the emulated MAC array and print its accuracy",
                       description="Run a model (zoo name or .keras/.h5 file) on CIFAR-10 test images "
                                   "through the emulated MAC array and print the top-1 accuracy. A MAC preset "
                                   "with integer or narrow-float operands (int8_int32, int4_int16, ...) needs "
                                   "quantizer scales: a float model is then quantized first, calibrated on "
                                   "training images (as `hwsim sweep` does), and the command says so.")
    p.add_argument("--model", default="cifar_cnn", help="zoo name (cifar_cnn, mobilenet) or a .keras/.h5/.tflite path")
    p.add_argument("--mac", default="fp32", help="MAC preset (fp32, fp16_fp32, bf16_fp32, fp8_e4m3_fp16, "
                                                 "fp8_e4m3_fp32, int8_int32, ...)")
    p.add_argument("--limit", type=limit_arg, default=None, metavar="N",
                   help="use N test images spread evenly over the test set (the same number from every class), "
                        "or 'all' (default all)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="stochastic rounding seed")
    p.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="training images to calibrate quantizer scales on, when the preset needs them (default: "
                        "as hwsim sweep, 200)")
    p.add_argument("--data", default=None, help="CIFAR-10 location (default: HWSIM_DATA, ../shared/data, Keras cache)")
    p.set_defaults(func=main)


def quantize_for(net, spec, data, calibration, label, stream=sys.stderr):
    """``net`` as it must run on ``spec``: unchanged when its layers are quantized already or the spec's
    operands need no scales; else quantized by ``quant.quantize_model`` with the sweep's scale rule
    (``hwsim.sweep.scale_kind``: per-channel real scales for integer weights, ...), calibrated on
    ``calibration`` training images, saying so on ``stream``."""
    from hwsim import sweep as G
    from hwsim import sweep_exec as X
    from hwsim.graph.runner import needs_scales

    if not any(l.quant is None for l in net.mac_layers) or not (needs_scales(spec.a) or needs_scales(spec.b)):
        return net
    from hwsim.data import load_cifar10
    from quant import quantize_model

    n = X.DEFAULT_CALIBRATION if calibration is None else calibration
    if n < 1:
        raise ValueError(f"--calibration must be a positive number of training images, got {n}")
    sw, sa = G.scale_kind(spec.b.name), G.scale_kind(spec.a.name)
    needs = {"real", "pow2"} & {sw, sa}
    cal = None
    if needs:
        from hwsim.data import to_model_layout

        images, _ = load_cifar10("train", path=data)
        cal = to_model_layout(images[X.subset(len(images), min(n, len(images)))], net.input_shape)
    print(f"{label}: {spec.name} has {spec.b.name} weights / {spec.a.name} activations, which need quantizer scales: "
          f"quantizing the float model first ({sw} weight scales per channel, {sa} activation scales"
          + (f", calibrated on {len(cal)} training images" if cal is not None else "") + ")", file=stream)
    return quantize_model(net, weights=spec.b.name, activations=spec.a.name, mac=spec, per_channel=True,
                          calibration=cal, scale={"weights": sw, "activations": sa})


def main(args) -> int:
    from kernels.mac import as_spec

    from ..frontends import load_model
    from ..graph.runner import accuracy
    from ..sweep_exec import load_test_images

    spec = as_spec(args.mac)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    net = load_model(args.model)
    net = quantize_for(net, spec, args.data, args.calibration, f"hwsim run {args.model}")
    # the test split is stored class by class: a prefix would be one class, so take an even spread
    from hwsim.data import to_model_layout

    images, labels = load_test_images(args.data, args.limit)
    images = to_model_layout(images, net.input_shape)
    t0 = time.perf_counter()
    acc = accuracy(net, images, labels, mac=spec, batch_size=args.batch_size, seed=args.seed, progress=True)
    dt = time.perf_counter() - t0
    print(f"model {args.model}  mac {spec.name}  images {len(labels)}  top-1 accuracy {acc:.4f}  "
          f"({len(labels) / dt:.1f} images/s)")
    return 0
