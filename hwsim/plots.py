"""Figures of a bit-width sweep (matplotlib, Agg canvas: no display, no global pyplot state).

* ``accuracy_vs_bits.png``: top-1 accuracy against bits per weight element, one line per format
  family (round to nearest; stochastic rounding as open markers with error bars); each format with
  its widest accumulator in the sweep.
* ``accuracy_vs_energy.png``: accuracy against estimated energy per inference for every
  configuration, with the Pareto front (no other configuration is both cheaper and more accurate).
* ``accuracy_vs_throughput.png``: accuracy against inferences per second on the sweep's array (the
  iso-area array of each configuration when the sweep is iso-area), with its Pareto front.
* ``rounding_accumulators.png``: round-to-nearest against stochastic rounding for each operand format,
  accumulators on the x axis from narrow to wide (the Gupta et al. 2015 experiment).

Accuracy is the mean over seeds; error bars are +-1 standard deviation over seeds (stochastic
rounding only).
"""

from __future__ import annotations

import math
from pathlib import Path

from . import sweep as G

BITS_PNG = "accuracy_vs_bits.png"
ENERGY_PNG = "accuracy_vs_energy.png"
THROUGHPUT_PNG = "accuracy_vs_throughput.png"
ROUNDING_PNG = "rounding_accumulators.png"

_FAMILY_STYLE = {"float": ("tab:blue", "o"), "int": ("tab:red", "s"), "fixed": ("tab:purple", "D"),
                 "mx": ("tab:green", "^")}
_ROUNDING_COLOR = {"nearest": "tab:blue", "stochastic": "tab:orange", "nearest_away": "tab:cyan",
                   "toward_zero": "tab:gray", "up": "tab:brown", "down": "tab:pink"}


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path):
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, metadata={"Software": None})
    tmp.replace(path)


def _pct(x):
    return None if x is None else 100.0 * x


def _std(r):
    return 0.0 if r["accuracy_std"] is None else 100.0 * r["accuracy_std"]


def _baseline(rows):
    for r in rows:
        if (r["weights"], r["activations"], r["accum"], r["rounding"]) == G.BASELINE:
            return r
    return None


def _subtitle(settings) -> str:
    return f"{settings['images']:,} CIFAR-10 test images"


def _model(settings) -> str:
    return Path(settings["model"]).stem


