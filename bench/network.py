"""Whole-network throughput: CIFAR-10 test images through ``cifar_cnn`` on the emulated MAC array,
each MAC spec as a ratio to Keras ``model.predict`` on the same images, measured in the same run.

    python bench/network.py [--model cifar_cnn] [--limit 10000] [--specs fp32,bf16_fp32,fp8_e4m3_fp16]
    python bench/network.py --model mobilenet_v2_224 --limit 200 --batch-size 50

``--model mobilenet_v2_224`` is keras.applications' MobileNetV2 at 224 x 224 with random weights (the CIFAR
images resized; its accuracy is meaningless, the throughput is the figure).

Keras and the specs run in ``--repeat`` interleaved rounds (default 3), and the best time of each is kept.
Prints images/s, MAC/s, the ratio to Keras, top-1 accuracy, and for the fp32 spec the agreement with Keras
(argmax equality and the largest logit difference), so the timing and the fidelity check come from the same
run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402

_machine.avx2_from_argv()  # --avx2: rerun with AVX-512 hidden, before numpy / TensorFlow / Numba load
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as kernels/__init__.py; before numpy loads

import numpy as np  # noqa: E402


MNV2_224 = "mobilenet_v2_224"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_cnn", help=f"zoo name, .keras file, or {MNV2_224!r}")
    ap.add_argument("--limit", type=int, default=10000, help="test images (default: the full test set)")
    ap.add_argument("--specs", default="fp32,bf16_fp32,fp8_e4m3_fp16")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--avx2", action="store_true",
                    help="run with AVX-512 / VNNI hidden from CPUID: the AVX2 code of every library (bench/_machine.py)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved rounds of timed runs, Keras then each spec (the best of each is kept; default 3)")
    args = ap.parse_args(argv)

    import numba

    import hwsim
    from hwsim import zoo
    from hwsim.commands.run import quantize_for
    from kernels.mac import as_spec
    from quant import tfimport

    keras = tfimport.keras()

    images, labels = hwsim.load_cifar10("test")
    images, labels = images[: args.limit], labels[: args.limit]
    if args.model == MNV2_224:
        # keras.applications' MobileNetV2 at 224 x 224 with random weights (no download): the CIFAR images
        # resized, so the figures are throughput only (its top-1 on CIFAR-10 labels means nothing)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=10)
        images = np.asarray(tfimport.tensorflow().image.resize(images.astype(np.float32), (224, 224)))
        net = hwsim.load_model(model)
    else:
        model = zoo.load_keras(args.model) if args.model in zoo.NAMES else keras.models.load_model(args.model)
        net = hwsim.load_model(args.model)
    macs = sum(_layer_macs(net, l) for l in net.mac_layers)
    x = images.astype(np.float32)

    specs = args.specs.split(",")
    # integer / narrow-float presets run the quantized network (calibrated on training images, as
    # `hwsim run` and `hwsim sweep` do); quantizing is not timed
    qnets = {name: quantize_for(net, as_spec(name), None, None, f"bench {name}") for name in specs}
    model.predict(x[:64], verbose=0)  # warm-up
    for name in specs:
        hwsim.run(qnets[name], images[:8], mac=name)  # compile / warm the kernels
    # the runs interleaved, Keras and then each spec in every round, and the best of each kept: this VM's speed
    # drifts by tens of percent over minutes, and a slow spell then slows both sides of a ratio, not one
    t_keras, dt, outs = np.inf, dict.fromkeys(specs, np.inf), {}
    for _ in range(args.repeat):  # the first full-size run also pays the first touch of its memory
        t0 = time.perf_counter()
        ref = model.predict(x, batch_size=args.batch_size, verbose=0)
        t_keras = min(t_keras, time.perf_counter() - t0)
        for name in specs:
            t0 = time.perf_counter()
            outs[name] = hwsim.run(qnets[name], images, mac=name, batch_size=args.batch_size, seed=0)
            dt[name] = min(dt[name], time.perf_counter() - t0)
    # top-1 on CIFAR-10 labels; meaningless (n/a) for the random-weight MobileNetV2
    top1 = (lambda y: "    n/a") if args.model == MNV2_224 else (lambda y: f"{float((y.argmax(1) == labels).mean()):7.4f}")
    print(f"hwsim network bench: {args.model}, {len(labels)} CIFAR-10 test images, {macs / 1e6:.1f} M MACs/image, "
          f"numba {numba.get_num_threads()} threads, best of {args.repeat} interleaved rounds\n{_machine.describe()}")
    print(f"{'spec':<16} {'img/s':>9} {'GMAC/s':>8} {'x keras':>8} {'top-1':>7}  notes")
    print(f"{'keras predict':<16} {len(x) / t_keras:9.1f} {macs * len(x) / t_keras / 1e9:8.2f} {1.0:8.3f} "
          f"{top1(ref)}")
    for name in specs:
        out = outs[name]
        note = ""
        if name == "fp32":
            same = float((out.argmax(1) == ref.argmax(1)).mean())
            note = f"argmax equal to keras on {same:.4%} of images, max |logit diff| {np.abs(out - ref).max():.2e}"
        print(f"{name:<16} {len(x) / dt[name]:9.1f} {macs * len(x) / dt[name] / 1e9:8.2f} {t_keras / dt[name]:8.3f} "
              f"{top1(out)}  {note}")
    return 0


def _layer_macs(net, layer) -> int:
    out = net.shapes[layer.name]
    if layer.kind == "conv2d":
        kh, kw, ci, _ = layer.kernel.shape
        return int(np.prod(out)) * kh * kw * ci
    if layer.kind == "depthwise":
        kh, kw = layer.kernel.shape[:2]
        return int(np.prod(out)) * kh * kw
    return int(np.prod(out)) * layer.kernel.shape[0]


if __name__ == "__main__":
    raise SystemExit(main())
