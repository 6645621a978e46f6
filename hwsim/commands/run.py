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
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="stochastic rounding seed")
    p.add_argument("--data", default=None, help="CIFAR-10 location (default: HWSIM_DATA, ../shared/data, Keras cache)")
    p.set_defaults(func=main)


def main(args) -> int:
    from kernels.mac import as_spec

    from ..data import load_cifar10
    from ..importer import load_model
    from ..runner import accuracy

    spec = as_spec(args.mac)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of images, got {args.limit}")
    net = load_model(args.model)
    images, labels = load_cifar10("test", path=args.data)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    t0 = time.perf_counter()
    acc = accuracy(net, images, labels, mac=spec, batch_size=args.batch_size, seed=args.seed, progress=True)
    dt = time.perf_counter() - t0
    print(f"model {args.model}  mac {spec.name}  images {len(labels)}  top-1 accuracy {acc:.4f}  "
          f"({len(labels) / dt:.1f} images/s)")
    return 0
