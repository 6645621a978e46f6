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
                   help="a zoo model name (cifar_cnn, mobilenet) or a model file (.keras, .h5, .tflite)")
    p.add_argument("--mac", default="int8_int32",
                   help="MAC spec preset (int8_int32, fp16_fp32, bf16_fp32, fp8_e4m3_fp16, fp8_e4m3_fp32, fp32); "
                   "default int8_int32")
    p.add_argument("--operands", default=None, metavar="W[:A]",
                   help="instead of --mac: the weight and activation formats (as in hwsim sweep --formats: "
                   "int4:int8 = 4-bit weights, 8-bit activations; one name = both), with --accum and --rounding")
    p.add_argument("--accum", default=None, help="with --operands: the accumulator format (default int32 for "
                   "integer operands, fp32 otherwise)")
    p.add_argument("--rounding", default="nearest", help="with --operands: the rounding mode (default nearest)")
    p.add_argument("--array", default=None, metavar="TOML",
                   help="array config TOML file (default: hwsim/configs/array_32x32_os.toml)")
    p.add_argument("--rows", type=int, default=None, help="override the array's rows")
    p.add_argument("--cols", type=int, default=None, help="override the array's columns")
    p.add_argument("--dataflow", default=None, help="override the dataflow: os, ws or is")
    p.add_argument("--arrays", type=int, default=None, help="override the number of identical arrays (scale-out)")
    p.add_argument("--clock-hz", type=float, default=None, help="override the clock (Hz)")
    p.add_argument("--dram-bytes-per-cycle", type=float, default=None,
                   help="override the DRAM bandwidth bound (bytes/cycle; 0 = none: SCALE-Sim's stall-free cycles)")
    p.add_argument("--pe", default=None, choices=("fixed", "bit_fusion", "bit_serial"),
                   help="override the PE kind (hwsim/pe.py): fixed (bit-parallel), bit_fusion (Bit Fusion's "
                   "fusible 8-bit units), bit_serial (Stripes / Loom)")
    p.add_argument("--serial-operands", default=None, choices=("a", "ab"),
                   help="bit_serial PEs: a = activations serial (Stripes), ab = both operands serial (Loom)")
    p.add_argument("--iso-area", action="store_true",
                   help="size the array for the MAC to the area of the float32 baseline array")
    p.add_argument("--energy", default=None, metavar="TOML", help="energy table TOML file (default: Horowitz 45 nm)")
    p.add_argument("--area", default=None, metavar="TOML", help="area table TOML file (default: hwsim/configs/area45.toml)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the per-layer table as CSV")
    p.add_argument("--no-baseline", action="store_true", help="skip the float32 baseline")
    p.set_defaults(func=run)


def load_network(model: str):
    """The IR network for ``model``. A zoo name is built untrained from its definition
    (``hwsim.zoo.build``): the cost depends on layer shapes only, so no trained weights are needed.
    Anything else goes to the Keras importer, ``hwsim.load_model`` (a ``.keras`` / ``.h5`` path)."""
    from hwsim import zoo
    from hwsim.frontends import load_model
    from hwsim.frontends.keras import from_keras

    if model in zoo.NAMES:
        net = from_keras(zoo.build(model))
        net.meta["source"] = f"zoo:{model} (shapes only)"
        return net
    return load_model(model)


def build_array(args):
    from hwsim.array import load_array
    from hwsim.energy import EnergyTable

    arr = load_array(args.array)
    from hwsim.area import AreaTable

    over = {k: getattr(args, k) for k in ("rows", "cols", "arrays", "dataflow", "clock_hz", "dram_bytes_per_cycle",
                                          "pe", "serial_operands") if getattr(args, k, None) is not None}
    if getattr(args, "energy", None):
        over["energy"] = EnergyTable.from_toml(args.energy)
    if getattr(args, "area", None):
        over["area"] = AreaTable.from_toml(args.area)
    return arr.with_(**over) if over else arr


def mac_from_args(args):
    """The MAC spec: ``--operands W[:A]`` with ``--accum`` / ``--rounding`` (the sweep's rule,
    :func:`hwsim.sweep.mac_spec`), else the ``--mac`` preset."""
    if args.operands is None:
        if args.accum is not None:
            raise ValueError("--accum goes with --operands (a --mac preset names its own accumulator)")
        return args.mac
    from hwsim import sweep as G

    toks = G.split_list(args.operands)
    if len(toks) != 1:
        raise ValueError(f"--operands takes one W[:A] pair, got {args.operands!r}")
    w, _, a = toks[0].partition(":")
    w = G.parse_formats(w, "--operands")[0]
    a = G.parse_formats(a or w, "--operands")[0]
    acc = args.accum or ("int32" if G.operand_kind(w) == G.operand_kind(a) == "int" else "fp32")
    acc = G.parse_formats(acc, "--accum")[0]
    if args.rounding not in G.ROUNDINGS:
        raise ValueError(f"--rounding: unknown mode {args.rounding!r}; valid: {', '.join(G.ROUNDINGS)}")
    return G.mac_spec(w, a, acc, args.rounding)


def run(args) -> int:
    from hwsim.files import output_file
    from hwsim.cost import cost

    if args.csv:
        output_file(args.csv, "--csv")  # before the work, not after it
    arr = build_array(args)
    net = load_network(args.model)
    if args.iso_area and args.no_baseline:
        raise ValueError("--iso-area sizes the array to the float32 baseline's area; it cannot go with --no-baseline")
    res = cost(net, mac_from_args(args), arr, baseline=None if args.no_baseline else "fp32", iso_area=args.iso_area)
    print(res.format_table())
    if args.csv:
        res.to_csv(args.csv)
        print(f"per-layer table written to {args.csv}", file=sys.stderr)
    return 0
