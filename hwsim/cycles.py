"""Stall-free cycle counts of conv, depthwise and dense layers on a systolic array, after SCALE-Sim.

Model (A. Samajdar, Y. Zhu, P. Whatmough, M. Mattina, T. Krishna, "SCALE-Sim: Systolic CNN Accelerator
Simulator", arXiv:1811.02883, 2018, section III; the same equations drive SCALE-Sim v2 and v3, and the
``scalesim`` 3.0.0 package's compute modules, against which tests/test_scalesim_oracle.py checks this
file cycle for cycle).

A MAC layer is a matrix product: ``P`` output pixels per filter (``Ho * Wo``), a convolution window of
``W = Fh * Fw * Cin`` and ``F`` filters; it does ``P * W * F`` MACs. On an ``R x C`` array each dataflow
maps two of the three dimensions onto the array (spatial ``S_R`` on rows, ``S_C`` on columns) and
streams the third through it in time ``T``:

============================  =========  =========  =========  ============================
dataflow                      ``S_R``    ``S_C``    ``T``      cycles per fold ``tau``
============================  =========  =========  =========  ============================
output stationary ``"os"``    ``P``      ``F``      ``W``      ``R + C + T - 2``
weight stationary ``"ws"``    ``W``      ``F``      ``P``      ``2R + C + T - 2``
input stationary ``"is"``     ``W``      ``P``      ``F``      ``2R + C + T - 2``
============================  =========  =========  =========  ============================

The mapping is folded: ``ceil(S_R / R) * ceil(S_C / C)`` folds run one after the other, each taking
``tau`` cycles (fill: the skew of ``R - 1`` / ``C - 1`` cycles, plus ``R`` cycles to preload the
stationary operand in WS/IS; ``T`` cycles of streaming; drain). A layer takes ``folds * tau - 1``
cycles (SCALE-Sim counts cycles from 0 and reports the index of the last one).

Dense layers are the case ``P = 1`` (a batch of one), or ``P`` = the number of positions when a Dense
layer is applied to every pixel of an ``(H, W, Cin)`` tensor.

**Depthwise convolution** is mapped per channel, as SCALE-Sim 3 does for topology layers named
``DP...``: each of the ``Cin`` channels is a separate convolution with one input channel and
``depth_multiplier`` filters (``W = Fh * Fw``, ``F = depth_multiplier``), run one after the other, so
the layer takes ``Cin * (folds * tau - 1)`` cycles. This leaves most of the array idle (the known
weakness of depthwise layers on systolic arrays) and is what the reported utilisation shows.

Utilisation = MACs / (cycles * R * C). SCALE-Sim's "mapping efficiency" (the mean fraction of PEs that
hold an operand over the folds) is ``S_R * S_C / (folds * R * C)``.

SRAM traffic, counted as SCALE-Sim's demand matrices count it (in elements, per repeat):

* OS: ifmap reads ``S_R * T * col_folds``, filter reads ``S_C * T * row_folds``, ofmap writes ``S_R * S_C``.
* WS: ifmap reads ``T * S_R * col_folds``, filter reads ``S_R * S_C`` (each weight loaded once),
  ofmap writes ``T * S_C * row_folds`` (partial sums of every row fold).
* IS: ifmap reads ``S_R * S_C`` (each input loaded once), filter reads ``T * S_R * col_folds``,
  ofmap writes ``T * S_C * row_folds``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.graph.ir import OPS

DATAFLOWS = ("os", "ws", "is")


@dataclass(frozen=True)
class GemmShape:
    """A MAC layer as SCALE-Sim's operand matrices, for one of ``repeats`` identical sub-layers.

    ``pixels`` = output pixels per filter, ``window`` = multiplies per output, ``filters`` = outputs
    per pixel; ``repeats`` > 1 for depthwise layers (one sub-layer per channel) and grouped convolutions
    (one per group). ``in_elems``,
    ``out_elems`` and ``weight_elems`` are the unique tensor sizes per sub-layer (for DRAM traffic).
    """

    pixels: int
    window: int
    filters: int
    repeats: int = 1
    in_elems: int = 0
    out_elems: int = 0
    weight_elems: int = 0
    bias_elems: int = 0
    fh: int = 1
    fw: int = 1
    cin: int = 0
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)

    def __post_init__(self):
        for f in ("pixels", "window", "filters", "repeats"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"GEMM dimension {f} must be a positive integer, got {v!r}")

    @property
    def macs(self) -> int:
        return self.pixels * self.window * self.filters * self.repeats

    @property
    def params(self) -> int:
        return (self.weight_elems + self.bias_elems) * self.repeats


def layer_gemm(network, layer) -> GemmShape:
    """The GEMM view of a MAC layer of ``network`` (a :class:`hwsim.graph.ir.Network`), see the module docstring."""
    layer = network[layer] if isinstance(layer, str) else layer
    if not layer.is_mac:
        raise ValueError(f"layer {layer.name!r} of kind {layer.kind!r} does not run on the MAC array; MAC layers: "
                         + ", ".join(k for k, c in OPS.items() if c.is_mac))
    return GemmShape(**layer.gemm_dims(network.input_shape_of(layer), network.shapes[layer.name]))


def mapping(gemm: GemmShape, dataflow: str) -> tuple[int, int, int]:
    """``(S_R, S_C, T)`` of one sub-layer under ``dataflow`` (table in the module docstring)."""
    p, w, f = gemm.pixels, gemm.window, gemm.filters
    if dataflow == "os":
        return p, f, w
    if dataflow == "ws":
        return w, f, p
    if dataflow == "is":
        return w, p, f
    raise ValueError(f"unknown dataflow {dataflow!r}; valid: {', '.join(map(repr, DATAFLOWS))}")


def cycles_per_fold(rows: int, cols: int, t: int, dataflow: str) -> int:
    """``tau``: ``R + C + T - 2`` for OS, ``2R + C + T - 2`` for WS and IS."""
    if dataflow == "os":
        return rows + cols + t - 2
    if dataflow in ("ws", "is"):
        return 2 * rows + cols + t - 2
    raise ValueError(f"unknown dataflow {dataflow!r}; valid: {', '.join(map(repr, DATAFLOWS))}")


@dataclass(frozen=True)
class Schedule:
    """How one MAC layer runs on an ``rows x cols`` array with ``dataflow`` (module docstring)."""

    dataflow: str
    rows: int
    cols: int
    sr: int
    sc: int
    t: int
    repeats: int
    macs: int

    @property
    def row_folds(self) -> int:
        return -(-self.sr // self.rows)

    @property
    def col_folds(self) -> int:
        return -(-self.sc // self.cols)

    @property
    def folds(self) -> int:
        """Folds of one sub-layer (multiply by ``repeats`` for the layer)."""
        return self.row_folds * self.col_folds

    @property
    def cycles_per_fold(self) -> int:
        return cycles_per_fold(self.rows, self.cols, self.t, self.dataflow)

    @property
    def cycles(self) -> int:
        """Stall-free cycles of the layer: ``repeats * (folds * tau - 1)``."""
        return self.repeats * (self.folds * self.cycles_per_fold - 1)

    @property
    def utilization(self) -> float:
        """MACs / (cycles * R * C)."""
        return self.macs / (self.cycles * self.rows * self.cols)

    @property
    def mapping_efficiency(self) -> float:
        """Mean fraction of PEs holding an operand over the folds: ``S_R * S_C / (folds * R * C)``."""
        return self.sr * self.sc / (self.folds * self.rows * self.cols)

    # SRAM element counts for the whole layer (all repeats), as SCALE-Sim's demand matrices count them.
    @property
    def ifmap_sram_reads(self) -> int:
        if self.dataflow == "is":
            n = self.sr * self.sc
        else:
            n = self.sr * self.t * self.col_folds
        return n * self.repeats

    @property
    def filter_sram_reads(self) -> int:
        if self.dataflow == "os":
            n = self.sc * self.t * self.row_folds
        elif self.dataflow == "ws":
            n = self.sr * self.sc
        else:
            n = self.t * self.sr * self.col_folds
        return n * self.repeats

    @property
    def ofmap_sram_writes(self) -> int:
        """Output writes including partial sums (WS/IS write every row fold's partial sums)."""
        if self.dataflow == "os":
            n = self.sr * self.sc
        else:
            n = self.t * self.sc * self.row_folds
        return n * self.repeats

    @property
    def outputs(self) -> int:
        """Distinct outputs of the layer (final ofmap writes)."""
        return (self.sr * self.sc if self.dataflow == "os" else self.t * self.sc) * self.repeats

    @property
    def psum_sram_reads(self) -> int:
        """Partial sums read back to accumulate the next row fold (WS/IS; 0 for OS)."""
        if self.dataflow == "os":
            return 0
        return self.t * self.sc * (self.row_folds - 1) * self.repeats


def schedule(gemm: GemmShape, rows: int, cols: int, dataflow: str) -> Schedule:
    """The :class:`Schedule` of a GEMM-shaped layer on a ``rows x cols`` array."""
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"array {name} must be a positive integer, got {v!r}")
    sr, sc, t = mapping(gemm, dataflow)
    return Schedule(dataflow=dataflow, rows=rows, cols=cols, sr=sr, sc=sc, t=t, repeats=gemm.repeats, macs=gemm.macs)


