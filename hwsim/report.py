"""Text of a bit-width sweep: the Markdown summary (``summary.md``) and the terminal table."""

from __future__ import annotations

from pathlib import Path

from . import plots
from . import sweep as G

SUMMARY_FILE = "summary.md"


def _acc(r) -> str:
    s = f"{100 * r['accuracy_mean']:.2f}"
    if r["accuracy_std"] is not None:
        s += f" ± {100 * r['accuracy_std']:.2f}"
    return s


def _delta(r) -> str:
    return "" if r["delta_vs_fp32"] is None else f"{100 * r['delta_vs_fp32']:+.2f}"


def table_rows(rows):
    """Display cells per row: operands, accumulator, rounding, seeds, accuracy, delta, array, area, throughput,
    energy (each with its ratio to float32), front."""
    out = []
    for r in rows:
        out.append([G.pair_label(r["weights"], r["activations"]), G.short_name(r["accum"]), r["rounding"],
                    str(r["seeds"]), _acc(r), _delta(r), r["array"], f"{r['area_mm2']:.2f}", f"{r['area_ratio']:.3f}",
                    f"{r['inferences_per_s']:,.0f}", f"{r['throughput_ratio']:.2f}",
                    f"{r['energy_pj'] / 1e6:.3f}", f"{r['energy_ratio']:.3f}", "*" if r["pareto"] else ""])
    return out


HEADERS = ["operands (W/A)", "accumulator", "rounding", "seeds", "top-1 acc. %", "Δ vs fp32 (pp)", "array",
           "area mm²", "area ×fp32", "inferences/s", "throughput ×fp32", "energy µJ", "energy ×fp32", "Pareto"]


def hardware_line(settings) -> str:
    """One line saying what the configurations are costed on."""
    a = settings["array"]
    if "rows" not in a:  # settings of an hwsim that recorded only the array's file
        return f"{a.get('name', '?')} (`{a.get('path', '?')}`)"
    bw = f"{a['dram_bytes_per_cycle']:g} B/cycle DRAM" if a.get("dram_bytes_per_cycle") else "no DRAM bandwidth bound"
    pe = a["pe"] + (f" ({a['serial_operands']} serial)" if a["pe"] == "bit_serial" else "")
    size = (f"each configuration on an array of the {a['rows']}x{a['cols']} float32 array's area (iso-area)"
            if settings.get("iso_area") else f"{a['rows']}x{a['cols']}")
    return (f"{size}, {a['dataflow'].upper()}, {pe} PEs at {a['clock_hz'] / 1e6:g} MHz, {bw} "
            f"(`{a.get('source', 'default')}`)")


def markdown_table(rows) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows) -> str:
    """The summary table for a terminal."""
    heads = [h.replace("µ", "u").replace("Δ", "d").replace("×", "x") for h in HEADERS]
    body = [[c.replace("±", "+-") for c in cells] for cells in table_rows(rows)]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(heads), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(b) for b in body])


def markdown(settings, rows, grid=None, figures=None) -> str:
    """The summary; ``figures``: file names of the plots to show (default: all three)."""
    model = Path(settings["model"]).stem
    n_expected = len(grid.configs) if grid is not None else len(rows)
    lines = [f"# Bit-width sweep: {model}", ""]
    lines.append(f"* model: `{settings['model']}` (SHA-256 `{settings['model_sha256'][:12]}…`)")
    lines.append(f"* test images: the first {settings['images']:,} of the CIFAR-10 test set "
                 f"(digest `{settings['data_sha256'][:12]}…`); calibration: the first "
                 f"{settings['calibration']['images']} training images")
    lines.append(f"* hardware: {hardware_line(settings)}; energies and areas are 45 nm estimates (hwsim/energy.py, "
                 "hwsim/area.py); ratios are to float32 on the configured array of fixed PEs")
    fmts = ", ".join(G.pair_label(w, a) for w, a in settings["formats"])
    lines.append(f"* formats: {fmts}; accumulators: {', '.join(G.short_name(a) for a in settings['accum'])}; "
                 f"rounding: {', '.join(settings['rounding'])}; stochastic seeds: {settings['seeds']}")
    lines.append(f"* configurations done: {len(rows)} of {n_expected}"
                 + ("" if len(rows) == n_expected else " (the sweep is partial: rerun the same command to finish it)"))
    lines.append("")
    lines.append("Accuracy: mean ± sample standard deviation over seeds (stochastic rounding; deterministic "
                 "roundings have one run). Pareto: no other configuration is both cheaper and more accurate.")
    lines.append("")
    lines.append(markdown_table(rows))
    lines.append("")
    if grid is not None and grid.skipped:
        lines.append("Combinations not run (operands and accumulator do not pair up): " +
                     "; ".join(f"{G.pair_label(w, a)} with {G.short_name(acc)}" for (w, a, acc), _ in grid.skipped)
                     + ".")
        lines.append("")
    for name, what in ((plots.BITS_PNG, "accuracy vs bits"), (plots.ENERGY_PNG, "accuracy vs energy"),
                       (plots.THROUGHPUT_PNG, "accuracy vs throughput"),
                       (plots.ROUNDING_PNG, "nearest vs stochastic rounding by accumulator")):
        if figures is not None and name not in figures:
            continue
        lines.append(f"![{what}]({name})")
        lines.append("")
    return "\n".join(lines)
