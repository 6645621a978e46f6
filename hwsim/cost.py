"""Hardware cost of a network on a MAC array: cycles, throughput, utilisation and energy, per layer and in
total, for a MAC spec and for a float32 baseline on the same array: :func:`cost`.

Everything is derived from the layer shapes, the array (:class:`hwsim.ArrayConfig`) and the number
formats of the MAC spec; the figures are **45 nm estimates** with the default energy table.

Per MAC layer (conv, depthwise, dense; other layers -- pooling, adds, reshapes -- are assumed to run
on a separate vector unit and are not costed):

* **Cycles** (compute): on fixed PEs the stall-free SCALE-Sim count of :mod:`hwsim.cycles`; on
  Bit Fusion PEs Bit Fusion's own count with its fusion factor; on bit-serial PEs the SCALE-Sim count
  times the activation bits (or activation times weight bits): :mod:`hwsim.pe`. With a DRAM bandwidth
  (``ArrayConfig.dram_bytes_per_cycle``) the layer takes ``max(compute cycles, ceil(DRAM bytes /
  bandwidth))``: a bandwidth-bound layer gets faster as its formats get narrower.
* **Area**: ``rows * cols`` PEs of :func:`hwsim.pe.pe_area_um2` (the PE array; SRAMs are not
  included), ``CostResult.area_mm2``.
* **MAC energy**: ``MACs * EnergyTable.mac_pj(spec)``; **random bits**: ``MACs *
  EnergyTable.rng_pj(spec)`` (stochastic rounding only).
* **Leakage**: ``leakage_mw_per_mm2 * area_mm2 * cycles / clock_hz``: the array leaks while the
  layer runs, stalls included.
* **Register energy**: per MAC, the PE pipeline registers are read/written: output stationary: the
  two moving operands are each written and read (``2a + 2b`` bits) and the accumulator read and
  written (``2 acc``); weight stationary: the weight is only read (``b``), the input moves (``2a``),
  the partial sum moves (``2 acc``); input stationary: ``a + 2b + 2 acc``. Times ``rf_pj_per_bit``.
* **SRAM energy**: the SCALE-Sim SRAM access counts of :class:`hwsim.cycles.Schedule` times the bits
  of each element (activations in ``spec.a``, weights in ``spec.b``, partial sums in ``spec.accum``,
  final outputs in ``spec.out``, or when that is ``None`` in ``spec.a``: re-quantized for the next
  layer, as integer pipelines do), each charged at ``sram_pj_per_bit`` of its buffer's size; plus the
  writes that fill the SRAMs from DRAM and the reads that drain the outputs to DRAM.
* **DRAM energy**: layer-by-layer execution with no fusion: every layer reads its input tensor and
  its weights (biases in ``spec.accum``) from DRAM and writes its output tensor back, once each, as
  long as the operand fits in half its SRAM (double buffering). An operand that does not fit is read
  again on every pass the schedule makes over it: the streamed operand (ifmap in OS/WS, filters in
  IS) once per column fold; the OS filter block (``T x C``) once per row fold if even one block does
  not fit. In WS/IS, partial sums that do not fit the ofmap SRAM spill: written and read back once
  per extra row fold. Times ``dram_pj_per_bit``.

The baseline is the same network with ``MacSpec.preset("fp32")`` on the same array with fixed PEs
(Bit Fusion and bit-serial PEs run no floats).

**Several arrays** (``ArrayConfig.arrays = n``, scale-out as in SCALE-Sim's scale-up / scale-out study):
each layer is split into ``n`` equal shares along its depthwise channels, output pixels, filters or
reduction window (whichever finishes first; a split window adds ``ceil(log2 n)`` cycles for the adder
tree that joins the partial sums, whose energy is not charged) and the shares run side by side; SRAM
and DRAM traffic are those of the whole layer (the arrays share the SRAM capacities and the DRAM
link).

**Iso-area** (``iso_area=True``): the spec gets the PE-array silicon of the baseline array (``rows *
cols`` fixed PEs of the baseline spec): ``floor(area(baseline array) / area(one rows x cols array of
the spec's PEs))`` copies of the configured array. Copies, not a larger array: a larger systolic array
pays a longer fill and drain on every fold, and on per-channel depthwise layers it is slower than
the small one. A spec whose PE is larger than the baseline's gets one array shrunk to
``floor(rows * k) x floor(cols * k)``, ``k = sqrt(area ratio)``. Never more area than the baseline.
``CostResult.array`` is the array used; the baseline keeps the configured one.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from hwsim import pe as pe_kinds
from hwsim.array import ArrayConfig, load_array
from hwsim.cycles import GemmShape, Schedule, layer_gemm, schedule
from hwsim.energy import resolve_spec, storage_bits

COMPONENTS = ("mac", "rng", "rf", "sram", "dram", "leak")


@dataclass(frozen=True)
class LayerCost:
    """Cost of one MAC layer. Energies in pJ; ``cycles`` includes any DRAM-bandwidth bound."""

    name: str
    kind: str
    macs: int
    params: int
    sr: int
    sc: int
    t: int
    repeats: int
    folds: int
    compute_cycles: int
    memory_cycles: int
    cycles: int
    utilization: float
    mapping_efficiency: float
    sram_bits: float
    dram_bits: float
    mac_pj: float
    rng_pj: float
    rf_pj: float
    sram_pj: float
    dram_pj: float
    leak_pj: float
    area_mm2: float = 0.0  # the PE silicon the layer occupies (all arrays: layers run one after the other)

    @property
    def energy_pj(self) -> float:
        return math.fsum(getattr(self, f"{c}_pj") for c in COMPONENTS)

    @property
    def energy_by_component(self) -> dict[str, float]:
        return {c: getattr(self, f"{c}_pj") for c in COMPONENTS}

    @property
    def dram_bytes(self) -> float:
        return self.dram_bits / 8


@dataclass(frozen=True)
class CostResult:
    """Per-layer and total cost of a network on an array, with its float32 ``baseline`` (a CostResult).

    ``ratios`` are this result divided by the baseline (below 1: cheaper than float32).
    """

    network: str
    spec: object
    array: ArrayConfig
    layers: tuple[LayerCost, ...]
    pe_area_um2: float = 0.0
    baseline: "CostResult | None" = field(default=None, repr=False)

    @property
    def area_mm2(self) -> float:
        """Silicon area of the PE array: ``rows * cols * pe_area_um2`` (SRAMs not included)."""
        return self.array.pes * self.pe_area_um2 * 1e-6

    # ------------------------------------------------------------------------------------ totals
    @property
    def cycles(self) -> int:
        return sum(l.cycles for l in self.layers)

    @property
    def compute_cycles(self) -> int:
        return sum(l.compute_cycles for l in self.layers)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def utilization(self) -> float:
        """MACs / (cycles * R * C * peak MACs per PE per cycle) over the whole network."""
        peak = pe_kinds.peak_macs_per_cycle(self.spec, self.array)
        return self.macs / (self.cycles * self.array.pes * peak) if self.cycles else 0.0

    @property
    def latency_s(self) -> float:
        return self.cycles / self.array.clock_hz

    @property
    def inferences_per_s(self) -> float:
        """Throughput at the array's clock, one inference at a time (batch 1, layers back to back)."""
        return self.array.clock_hz / self.cycles if self.cycles else math.inf

    @property
    def energy_by_component(self) -> dict[str, float]:
        return {c: sum(getattr(l, f"{c}_pj") for l in self.layers) for c in COMPONENTS}

    @property
    def energy_pj(self) -> float:
        return sum(self.energy_by_component.values())

    @property
    def energy_per_mac_pj(self) -> float:
        return self.energy_pj / self.macs if self.macs else 0.0

    @property
    def dram_bytes(self) -> float:
        return sum(l.dram_bytes for l in self.layers)

    @property
    def ratios(self) -> dict[str, float]:
        """``cycles``, ``throughput`` (inferences/s), ``area``, ``energy`` and each energy component
        (:data:`COMPONENTS`): this / baseline."""
        if self.baseline is None:
            return {}
        b = self.baseline
        out = {"cycles": self.cycles / b.cycles, "throughput": self.inferences_per_s / b.inferences_per_s,
               "area": self.area_mm2 / b.area_mm2, "energy": self.energy_pj / b.energy_pj}
        mine, theirs = self.energy_by_component, b.energy_by_component
        for c in COMPONENTS:
            out[c] = mine[c] / theirs[c] if theirs[c] else math.nan
        return out

    def layer(self, name: str) -> LayerCost:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(f"no MAC layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    # ---------------------------------------------------------------------------------- exports
    LAYER_COLUMNS = ("name", "kind", "macs", "params", "sr", "sc", "t", "repeats", "folds", "compute_cycles",
                     "memory_cycles", "cycles", "utilization", "mapping_efficiency", "dram_bytes", "mac_pj",
                     "rng_pj", "rf_pj", "sram_pj", "dram_pj", "leak_pj", "energy_pj")
    CSV_COLUMNS = LAYER_COLUMNS + ("baseline_cycles", "baseline_energy_pj", "energy_ratio")

    def rows(self) -> list[dict]:
        """One dict per layer plus a final ``TOTAL`` row, with the :attr:`CSV_COLUMNS` keys."""
        base = {l.name: l for l in self.baseline.layers} if self.baseline else {}
        out = []
        for l in self.layers:
            b = base.get(l.name)
            row = {c: getattr(l, c) for c in self.LAYER_COLUMNS}
            row["baseline_cycles"] = b.cycles if b else ""
            row["baseline_energy_pj"] = b.energy_pj if b else ""
            row["energy_ratio"] = l.energy_pj / b.energy_pj if b and b.energy_pj else ""
            out.append(row)
        comp = self.energy_by_component
        total = {"name": "TOTAL", "kind": "", "macs": self.macs, "params": self.params, "sr": "", "sc": "",
                 "t": "", "repeats": "", "folds": sum(l.folds * l.repeats for l in self.layers),
                 "compute_cycles": self.compute_cycles, "memory_cycles": sum(l.memory_cycles for l in self.layers),
                 "cycles": self.cycles, "utilization": self.utilization, "mapping_efficiency": "",
                 "dram_bytes": self.dram_bytes, **{f"{c}_pj": comp[c] for c in COMPONENTS},
                 "energy_pj": self.energy_pj,
                 "baseline_cycles": self.baseline.cycles if self.baseline else "",
                 "baseline_energy_pj": self.baseline.energy_pj if self.baseline else "",
                 "energy_ratio": self.ratios.get("energy", "")}
        out.append(total)
        return out

    def to_csv(self, path) -> Path:
        """Write the per-layer table (and a TOTAL row) as CSV; returns the path."""
        path = Path(path)
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.CSV_COLUMNS)
            w.writeheader()
            for row in self.rows():
                w.writerow(row)
        return path

    def format_table(self) -> str:
        """A human-readable per-layer table plus totals and the float32 comparison."""
        head = (f"{'layer':<22} {'kind':<9} {'MACs':>12} {'cycles':>11} {'util':>6} {'energy uJ':>10} "
                + " ".join(f"{c.upper():>5}" for c in COMPONENTS))
        lines = [head, "-" * len(head)]

        def fmt_row(name, kind, macs, cycles, util, e, comp):
            shares = [f"{100 * comp[c] / e:4.0f}%" if e else "   -" for c in COMPONENTS]
            return f"{name[:22]:<22} {kind:<9} {macs:>12,} {cycles:>11,} {100 * util:5.1f}% {e / 1e6:>10.3f} " + " ".join(shares)

        for l in self.layers:
            lines.append(fmt_row(l.name, l.kind, l.macs, l.cycles, l.utilization, l.energy_pj, l.energy_by_component))
        lines.append("-" * len(head))
        lines.append(fmt_row("TOTAL", "", self.macs, self.cycles, self.utilization, self.energy_pj, self.energy_by_component))
        a = self.array
        spec_name = _spec_name(self.spec)
        lines.append("")
        lines.append(f"network {self.network}: {self.macs:,} MACs, {self.params:,} parameters")
        bw = f"{a.dram_bytes_per_cycle:g} B/cycle DRAM" if a.dram_bytes_per_cycle else "no DRAM bound"
        lines.append(f"array {array_size(a)} {a.dataflow.upper()} {a.pe} PEs at {a.clock_hz / 1e6:g} MHz, {bw}, "
                     f"MAC {spec_name}, energy table {a.energy.name}, area table {a.area.name} (45 nm estimates)")
        lines.append(f"area {self.area_mm2:.4g} mm^2 ({self.pe_area_um2:,.1f} um^2 per PE)")
        lines.append(f"latency {self.latency_s * 1e3:.4g} ms, {self.inferences_per_s:,.1f} inferences/s, "
                     f"utilization {100 * self.utilization:.1f}%, energy {self.energy_pj / 1e6:.4g} uJ/inference "
                     f"({self.energy_per_mac_pj:.3g} pJ/MAC)")
        if self.baseline is not None:
            b, r = self.baseline, self.ratios
            ba = b.array
            lines.append(f"float32 baseline ({array_size(ba)} fixed PEs, {b.area_mm2:.4g} mm^2): {b.cycles:,} cycles, "
                         f"{b.inferences_per_s:,.1f} inferences/s, {b.energy_pj / 1e6:.4g} uJ/inference")
            comp = ", ".join(f"{c.upper()} {r[c]:.3f}x" for c in COMPONENTS if not math.isnan(r[c]))
            lines.append(f"ratio vs fp32: cycles {r['cycles']:.3f}x, throughput {r['throughput']:.3f}x, "
                         f"area {r['area']:.3f}x, energy {r['energy']:.3f}x ({comp})")
        return "\n".join(lines)


