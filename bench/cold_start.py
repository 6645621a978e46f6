"""Cold and warm wall time of a first ``hwsim run`` and of the default ``hwsim sweep`` (README command 1).

Cold: a fresh process with an empty Numba cache (``NUMBA_CACHE_DIR``) and an empty hwsim cache
(``HWSIM_CACHE``: decoded CIFAR-10, the network IR), as on a fresh machine. Warm: the same command again
with those caches filled (the sweep into a new output folder, so every point is computed again). Both are
measured in the same run, and the ratio cold / warm is what this prints; the cold - warm difference is
the first-run cost (mostly compiling kernels, decoding the images, importing TensorFlow once).

    python bench/cold_start.py                 # both commands (about 3 x the warm sweep time)
    python bench/cold_start.py --no-sweep      # only hwsim run
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "--model", "cifar_cnn", "--mac", "fp8_e4m3_fp16", "--limit", "100"]


def cpu_flags() -> str:
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    keep = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni")
    return " ".join(f for f in keep if f in flags)


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
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hwsim-cold-"))
    log = open(tmp / "log.txt", "w")
    rows = []
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
    finally:
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    print(f"{'command':<40} {'cold s':>8} {'warm s':>8} {'cold/warm':>10} {'cold-warm s':>12}")
    for label, cold, warm in rows:
        print(f"{label:<40} {cold:8.1f} {warm:8.1f} {cold / warm:10.2f} {cold - warm:12.1f}")
    if args.keep:
        print(f"kept: {tmp}")


if __name__ == "__main__":
    main()
