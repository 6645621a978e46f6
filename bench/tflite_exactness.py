"""TF-Lite bit-exactness of the emulator on the zoo models.

For each zoo model: convert the trained Keras model to a full-integer TF-Lite model
(:func:`hwsim.frontends.tflite.convert_keras`, calibrated on CIFAR-10 *train* images), import it with
:func:`hwsim.frontends.tflite.load_tflite`, run N CIFAR-10 *test* images through ``hwsim.run`` and through
``tf.lite.Interpreter`` (one image per ``invoke``, as on a device), and print the share of output
values that are bit-identical and the share of images whose top-1 class agrees -- for the
interpreter's default arithmetic (XNNPACK delegate, ``--kernels xnnpack``) and its reference
kernels (``--kernels reference``).

    python bench/tflite_exactness.py                  # both zoo models, 1,000 images, both kernels
    python bench/tflite_exactness.py --untrained      # the zoo architectures with random weights
    python bench/tflite_exactness.py --models mobilenet --n 200 --kernels xnnpack

Exit status 1 if any agreement is below the acceptance bar (99.9 % of values, 99.9 % of top-1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

BAR = 0.999


def _perturb_bn(model, rng):
    """Random batch-norm statistics for an untrained model, so that the folded weights and the
    activation ranges are not trivial."""
    from keras import layers

    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, mu.shape), rng.uniform(0.5, 1.5, var.shape)])


def interpreter_outputs(it, images):
    i = it.get_input_details()[0]
    o = it.get_output_details()[0]
    out = []
    for k in range(len(images)):
        it.set_tensor(i["index"], images[k:k + 1].astype(i["dtype"]))
        it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(out)


def compare(path, images, kernels_):
    """(values equal, top-1 agree, emulator seconds, interpreter seconds, emulator outputs)."""
    import hwsim
    from hwsim.frontends import tflite

    t0 = time.perf_counter()
    net = tflite.load_tflite(path, kernels=kernels_)
    emu = hwsim.run(net, images, batch_size=100)
    t1 = time.perf_counter()
    ref = interpreter_outputs(tflite.interpreter(path, kernels_), images.astype(np.float32))
    t2 = time.perf_counter()
    assert emu.shape == ref.shape, (emu.shape, ref.shape)
    eq = float((emu == ref).mean())
    top1 = float((emu.reshape(len(emu), -1).argmax(1) == ref.reshape(len(ref), -1).argmax(1)).mean())
    return eq, top1, t1 - t0, t2 - t1, emu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["cifar_cnn", "mobilenet"])
    ap.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--calib", type=int, default=500, help="representative train images (default 500)")
    ap.add_argument("--kernels", nargs="+", default=["xnnpack", "reference"], choices=["xnnpack", "reference"])
    ap.add_argument("--untrained", action="store_true", help="use the zoo architectures with random weights")
    ap.add_argument("--keras-dir", metavar="DIR", help="load DIR/{name}.keras instead of the zoo's trained files")
    ap.add_argument("--keep", metavar="DIR", help="keep the .tflite files in DIR")
    args = ap.parse_args(argv)

    from hwsim import zoo
    from hwsim.data import load_cifar10
    from hwsim.frontends import tflite

    test_x, test_y = load_cifar10("test")
    train_x, _ = load_cifar10("train")
    images = test_x[:args.n]
    labels = test_y[:args.n]
    calib = train_x[np.random.default_rng(0).permutation(len(train_x))[:args.calib]]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(args.keep) if args.keep else Path(tmp)
        for name in args.models:
            if args.untrained:
                import keras

                keras.utils.set_random_seed(0)
                model = zoo.build(name)
                _perturb_bn(model, np.random.default_rng(1))
                what = f"{name} (untrained)"
            elif args.keras_dir:
                import keras

                model = keras.models.load_model(Path(args.keras_dir) / f"{name}.keras", compile=False)
                what = f"{name} ({args.keras_dir})"
            else:
                try:
                    model = zoo.load_keras(name)
                except FileNotFoundError as e:
                    print(f"{name}: {e}")
                    ok = False
                    continue
                what = name
            path = tflite.convert_keras(model, calib, outdir / f"{name}.tflite")
            for k in args.kernels:
                eq, top1, te, ti, out = compare(path, images, k)
                net_acc = "" if args.untrained else f"  int8 top-1 accuracy {float((out.argmax(1) == labels).mean()):.4f}"
                flag = "" if (eq >= BAR and top1 >= BAR) else "  BELOW 99.9 %"
                ok &= not flag
                print(f"{what:24s} kernels={k:9s} images={len(images)}  output values equal {eq * 100:8.4f} %  "
                      f"top-1 agree {top1 * 100:8.4f} %  (emulator {te:.1f} s, interpreter {ti:.1f} s){net_acc}{flag}",
                      flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