def array_size(a: ArrayConfig) -> str:
    """``"32x32"``, or ``"25 x 32x32"`` for 25 arrays."""
    return f"{a.arrays} x {a.rows}x{a.cols}" if a.arrays > 1 else f"{a.rows}x{a.cols}"


def _spec_name(spec) -> str:
    name = getattr(spec, "name", None)
    if name:
        return str(name)
    try:
        parts = [spec.a.name, spec.b.name, spec.accum.name]
        return "{}x{}->{}".format(*parts)
    except AttributeError:
        return str(spec)


def _rf_bits_per_mac(dataflow: str, a: float, b: float, acc: float) -> float:
    if dataflow == "os":
        return 2 * a + 2 * b + 2 * acc
    if dataflow == "ws":
        return b + 2 * a + 2 * acc
    return a + 2 * b + 2 * acc


def _dram_bits(g: GemmShape, s: Schedule, arr: ArrayConfig, a: float, b: float, acc: float, out: float) -> float:
    """DRAM bits moved by the layer (all repeats), see the module docstring."""
    half = lambda kb: kb * 1024 * 8 / 2  # noqa: E731  usable bits of a double-buffered SRAM
    in_bits = g.in_elems * a
    w_bits = g.weight_elems * b
    bias_bits = g.bias_elems * acc
    out_bits = g.out_elems * out
    df = s.dataflow
    # input activations
    if df in ("os", "ws") and in_bits > half(arr.ifmap_sram_kb):
        in_bits *= s.col_folds
    # weights
    if df == "is" and w_bits > half(arr.filter_sram_kb):
        w_bits *= s.col_folds
    elif df == "os" and w_bits > half(arr.filter_sram_kb) and s.t * min(s.sc, arr.cols) * b > half(arr.filter_sram_kb):
        w_bits *= s.row_folds
    # partial-sum spill
    spill = 0.0
    if df in ("ws", "is") and s.row_folds > 1:
        psum_bits = (s.t * s.sc) * acc
        if psum_bits > half(arr.ofmap_sram_kb):
            spill = 2 * (s.row_folds - 1) * psum_bits
    return (in_bits + w_bits + bias_bits + out_bits + spill) * g.repeats


