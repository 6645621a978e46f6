"""Recompute committed sweep points with the installed (locked) versions and record the result in each
sweep folder's versions.json.

The sweeps in results/ were made before hwsim recorded versions. This script reruns the N cheapest points
of each (by their recorded ``seconds``), on the sweep's own settings and data, and compares the
``outputs_sha256`` digest of every network output with the committed one. Points that match are listed
as reproduced under the installed versions; a mismatch is reported and the script exits with status 1.

    python results/verify_versions.py results/cifar_cnn/formats results/mobilenet/formats --points 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hwsim import sweep as G
from hwsim import sweep_exec as X


def verify(path: Path, n: int) -> tuple[list[str], list[str]]:
    settings = X.load_settings(path)
    done = X.read_points(path)
    todo = sorted(done.values(), key=lambda r: float(r["seconds"]))[:n]
    ok, bad = [], []
    for row in todo:
        point = G.Point(row["weights"], row["activations"], row["accum"], row["rounding"], int(row["seed"]))
        got = X.evaluate(settings, point)
        label = "/".join(str(v) for v in point.key)
        (ok if got["outputs_sha256"] == row["outputs_sha256"] else bad).append(label)
        print(f"{path}: {label}: {'reproduced' if label in ok else 'DIFFERS'} "
              f"({got['outputs_sha256']} vs {row['outputs_sha256']}, {got['seconds']:.0f} s)", file=sys.stderr)
    return ok, bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--points", type=int, default=1, help="cheapest points to recompute per sweep (default 1)")
    args = ap.parse_args(argv)
    failed = False
    for d in args.dirs:
        ok, bad = verify(d, args.points)
        failed |= bool(bad)
        f = d / X.VERSIONS_FILE
        envs = json.loads(f.read_text())["environments"] if f.exists() else []
        envs = [e for e in envs if e.get("versions") != X.environment_versions()]
        envs.append({"versions": X.environment_versions(), "points": 0, "reproduced": ok, "differs": bad,
                     "note": "the committed points were computed before versions were recorded; the points listed "
                             "under 'reproduced' were recomputed with these versions and gave bit-identical network "
                             "outputs (outputs_sha256)"})
        f.write_text(json.dumps({"environments": envs}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