def layer_schedule(network, layer, rows: int, cols: int, dataflow: str) -> Schedule:
    """Shortcut: ``schedule(layer_gemm(network, layer), rows, cols, dataflow)``."""
    return schedule(layer_gemm(network, layer), rows, cols, dataflow)


def scalesim_topology_row(network, layer) -> str:
    """The layer as a SCALE-Sim 3 conv-topology CSV row (used by the oracle test and for export).

    Columns: name, IFMAP height, IFMAP width, filter height, filter width, channels, filters, stride.
    'same' padding is written as the padded input size (SCALE-Sim has no padding field); depthwise
    layers get a ``DP`` name prefix, which makes SCALE-Sim split them per channel. Dense layers are
    a 1x1 convolution over a ``positions x 1`` input. SCALE-Sim takes one stride for both axes, so
    layers with unequal strides raise ``ValueError``.
    """
    layer = network[layer] if isinstance(layer, str) else layer
    g = layer_gemm(network, layer)
    sh, sw = g.strides
    if sh != sw:
        raise ValueError(f"layer {layer.name!r}: SCALE-Sim needs equal strides, got {g.strides}")
    if g.dilation != (1, 1):
        raise ValueError(f"layer {layer.name!r}: SCALE-Sim has no dilated convolution (dilation {g.dilation})")
    if g.repeats > 1 and not layer.per_channel:
        raise ValueError(f"layer {layer.name!r}: SCALE-Sim has no grouped convolution ({g.repeats} groups)")
    ho, wo = g.out_hw
    hp = (ho - 1) * sh + g.fh
    wp = (wo - 1) * sw + g.fw
    name = layer.name.replace(",", "_")
    channels, filters = g.cin, g.filters  # Dense: cin is its input width
    if layer.per_channel:  # depthwise: SCALE-Sim maps it per channel for names starting with DP
        name = "DP" + name
        channels = g.repeats
    return f"{name}, {hp}, {wp}, {g.fh}, {g.fw}, {channels}, {filters}, {sh},"
