"""Regenerate tests/golden/sweep_small.csv and sweep_small_points.csv, deliberately.

Run only when a change in numerics is intended (kernels, quantizer, runner, cost model, the sweep's
rules), read the diff of the two files, and explain it in the commit message:

    python tests/golden/make_golden.py && git diff tests/golden/

The test (tests/test_sweep.py::test_golden_sweep) never writes these files.
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/

from hwsim import sweep_exec as X  # noqa: E402
from test_sweep import GOLDEN, GOLDEN_ARGS, _points_sans_time  # noqa: E402


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "golden"
        X.run_sweep(X.make_settings(**GOLDEN_ARGS), out, serial=True)
        (GOLDEN / "sweep_small.csv").write_text((out / X.RESULTS_CSV).read_text())
        (GOLDEN / "sweep_small_points.csv").write_text(_points_sans_time(out))
    print("wrote", GOLDEN / "sweep_small.csv", GOLDEN / "sweep_small_points.csv")


if __name__ == "__main__":
    main()
