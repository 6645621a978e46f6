"""``hwsim cost``: cycles, throughput, utilisation and energy of a model on a systolic MAC array, per
layer, against a float32 baseline on the same array (see hwsim/cost.py for the model)."""

from __future__ import annotations

import sys


def register(subparsers):
    p = subparsers.add_parser(
        "cost",
        help="hardware cost (cycles, energy) of a model on a MAC array, vs float32",
        description="Cost MODEL on a systolic MAC array (SCALE-Sim cycle model, Horowitz 45 nm energy "
        "estimates by default): per-layer cycles, utilisation and energy by component (MAC, registers, "
        "SRAM, DRAM), totals, and the same for float32 on the same array.",
    )
    p.add_argument("--model", required=True,
                   help="a zoo model name (cifar_cnn, mobilenet) or a path to a Keras model file")
    p.add_argument("--mac", default="int8_int32",
                   help="MAC spec preset (int8_int32, fp16_fp32, bf16_fp32, fp8_e4m3_fp16, fp8_e4m3_fp32, fp32); "
                   "default int8_int32")
    p.add_argument("--array", default=None, metavar="TOML",
                   help="array config TOML file (default: hwsim/configs/array_32x32_os.toml)")
    p.add_argument("--rows", type=int, default=None, help="override the array's rows")
    p.add_argument("--cols", type=int, default=None, help="override the array's columns")
    p.add_argument("--dataflow", default=None, help="override the dataflow: os, ws or is")
    p.add_argument("--clock-hz", type=float, default=None, help="override the clock (Hz)")
    p.add_argument("--dram-bytes-per-cycle", type=float, default=None,
                   help="override the DRAM bandwidth bound (bytes/cycle; 0 = none)")
    p.add_argument("--energy", default=None, metavar="TOML", help="energy table TOML file (default: Horowitz 45 nm)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the per-layer table as CSV")
    p.add_argument("--no-baseline", action="store_true", help="skip the float32 baseline")
    p.set_defaults(func=run)


def load_network(model: str):
    """The IR network for ``model``. A zoo name is built untrained from its definition
    (``hwsim.zoo.build``): the cost depends on layer shapes only, so no trained weights are needed.
    Anything else goes to the Keras importer, ``hwsim.load_model`` (a ``.keras`` / ``.h5`` path)."""
    from hwsim import zoo
    from hwsim.importer import from_keras, load_model

    if model in zoo.NAMES:
        net = from_keras(zoo.build(model))
        net.meta["source"] = f"zoo:{model} (shapes only)"
        return net
    return load_model(model)


def build_array(args):
    from hwsim.array import load_array
    from hwsim.energy import EnergyTable

    arr = load_array(args.array)
    over = {k: getattr(args, k) for k in ("rows", "cols", "dataflow", "clock_hz", "dram_bytes_per_cycle")
            if getattr(args, k) is not None}
    if args.energy:
        over["energy"] = EnergyTable.from_toml(args.energy)
    return arr.with_(**over) if over else arr


def run(args) -> int:
    from hwsim.commands import output_file
    from hwsim.cost import cost

    if args.csv:
        output_file(args.csv, "--csv")  # before the work, not after it
    arr = build_array(args)
    net = load_network(args.model)
    res = cost(net, args.mac, arr, baseline=None if args.no_baseline else "fp32")
    print(res.format_table())
    if args.csv:
        res.to_csv(args.csv)
        print(f"per-layer table written to {args.csv}", file=sys.stderr)
    return 0
