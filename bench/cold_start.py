"""Cold and warm wall time of a first ``hwsim run`` and of the default ``hwsim sweep`` (README command 1).

Cold: a fresh process with an empty Numba cache (``NUMBA_CACHE_DIR``) and an empty hwsim cache
(``HWSIM_CACHE``: decoded CIFAR-10, the network IR), as on a fresh machine. Warm: the same command again
with those caches filled (the sweep into a new output folder, so every point is computed again). Both are
measured in the same run, and the ratio cold / warm is what this prints; the cold - warm difference is
the first-run cost (mostly compiling kernels, decoding the images, importing TensorFlow once).

    python bench/cold_start.py                 # both commands (about 3 x the warm sweep time)
    python bench/cold_start.py --no-sweep      # only hwsim run
    python bench/cold_start.py --avx2          # AVX-512 hidden from every library (bench/_machine.py)

After the sweep it also prints, from the warm sweep's own per-point times (``points.csv``, ``seconds``),
each round-to-nearest point with float operands wider than 8 bits as a ratio to the mean time of the
points with 8-bit float operands (fp8 e4m3 / e5m2: their products are exact in float32, the fast paths)
into the same accumulator, on the same network and images. Operands wider than an fp16 accumulator
(fp32, bf16 into fp16) take the general float path: that ratio is the one #19 bounds at 5x.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _machine  # noqa: E402

_machine.avx2_from_argv()  # --avx2: rerun with AVX-512 hidden (the hwsim processes inherit it)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = ["run", "--model", "cifar_cnn", "--mac", "fp8_e4m3_fp16", "--limit", "100"]


def timed(args, env, log):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    dt = time.perf_counter() - t0
    log.write(f"$ hwsim {' '.join(args)}\n{res.stdout}{res.stderr}\n")
    if res.returncode != 0:
        sys.exit(f"hwsim {' '.join(args)} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return dt, res.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-sweep", action="store_true", help="measure hwsim run only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (caches, outputs, log)")
    ap.add_argument("--avx2", action="store_true",
                    help="run with AVX-512 / VNNI hidden from CPUID: the AVX2 code of every library (bench/_machine.py)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hwsim-cold-"))
    log = open(tmp / "log.txt", "w")
    rows, per_point = [], []
    try:
        cmds = [("hwsim run (100 images, fp8_e4m3_fp16)", RUN, None)]
        if not args.no_sweep:
            cmds.append(("hwsim sweep (default)", ["sweep"], "sweep"))
        for label, cmd, out in cmds:
            env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / label.split()[1] / "numba"),
                       HWSIM_CACHE=str(tmp / label.split()[1] / "cache"))
            times = []
            for phase in ("cold", "warm"):
                full = cmd + (["--out", str(tmp / f"{out}-{phase}")] if out else [])
                dt, err = timed(full, env, log)
                times.append(dt)
                noise = [l for l in err.splitlines() if any(k in l for k in ("cuInit", "cuda", "absl", "oneDNN"))]
                if noise:
                    print(f"  {label} {phase}: {len(noise)} TensorFlow/CUDA log line(s) on stderr", file=sys.stderr)
            rows.append((label, *times))
            if out:
                per_point = general_path_ratios(tmp / f"{out}-warm" / "points.csv")
    finally:
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(_machine.describe())
    print(f"{'command':<40} {'cold s':>8} {'warm s':>8} {'cold/warm':>10} {'cold-warm s':>12}")
    for label, cold, warm in rows:
        print(f"{label:<40} {cold:8.1f} {warm:8.1f} {cold / warm:10.2f} {cold - warm:12.1f}")
    warm_sweep = [w for label, _, w in rows if label.startswith("hwsim sweep")]
    if warm_sweep:
        print(f"warm default sweep: {warm_sweep[0]:.1f} s (target <= 120 s: {'PASS' if warm_sweep[0] <= 120 else 'FAIL'})")
    if per_point:
        print("\nwarm sweep, round to nearest, seconds per point against the 8-bit float operand points "
              "(products exact in float32) into the same accumulator:")
        for name, sec, ref, general in per_point:
            target = f"  general float path (target <= 5x: {'PASS' if sec <= 5 * ref else 'FAIL'})" if general else ""
            print(f"  {name:<40} {sec:7.3f} s = {sec / ref:5.2f}x {ref:.3f} s{target}")
    if args.keep:
        print(f"kept: {tmp}")


def general_path_ratios(points_csv) -> list[tuple[str, float, float, bool]]:
    """(point, seconds, mean seconds of the fp8-operand points into the same accumulator, general path?) for
    each round-to-nearest point of the sweep whose operands are floats wider than 8 bits, from the sweep's
    own per-point times. General path: an operand wider than the accumulator, with more significand bits or
    a wider exponent range (fp32 or bf16 into fp16), as #19 describes it."""
    from kernels.formats import FloatFormat, parse_format

    with open(points_csv, newline="") as f:
        pts = [r for r in csv.DictReader(f) if r["rounding"] == "nearest"]
    fmt = {n: parse_format(n) for r in pts for n in (r["weights"], r["activations"], r["accum"])}
    floats = [r for r in pts if all(isinstance(fmt[r[k]], FloatFormat) for k in ("weights", "activations"))]
    fp8 = {}
    for r in floats:
        if fmt[r["weights"]].bits == 8 and fmt[r["activations"]].bits == 8:
            fp8.setdefault(r["accum"], []).append(float(r["seconds"]))
    out = []
    for r in floats:
        w, a, acc = fmt[r["weights"]], fmt[r["activations"]], fmt[r["accum"]]
        if w.bits == 8 and a.bits == 8 or r["accum"] not in fp8 or not isinstance(acc, FloatFormat):
            continue
        general = any(f.man > acc.man or f.emax > acc.emax or f.min_subnormal < acc.min_subnormal for f in (w, a))
        ref = sum(fp8[r["accum"]]) / len(fp8[r["accum"]])
        out.append((f"{r['weights']} x {r['activations']} -> {r['accum']}", float(r["seconds"]), ref, general))
    return out


if __name__ == "__main__":
    main()
