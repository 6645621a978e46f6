"""Print the Markdown tables of results/README.md from the committed sweeps (results/MODEL/SWEEP/).

    python results/tables.py            # paste the output into results/README.md
"""

import json
from pathlib import Path

from hwsim import report
from hwsim import sweep_exec as X

ROOT = Path(__file__).resolve().parent


def main():
    for model_dir in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        for sweep in ("formats", "accumulators"):
            d = model_dir / sweep
            if not (d / X.SETTINGS_FILE).exists():
                continue
            st = json.loads((d / X.SETTINGS_FILE).read_text())
            rows = X.aggregate(st, X.read_points(d))
            n = len(X.grid_of(st).configs)
            print(f"### {model_dir.name}: {sweep} ({st['images']:,} test images; {len(rows)} of {n} configurations)\n")
            print(report.markdown_table(rows))
            print()


if __name__ == "__main__":
    main()