def compute_cycles(g: GemmShape, s: Schedule, spec, arr: ArrayConfig) -> int:
    """Stall-free cycles of a layer on the array's PE kind (:mod:`hwsim.pe`); with ``arrays = n > 1``
    the layer is split into ``n`` equal shares along depthwise channels, output pixels, filters or the
    reduction window (whichever finishes first; a split window adds ``ceil(log2 n)`` cycles for the
    adder tree that sums the shares' partial sums) and takes the cycles of one share."""
    if arr.arrays == 1:
        return pe_kinds.array_cycles(g, s, spec, arr)
    best = None
    for dim in ("repeats", "pixels", "filters", "window"):
        share = replace(g, **{dim: -(-getattr(g, dim) // arr.arrays)})
        c = pe_kinds.array_cycles(share, schedule(share, arr.rows, arr.cols, arr.dataflow), spec, arr)
        if dim == "window":  # partial sums of the shares meet in an adder tree
            c += math.ceil(math.log2(arr.arrays))
        best = c if best is None else min(best, c)
    return best


def _layer_cost(network, layer, spec, arr: ArrayConfig, area_mm2: float) -> LayerCost:
    g = layer_gemm(network, layer)
    s = schedule(g, arr.rows, arr.cols, arr.dataflow)
    et = arr.energy
    out_fmt = spec.out if getattr(spec, "out", None) is not None else spec.a
    a, b, acc, out = (storage_bits(f) for f in (spec.a, spec.b, spec.accum, out_fmt))
    mac_pj = g.macs * et.mac_pj(spec)
    rf_pj = g.macs * _rf_bits_per_mac(arr.dataflow, a, b, acc) * et.rf_pj_per_bit
    dram_bits = _dram_bits(g, s, arr, a, b, acc, out)
    # SRAM: reads feeding the array, output/partial-sum writes and reads, fills from and drains to DRAM
    e_if, e_f, e_of = (et.sram_pj_per_bit(kb) for kb in (arr.ifmap_sram_kb, arr.filter_sram_kb, arr.ofmap_sram_kb))
    psum_writes = s.ofmap_sram_writes - s.outputs
    ifmap_fill = g.in_elems * g.repeats * a
    filter_fill = (g.weight_elems * b + g.bias_elems * acc) * g.repeats
    out_drain = g.out_elems * g.repeats * out
    sram_if_bits = s.ifmap_sram_reads * a + ifmap_fill
    sram_f_bits = s.filter_sram_reads * b + filter_fill
    sram_of_bits = s.outputs * out + psum_writes * acc + s.psum_sram_reads * acc + out_drain
    sram_pj = sram_if_bits * e_if + sram_f_bits * e_f + sram_of_bits * e_of
    compute = compute_cycles(g, s, spec, arr)
    memory = math.ceil(dram_bits / 8 / arr.dram_bytes_per_cycle) if arr.dram_bytes_per_cycle else 0
    cycles = max(compute, memory)
    leak_pj = et.leakage_mw_per_mm2 * area_mm2 * cycles / arr.clock_hz * 1e9  # mW * s = 1e9 pJ
    return LayerCost(
        name=layer.name, kind=layer.kind, macs=g.macs, params=g.params, sr=s.sr, sc=s.sc, t=s.t,
        repeats=s.repeats, folds=s.folds, compute_cycles=compute, memory_cycles=memory, cycles=cycles,
        utilization=g.macs / (cycles * arr.pes * pe_kinds.peak_macs_per_cycle(spec, arr)),
        mapping_efficiency=s.mapping_efficiency,
        sram_bits=sram_if_bits + sram_f_bits + sram_of_bits, dram_bits=dram_bits,
        mac_pj=mac_pj, rng_pj=g.macs * et.rng_pj(spec), rf_pj=rf_pj, sram_pj=sram_pj,
        dram_pj=dram_bits * et.dram_pj_per_bit, leak_pj=leak_pj, area_mm2=area_mm2,
    )


def _network(network):
    if hasattr(network, "mac_layers") and hasattr(network, "input_shape_of"):
        return network
    raise ValueError(f"cost() needs an hwsim IR network (hwsim.graph.ir.Network; convert Keras models with "
                     f"hwsim.load_model), got {type(network).__name__}")


def iso_area_array(array, mac, reference="fp32") -> ArrayConfig:
    """``array`` resized for ``mac`` to the PE-array area of ``reference`` on ``array`` with fixed PEs
    (rule in the module docstring). Raises ``ValueError`` if not even one PE fits."""
    arr = load_array(array)
    spec, ref = resolve_spec(mac), resolve_spec(reference)
    budget = arr.pes * pe_kinds.pe_area_um2(ref, "fixed", arr.area)
    one = pe_kinds.pe_area_um2(spec, arr.pe, arr.area, arr.serial_operands)
    per_array = arr.rows * arr.cols * one
    copies = math.floor(budget / per_array)
    if copies >= 1:
        return arr.with_(arrays=copies)
    k = math.sqrt(budget / per_array)
    rows, cols = math.floor(arr.rows * k), math.floor(arr.cols * k)
    if rows < 1 or cols < 1:
        raise ValueError(f"iso-area: a {arr.pe} PE for this MAC ({one:,.1f} um^2) does not fit the area of the "
                         f"{arr.rows}x{arr.cols} {ref.name or 'reference'} array ({budget:,.1f} um^2) as a grid")
    return arr.with_(rows=rows, cols=cols, arrays=1)


def cost(network, mac="int8_int32", array=None, *, baseline="fp32", iso_area=False) -> CostResult:
    """Cost of running ``network`` (an :class:`hwsim.graph.ir.Network`) on ``array``.

    ``mac``: a ``kernels.MacSpec`` or a preset name (``"int8_int32"``, ``"fp16_fp32"``, ...);
    ``array``: an :class:`hwsim.ArrayConfig`, a path to its TOML file, or ``None`` for the default
    (32x32 OS fixed PEs, 1 GHz, LPDDR4X bandwidth, 45 nm tables); ``baseline``: the spec to compare
    against (default ``"fp32"``, run on the same array with fixed PEs), or ``None`` for no baseline;
    ``iso_area``: resize the array for ``mac`` to the baseline array's area (:func:`iso_area_array`).
    Returns a :class:`CostResult`; the model is in the module docstring. Raises ``ValueError`` when
    the array's PE kind cannot run ``mac``.
    """
    net = _network(network)
    spec = resolve_spec(mac)
    arr = load_array(array)
    if not isinstance(iso_area, bool):
        raise ValueError(f"iso_area must be True or False, got {iso_area!r}")
    if iso_area and baseline is None:
        raise ValueError("iso_area=True sizes the array to the baseline's area; give a baseline spec (e.g. 'fp32')")
    base_arr = arr if arr.pe == "fixed" else arr.with_(pe="fixed", serial_operands="a")
    if iso_area:
        arr = iso_area_array(arr, spec, baseline)
    pe_um2 = pe_kinds.pe_area_um2(spec, arr.pe, arr.area, arr.serial_operands)
    area_mm2 = arr.pes * pe_um2 * 1e-6
    layers = tuple(_layer_cost(net, l, spec, arr, area_mm2) for l in net.mac_layers)
    if not layers:
        raise ValueError(f"network {getattr(net, 'name', '?')!r} has no MAC layers (conv2d, depthwise, dense) to cost")
    base = cost(net, baseline, base_arr, baseline=None) if baseline is not None else None
    return CostResult(network=getattr(net, "name", "network"), spec=spec, array=arr, layers=layers,
                      pe_area_um2=pe_um2, baseline=base)


# ``hwsim.cost`` is both this module and (lazily, through hwsim/__init__.py) the function above. Once
# the submodule is imported, Python binds the attribute ``hwsim.cost`` to the module, so the module
# itself is made callable: ``hwsim.cost(net, ...)`` calls :func:`cost` either way.
class _CallableModule(__import__("types").ModuleType):
    def __call__(self, *args, **kwargs):
        return cost(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
