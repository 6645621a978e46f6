"""``hwsim report DIR``: re-render a sweep's results CSV/JSON, plots and Markdown summary from its
record of points (``DIR/points.csv``)."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("report", help="re-render a sweep's plots and summary from its CSV",
                       description=__doc__.replace("``", ""))
    p.add_argument("dir", metavar="DIR", help="a directory written by `hwsim sweep`")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from hwsim import report
    from hwsim import sweep_exec as X

    d = Path(args.dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d} is not a directory")
    settings = X.load_settings(d)
    rows = X.render_results(d, settings)
    print(report.text_table(rows))
    print(f"\nwrote {d / X.RESULTS_CSV}, {d / X.RESULTS_JSON}, {d / report.SUMMARY_FILE} and plots")
    return 0
