"""The accelerator being costed: a systolic MAC array with on-chip SRAMs and a DRAM link, :class:`ArrayConfig`.

The array follows SCALE-Sim's architecture (A. Samajdar et al., "SCALE-Sim: Systolic CNN Accelerator
Simulator", arXiv:1811.02883, 2018; SCALE-Sim v2/v3): ``rows x cols`` processing elements, one MAC per
PE per cycle, three double-buffered SRAMs (ifmap, filter, ofmap) fed from DRAM, and one of three
dataflows: output stationary ``"os"``, weight stationary ``"ws"``, input stationary ``"is"``.

TOML form (every key optional except ``rows`` and ``cols``; the defaults are the dataclass's)::

    [array]
    rows = 32
    cols = 32
    dataflow = "os"              # "os" | "ws" | "is"
    clock_hz = 1.0e9
    ifmap_sram_kb = 256          # KiB
    filter_sram_kb = 256
    ofmap_sram_kb = 128
    dram_bytes_per_cycle = 17.064  # DRAM bandwidth; 0 = no bound (SCALE-Sim's stall-free cycles)
    pe = "fixed"                 # "fixed" | "bit_fusion" | "bit_serial" (hwsim/pe.py)
    serial_operands = "a"        # bit_serial only: "a" (Stripes) or "ab" (Loom)
    arrays = 1                   # identical arrays side by side (scale-out)
    energy = "horowitz45.toml"   # optional: an energy table file, relative to this file
    area = "area45.toml"         # optional: an area table file, relative to this file

    [energy]                     # optional instead of energy = "...": the table inline
    dram_pj_per_bit = 20.3

    [area]                       # optional instead of area = "...": the whole table inline
    int_mul_um2 = 6.636          # ... every key of hwsim/configs/area45.toml

The dataclass's own defaults are SCALE-Sim's stall-free array (``dram_bytes_per_cycle=None``); the
shipped default, :meth:`ArrayConfig.default`, adds an LPDDR4X bandwidth (``array_32x32_os.toml``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hwsim.area import AreaTable
from hwsim.energy import EnergyTable
from hwsim.pe import check_kind

DATAFLOWS = ("os", "ws", "is")
CONFIG_DIR = Path(__file__).with_name("configs")


def _positive_int(name, v):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"array {name} must be a positive integer, got {v!r}")
    return v


def _positive_number(name, v, *, allow_zero=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"array {name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return v


@dataclass(frozen=True)
class ArrayConfig:
    """A systolic array accelerator: geometry, dataflow, clock, SRAM sizes, DRAM bandwidth, energy table.

    ``rows`` x ``cols`` PEs; ``dataflow`` in ``"os"``, ``"ws"``, ``"is"``; ``clock_hz``; SRAM sizes in
    KiB (each double-buffered: half holds the working set, as SCALE-Sim's ``active_buf_frac = 0.5``);
    ``dram_bytes_per_cycle``: DRAM bandwidth, ``None`` (or 0) for no bound; ``pe``: the PE kind
    (:data:`hwsim.pe.PE_KINDS`), ``serial_operands`` for bit-serial PEs; ``arrays``: identical
    ``rows x cols`` arrays working side by side on each layer (scale-out; they share the SRAM
    capacities given and the DRAM bandwidth, see :mod:`hwsim.cost`); ``energy``: the
    :class:`~hwsim.energy.EnergyTable` (default: Horowitz 45 nm); ``area``: the
    :class:`~hwsim.area.AreaTable` (default: ``area45.toml``).
    """

    rows: int = 32
    cols: int = 32
    dataflow: str = "os"
    clock_hz: float = 1.0e9
    ifmap_sram_kb: float = 256
    filter_sram_kb: float = 256
    ofmap_sram_kb: float = 128
    dram_bytes_per_cycle: float | None = None
    pe: str = "fixed"
    serial_operands: str = "a"
    arrays: int = 1
    energy: EnergyTable = field(default_factory=EnergyTable.default)
    area: AreaTable = field(default_factory=AreaTable.default)
    name: str = field(default="", compare=False)

    def __post_init__(self):
        _positive_int("rows", self.rows)
        _positive_int("cols", self.cols)
        _positive_int("arrays", self.arrays)
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"unknown dataflow {self.dataflow!r}; valid: {', '.join(map(repr, DATAFLOWS))} "
                             "(output, weight, input stationary)")
        _positive_number("clock_hz", self.clock_hz)
        for f in ("ifmap_sram_kb", "filter_sram_kb", "ofmap_sram_kb"):
            _positive_number(f, getattr(self, f))
        if self.dram_bytes_per_cycle is not None:
            _positive_number("dram_bytes_per_cycle", self.dram_bytes_per_cycle, allow_zero=True)
            if self.dram_bytes_per_cycle == 0:
                object.__setattr__(self, "dram_bytes_per_cycle", None)
        if not isinstance(self.energy, EnergyTable):
            raise ValueError(f"array energy must be an hwsim.EnergyTable, got {self.energy!r}")
        if not isinstance(self.area, AreaTable):
            raise ValueError(f"array area must be an hwsim.area.AreaTable, got {self.area!r}")
        check_kind(self.pe, self.serial_operands)
        if not self.name:
            pe = "" if self.pe == "fixed" else f"-{self.pe}" + ("-ab" if self.pe == "bit_serial" and self.serial_operands == "ab" else "")
            n = f"{self.arrays}x" if self.arrays > 1 else ""
            object.__setattr__(self, "name", f"{n}{self.rows}x{self.cols}-{self.dataflow}{pe}")

    @property
    def pes(self) -> int:
        """PEs in all arrays: ``arrays * rows * cols``."""
        return self.arrays * self.rows * self.cols

    def to_dict(self) -> dict:
        """Every field as plain data (the energy and area tables as mappings): the settings a sweep records."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("energy", "area")}
        out["energy"] = self.energy.to_dict()
        out["area"] = self.area.to_dict()
        return out

    @classmethod
    def from_settings(cls, d: dict) -> "ArrayConfig":
        """The inverse of :meth:`to_dict`."""
        d = dict(d)
        energy = EnergyTable.from_dict(d.pop("energy"), where="array settings [energy]")
        area = AreaTable.from_dict(d.pop("area"), where="array settings [area]")
        return cls(**d, energy=energy, area=area)

    def with_(self, **kw) -> "ArrayConfig":
        """A copy with some fields changed (the name is re-derived unless given)."""
        if "name" not in kw:
            kw["name"] = ""
        return replace(self, **kw)

    # ------------------------------------------------------------------------------ TOML loading
    @classmethod
    def from_dict(cls, data: dict, *, base_dir: Path | None = None, where: str = "array config") -> "ArrayConfig":
        """Build a config from a mapping with an ``[array]`` table (and optionally ``[energy]``)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a table, got {type(data).__name__}")
        unknown_top = sorted(set(data) - {"array", "energy", "area"})
        if unknown_top:
            raise ValueError(f"{where}: unknown table(s) {', '.join(map(repr, unknown_top))}; valid: 'array', 'energy', 'area'")
        arr = data.get("array")
        if not isinstance(arr, dict):
            raise ValueError(f"{where}: missing [array] table (with at least rows and cols)")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(arr) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown [array] key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        for req in ("rows", "cols"):
            if req not in arr:
                raise ValueError(f"{where}: [array] needs {req!r}")
        kw = dict(arr)
        for key, table in (("energy", EnergyTable), ("area", AreaTable)):
            ref = kw.pop(key, None)
            if ref is not None and key in data:
                raise ValueError(f"{where}: give the {key} table either as [array] {key} = \"file\" or as an "
                                 f"[{key}] table, not both")
            if ref is not None:
                if not isinstance(ref, str):
                    raise ValueError(f"{where}: [array] {key} must be a path to an {key}-table TOML file, got {ref!r}")
                kw[key] = table.from_toml(_resolve(ref, base_dir, f"{key} table"))
            elif key in data:
                kw[key] = table.from_dict(data[key], where=f"{where} [{key}]")
        if "dram_bytes_per_cycle" in kw and kw["dram_bytes_per_cycle"] == 0:
            kw["dram_bytes_per_cycle"] = None
        if "clock_hz" in kw and isinstance(kw["clock_hz"], int) and not isinstance(kw["clock_hz"], bool):
            kw["clock_hz"] = float(kw["clock_hz"])
        try:
            return cls(**kw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def from_toml(cls, path) -> "ArrayConfig":
        """Load a config from a TOML file (format in the module docstring)."""
        from hwsim import tomlfile

        path = Path(path)
        return cls.from_dict(tomlfile.load(path, "array config"), base_dir=path.parent, where=f"array config {str(path)!r}")

    @classmethod
    def default(cls) -> "ArrayConfig":
        """The shipped default: ``hwsim/configs/array_32x32_os.toml`` (32x32 fixed PEs, output stationary,
        1 GHz, LPDDR4X-4266 DRAM bandwidth)."""
        return cls.from_toml(CONFIG_DIR / "array_32x32_os.toml")


def _resolve(ref: str, base_dir: Path | None, what: str) -> Path:
    p = Path(ref)
    if p.is_absolute():
        return p
    for d in ([base_dir] if base_dir else []) + [CONFIG_DIR]:
        if (d / p).exists():
            return d / p
    raise FileNotFoundError(f"{what} {ref!r} not found (looked in {', '.join(str(d) for d in ([base_dir] if base_dir else []) + [CONFIG_DIR])})")


def load_array(array) -> ArrayConfig:
    """An :class:`ArrayConfig` from a config, a TOML path, or ``None`` (the default)."""
    if array is None:
        return ArrayConfig.default()
    if isinstance(array, ArrayConfig):
        return array
    if isinstance(array, (str, Path)):
        return ArrayConfig.from_toml(array)
    raise ValueError(f"array must be an hwsim.ArrayConfig, a path to a TOML file, or None; got {array!r}")
