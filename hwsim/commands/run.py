"""``hwsim run``: top-1 accuracy of a model on CIFAR-10 test images with one MAC spec."""

from __future__ import annotations

import time


def register(sub):
    p = sub.add_parser("run", help="run a model on the emulated MAC array and print its accuracy",
                       description="Run a model (zoo name or .keras/.h5 file) on CIFAR-10 test images "
                                   "through the emulated MAC array and print the top-1 accuracy.")
    p.add_argument("--model", default="cifar_cnn", help="zoo name (cifar_cnn, mobilenet) or a .keras/.h5 path")
    p.add_argument("--mac", default="fp32", help="MAC preset (int8_int32, fp16_fp32, bf16_fp32, fp8_e4m3_fp16, "
                                                 "fp8_e4m3_fp32, fp32, ...)")
    p.add_argument("--limit", type=int, default=None,
                   help="use N test images spread evenly over the test set (the same number from every class)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="stochastic rounding seed")
    p.add_argument("--data", default=None, help="CIFAR-10 location (default: HWSIM_DATA, ../shared/data, Keras cache)")
    p.set_defaults(func=main)


def main(args) -> int:
    from kernels.mac import as_spec

    from ..importer import load_model
    from ..runner import accuracy
    from ..sweep_exec import load_test_images

    spec = as_spec(args.mac)
    net = load_model(args.model)
    # the test split is stored class by class: a prefix would be one class, so take an even spread
    images, labels = load_test_images(args.data, args.limit)
    t0 = time.perf_counter()
    acc = accuracy(net, images, labels, mac=spec, batch_size=args.batch_size, seed=args.seed, progress=True)
    dt = time.perf_counter() - t0
    print(f"model {args.model}  mac {spec.name}  images {len(labels)}  top-1 accuracy {acc:.4f}  "
          f"({len(labels) / dt:.1f} images/s)")
    return 0