def _ylim(ax, values):
    """Accuracy axis: from a little under the lowest point (0 when something collapses) to 100."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    lo = min(vals) if vals else 0.0
    ax.set_ylim(max(0.0, math.floor((lo - 6) / 10) * 10) - 1, 101)


def _stagger(points):
    """Label offsets (points) so that labels of markers at the same x do not overlap."""
    seen, out = {}, []
    for x, y in points:
        k = round(math.log2(x), 1)
        i = seen.get(k, 0)
        seen[k] = i + 1
        out.append((5, 3 - 9 * i))
    return out


def accuracy_vs_bits(path: Path, settings, rows) -> Path | None:
    """Accuracy vs weight bits per family: each operand pair with its widest accumulator, round to
    nearest as filled markers joined per family, stochastic rounding as open markers with error bars."""
    if not rows:
        return None
    widest = {}
    for r in rows:
        pair = (r["weights"], r["activations"])
        if pair not in widest or r["accum_bits"] > widest[pair]:
            widest[pair] = r["accum_bits"]
    sel = [r for r in rows if r["accum_bits"] == widest[(r["weights"], r["activations"])]]
    det = {}
    for r in sel:  # the deterministic run: nearest if present, else the first non-stochastic
        if r["rounding"] != "stochastic":
            k = (r["weights"], r["activations"])
            if k not in det or r["rounding"] == "nearest":
                det[k] = r
    sto = [r for r in sel if r["rounding"] == "stochastic"]
    fig = _figure(10.5, 5.6)
    ax = fig.subplots()
    base = _baseline(rows)
    allpts = sorted(det.values(), key=lambda r: (r["weight_bits"], -r["accuracy_mean"]))
    offsets = dict(zip([id(r) for r in allpts],
                       _stagger([(r["weight_bits"], r["accuracy_mean"]) for r in allpts])))
    for fam in ("float", "mx", "int", "fixed"):
        color, marker = _FAMILY_STYLE[fam]
        fr = sorted((r for r in det.values() if r["family"] == fam), key=lambda r: r["weight_bits"])
        if fr:
            best = {}
            for r in fr:  # line through the most accurate format of each width
                b = r["weight_bits"]
                if b not in best or r["accuracy_mean"] > best[b]["accuracy_mean"]:
                    best[b] = r
            xs = sorted(best)
            ax.plot(xs, [_pct(best[b]["accuracy_mean"]) for b in xs], "-", color=color, alpha=0.5, lw=1.5)
            ax.plot([r["weight_bits"] for r in fr], [_pct(r["accuracy_mean"]) for r in fr], marker, color=color, ms=7,
                    ls="none", label=f"{fam}, round to nearest")
            for r in fr:
                ax.annotate(G.pair_label(r["weights"], r["activations"]), (r["weight_bits"], _pct(r["accuracy_mean"])),
                            textcoords="offset points", xytext=offsets[id(r)], fontsize=7, color="0.2")
        fs = [r for r in sto if r["family"] == fam]
        if fs:
            ax.errorbar([r["weight_bits"] * 1.04 for r in fs], [_pct(r["accuracy_mean"]) for r in fs],
                        yerr=[_std(r) for r in fs], fmt=marker, mfc="none", color=color, ms=7, capsize=3,
                        label=f"{fam}, stochastic (mean ± std)")
    if base:
        ax.axhline(_pct(base["accuracy_mean"]), color="0.4", ls="--", lw=1,
                   label=f"float32 ({_pct(base['accuracy_mean']):.1f}%)")
    ax.set_xscale("log", base=2)
    ticks = [2, 3, 4, 5, 6, 8, 12, 16, 32]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlim(1.8, 40)
    _ylim(ax, [_pct(r["accuracy_mean"]) for r in sel])
    ax.set_xlabel("bits per weight element (MX: element + 8-bit shared scale / 32)")
    ax.set_ylabel("top-1 accuracy (%)")
    accs = sorted({G.short_name(r["accum"]) for r in sel})
    ax.set_title(f"{_model(settings)}: accuracy vs operand precision ({_subtitle(settings)})\n"
                 f"each format with its widest accumulator in the sweep ({', '.join(accs)})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = path / BITS_PNG
    _save(fig, out)
    return out


def _front(rows, value, higher_better: bool) -> list:
    """The Pareto front of ``rows`` in (``value``, mean accuracy), by ``value``."""
    from .sweep_exec import pareto_front

    front = [rows[i] for i in pareto_front(rows, value, higher_better)]
    return sorted(front, key=value)


def _accuracy_vs(path: Path, settings, rows, *, value, higher_better, what, xlabel, fname) -> Path | None:
    """Accuracy vs one cost per configuration (log x axis), its Pareto front marked."""
    if not rows:
        return None
    fig = _figure(10.5, 5.6)
    ax = fig.subplots()
    for r in rows:
        color = _ROUNDING_COLOR.get(r["rounding"], "k")
        marker = _FAMILY_STYLE[r["family"]][1]
        ax.errorbar(value(r), _pct(r["accuracy_mean"]), yerr=_std(r), fmt=marker, color=color,
                    ms=5, capsize=2, alpha=0.85)
    front = _front(rows, value, higher_better)
    if front:
        xs, ys = [value(r) for r in front], [_pct(r["accuracy_mean"]) for r in front]
        ax.step(xs, ys, where="post", color="k", lw=1.2, label="Pareto front")
        ax.scatter(xs, ys, s=120, facecolors="none", edgecolors="k", lw=1.2)
        for r in front:
            ax.annotate(f"{G.pair_label(r['weights'], r['activations'])}, acc {G.short_name(r['accum'])}, "
                        f"{r['rounding']}", (value(r), _pct(r["accuracy_mean"])),
                        textcoords="offset points", xytext=(5, -10), fontsize=6.5)
    # legend proxies
    for fam, (c, m) in _FAMILY_STYLE.items():
        if any(r["family"] == fam for r in rows):
            ax.plot([], [], m, color="0.3", label=f"{fam} operands")
    for rnd in dict.fromkeys(r["rounding"] for r in rows):
        ax.plot([], [], "o", color=_ROUNDING_COLOR.get(rnd, "k"), label=f"{rnd} rounding")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    _ylim(ax, [_pct(r["accuracy_mean"]) for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{_model(settings)}: accuracy vs {what} ({_subtitle(settings)}; error bars: std over seeds)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = path / fname
    _save(fig, out)
    return out


def _hardware(settings) -> str:
    a = settings["array"]
    if "rows" not in a:
        return f"{a.get('name', '?')} array"
    size = f"{a['rows']}x{a['cols']}" + (" fp32-area (iso-area)" if settings.get("iso_area") else "")
    return f"{size} {a['pe']} array"


def accuracy_vs_energy(path: Path, settings, rows) -> Path | None:
    """Accuracy vs energy per inference, every configuration, Pareto front (lower energy) marked."""
    base = _baseline(rows)
    e32 = f"; float32 = {base['energy_pj'] / 1e6:.3g} uJ" if base else ""
    return _accuracy_vs(path, settings, rows, value=lambda r: r["energy_pj"] / 1e6, higher_better=False,
                        what="energy", fname=ENERGY_PNG,
                        xlabel=f"energy per inference (uJ, 45 nm estimate, {_hardware(settings)}{e32})")


def accuracy_vs_throughput(path: Path, settings, rows) -> Path | None:
    """Accuracy vs inferences per second, every configuration, Pareto front (higher throughput) marked."""
    base = _baseline(rows)
    t32 = f"; float32 = {base['inferences_per_s']:,.0f}/s" if base else ""
    return _accuracy_vs(path, settings, rows, value=lambda r: r["inferences_per_s"], higher_better=True,
                        what="throughput", fname=THROUGHPUT_PNG,
                        xlabel=f"inferences per second (batch 1, {_hardware(settings)}{t32})")


def _accum_order(name):
    """Narrow to wide: fixed point by fractional bits, then floats by significand bits."""
    from kernels.formats import FixedFormat, parse_format

    f = parse_format(name)
    if isinstance(f, FixedFormat):
        return (0, f.frac, f.bits, name)
    return (1, G._precision(name), G.storage_bits(name), name)


def rounding_accumulators(path: Path, settings, rows) -> Path | None:
    """Nearest vs stochastic per operand pair, accumulators from narrow to wide."""
    by_pair = {}
    for r in rows:
        by_pair.setdefault((r["weights"], r["activations"]), []).append(r)
    panels = []
    for pair, rs in by_pair.items():
        if {"nearest", "stochastic"} <= {r["rounding"] for r in rs}:
            panels.append((pair, rs))
    if not panels:
        (path / ROUNDING_PNG).unlink(missing_ok=True)
        return None
    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(max(9.5, 4.6 * ncols), 3.6 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (pair, rs) in zip(axes.flat, panels):
        accs = sorted({r["accum"] for r in rs}, key=_accum_order)
        xs = list(range(len(accs)))
        for rnd, dx in (("nearest", -0.06), ("stochastic", 0.06)):
            pts = {r["accum"]: r for r in rs if r["rounding"] == rnd}
            x = [i + dx for i, a in enumerate(accs) if a in pts]
            y = [_pct(pts[a]["accuracy_mean"]) for a in accs if a in pts]
            e = [_std(pts[a]) for a in accs if a in pts]
            label = "round to nearest" if rnd == "nearest" else "stochastic (mean +- std over seeds)"
            ax.errorbar(x, y, yerr=e, fmt="o-", color=_ROUNDING_COLOR[rnd], ms=5, capsize=3, label=label)
        ax.set_xticks(xs)
        ax.set_xticklabels([G.short_name(a) for a in accs], rotation=30, fontsize=8)
        _ylim(ax, [_pct(r["accuracy_mean"]) for r in rs])
        ax.set_title(f"operands {G.pair_label(*pair)}", fontsize=9)
        ax.set_xlabel("accumulator format (narrow -> wide)", fontsize=8)
        ax.set_ylabel("top-1 accuracy (%)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    note = ""
    if any(G.exact(r["weights"], r["activations"], r["accum"]) for _, rs in panels for r in rs):
        note = "\ninteger operands into int<N> accumulators are exact (one run, no rounding)"
    fig.suptitle(f"{_model(settings)}: round-to-nearest vs stochastic rounding of products and sums "
                 f"({_subtitle(settings)}){note}", fontsize=10)
    fig.tight_layout()
    out = path / ROUNDING_PNG
    _save(fig, out)
    return out


def render_all(path, settings, rows) -> list[Path]:
    path = Path(path)
    outs = [accuracy_vs_bits(path, settings, rows), accuracy_vs_energy(path, settings, rows),
            accuracy_vs_throughput(path, settings, rows), rounding_accumulators(path, settings, rows)]
    return [o for o in outs if o is not None]
