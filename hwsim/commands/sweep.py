"""``hwsim sweep``: accuracy, throughput, area and energy over a grid of number formats, accumulators and
rounding modes ("how low can I go?"), resumable, in parallel on Dask."""

from __future__ import annotations

import sys

from hwsim.commands import limit_arg


def register(sub):
    from hwsim import sweep as G
    from hwsim import sweep_exec as X

    p = sub.add_parser(
        "sweep", help="accuracy/throughput/energy over formats, accumulators and rounding modes (resumable, Dask)",
        description="Evaluate every point (weight format, activation format, accumulator format, rounding, "
        "seed) of a grid on CIFAR-10 test images and write DIR/results.csv + results.json (one row per "
        "configuration: accuracy mean/std over seeds, area, cycles, inferences/s, energy, ratios to float32), plots and "
        "summary.md. Points already in DIR are not recomputed. With no options: the default sweep of "
        f"cifar_cnn on {G.DEFAULT_LIMIT} images.",
        epilog="Lists are comma-separated: format names (`hwsim formats`), families (fp8, fp6, fp4, mx), "
        "ranges (int2..int8) and, in --formats, weight:activation pairs (int4:int8).")
    p.add_argument("--model", default=G.DEFAULT_MODEL, help="zoo name (cifar_cnn, mobilenet) or a model file: .keras, .h5, or a float .tflite")
    p.add_argument("--formats", default=G.DEFAULT_FORMATS, metavar="LIST",
                   help=f"operand formats (default {G.DEFAULT_FORMATS})")
    p.add_argument("--accum", default=G.DEFAULT_ACCUM, metavar="LIST",
                   help=f"accumulator formats; each operand format uses those it pairs with (default {G.DEFAULT_ACCUM})")
    p.add_argument("--rounding", default=G.DEFAULT_ROUNDING, metavar="LIST",
                   help=f"rounding modes of products and sums (default {G.DEFAULT_ROUNDING})")
    p.add_argument("--seeds", type=int, default=G.DEFAULT_SEEDS, metavar="N",
                   help=f"seeds per stochastic configuration (default {G.DEFAULT_SEEDS})")
    p.add_argument("--limit", type=limit_arg, default=G.DEFAULT_LIMIT, metavar="N",
                   help="N test images spread evenly over the test set (image i*10000/N, the same number "
                   f"from every class), or 'all' (default {G.DEFAULT_LIMIT})")
    p.add_argument("--array", default=None, metavar="TOML",
                   help="array config (default: hwsim/configs/array_32x32_os.toml, 32x32 output stationary, LPDDR4X "
                   "bandwidth); costs are derived from the recorded points, so a rerun with another array re-costs")
    p.add_argument("--pe", default=None, choices=("fixed", "bit_fusion", "bit_serial"),
                   help="override the array's PE kind (hwsim/pe.py); bit_fusion and bit_serial run integer formats only")
    p.add_argument("--serial-operands", default=None, choices=("a", "ab"),
                   help="bit_serial PEs: a = activations serial (Stripes), ab = both (Loom)")
    p.add_argument("--iso-area", action="store_true",
                   help="cost each configuration on an array of the float32 array's silicon area (more PEs for "
                   "narrow formats): throughput at equal area")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default sweeps/MODEL)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="single-threaded worker processes of the local Dask cluster (default 2)")
    p.add_argument("--serial", action="store_true", help="no Dask: evaluate points in this process, in order")
    p.add_argument("--calibration", type=int, default=X.DEFAULT_CALIBRATION, metavar="N",
                   help=f"training images for quantizer calibration (default {X.DEFAULT_CALIBRATION})")
    p.add_argument("--scale", default="auto", choices=G.SCALE_MODES,
                   help="quantizer scales: auto (integers: calibrated real scales; floats with max >= 128: "
                   "unscaled; narrower floats: power-of-two; MX: block scales), or real / pow2 / none for all")
    p.add_argument("--data", default=None, help="CIFAR-10 location (default: HWSIM_DATA, ../shared/data, Keras cache)")
    p.add_argument("--batch-size", type=int, default=X.DEFAULT_BATCH, help="images per batch (speed only)")
    p.add_argument("--max-points", type=int, default=None, metavar="N",
                   help="stop after evaluating N points (the rest stay for a rerun)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from hwsim import report
    from hwsim import sweep_exec as X

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.max_points is not None and args.max_points < 0:
        raise ValueError(f"--max-points must be >= 0, got {args.max_points}")
    settings = X.make_settings(model=args.model, formats=args.formats, accum=args.accum, rounding=args.rounding,
                               seeds=args.seeds, limit=args.limit, array=args.array, data=args.data,
                               calibration=args.calibration, scale=args.scale, pe=args.pe,
                               serial_operands=args.serial_operands, iso_area=args.iso_area)
    out = Path(args.out) if args.out else Path("sweeps") / Path(args.model).stem
    grid = X.grid_of(settings)
    where = "this process" if args.serial else (args.scheduler or f"a local Dask cluster of {args.workers} workers")
    print(f"sweep {Path(settings['model']).stem}: {len(grid.configs)} configurations, {len(grid.points)} points "
          f"x {settings['images']} images, on {where}; output {out}", file=sys.stderr)
    try:
        run = X.run_sweep(settings, out, scheduler=args.scheduler, workers=args.workers, serial=args.serial,
                          progress=not args.no_progress, max_points=args.max_points, batch_size=args.batch_size)
    except KeyboardInterrupt:
        done = len(X.read_points(out))
        print(f"\ninterrupted: {done} of {len(grid.points)} points are saved in {out / X.POINTS_FILE}; "
              "rerun the same command to finish", file=sys.stderr)
        return 130
    print(report.text_table(run.results))
    state = "complete" if run.complete else f"partial ({run.already + run.evaluated} of {run.total} points)"
    print(f"\n{run.evaluated} points evaluated, {run.already} already in {out}; sweep {state}.\n"
          f"results: {out / X.RESULTS_CSV}, {out / X.RESULTS_JSON}, {out / report.SUMMARY_FILE} and plots")
    return 0
