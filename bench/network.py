"""Whole-network throughput: CIFAR-10 test images through ``cifar_cnn`` on the emulated MAC array,
each MAC spec as a ratio to Keras ``model.predict`` on the same images, measured in the same run.

    python bench/network.py [--model cifar_cnn] [--limit 10000] [--specs fp32,bf16_fp32,fp8_e4m3_fp16]

Prints images/s, MAC/s, the ratio to Keras, top-1 accuracy, and for the fp32 spec the agreement with
Keras (argmax equality and the largest logit difference), so the timing and the fidelity check come
from the same run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as kernels/__init__.py; before numpy loads

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_cnn")
    ap.add_argument("--limit", type=int, default=10000, help="test images (default: the full test set)")
    ap.add_argument("--specs", default="fp32,bf16_fp32,fp8_e4m3_fp16")
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args(argv)

    import _machine
    import numba

    import hwsim
    from hwsim import zoo
    from hwsim.commands.run import quantize_for
    from kernels.mac import as_spec
    from quant import tfimport

    keras = tfimport.keras()

    images, labels = hwsim.load_cifar10("test")
    images, labels = images[: args.limit], labels[: args.limit]
    model = zoo.load_keras(args.model) if args.model in zoo.NAMES else keras.models.load_model(args.model)
    net = hwsim.load_model(args.model)
    macs = sum(_layer_macs(net, l) for l in net.mac_layers)
    x = images.astype(np.float32)

    model.predict(x[:64], verbose=0)  # warm-up
    t0 = time.perf_counter()
    ref = model.predict(x, batch_size=args.batch_size, verbose=0)
    t_keras = time.perf_counter() - t0
    acc_keras = float((ref.argmax(1) == labels).mean())
    print(f"hwsim network bench: {args.model}, {len(labels)} CIFAR-10 test images, {macs / 1e6:.1f} M MACs/image, "
          f"numba {numba.get_num_threads()} threads\n{_machine.describe()}")
    print(f"{'spec':<16} {'img/s':>9} {'GMAC/s':>8} {'x keras':>8} {'top-1':>7}  notes")
    print(f"{'keras predict':<16} {len(x) / t_keras:9.1f} {macs * len(x) / t_keras / 1e9:8.2f} {1.0:8.3f} "
          f"{acc_keras:7.4f}")
    for name in args.specs.split(","):
        # integer / narrow-float presets run the quantized network (calibrated on training images, as
        # `hwsim run` and `hwsim sweep` do); quantizing is not timed
        qnet = quantize_for(net, as_spec(name), None, None, f"bench {name}")
        hwsim.run(qnet, images[:8], mac=name)  # compile / warm the kernels
        t0 = time.perf_counter()
        out = hwsim.run(qnet, images, mac=name, batch_size=args.batch_size, seed=0)
        dt = time.perf_counter() - t0
        acc = float((out.argmax(1) == labels).mean())
        note = ""
        if name == "fp32":
            same = float((out.argmax(1) == ref.argmax(1)).mean())
            note = f"argmax equal to keras on {same:.4%} of images, max |logit diff| {np.abs(out - ref).max():.2e}"
        print(f"{name:<16} {len(x) / dt:9.1f} {macs * len(x) / dt / 1e9:8.2f} {t_keras / dt:8.3f} {acc:7.4f}  {note}")
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
