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
    dram_bytes_per_cycle = 0     # 0 = no bandwidth bound (stall-free cycles only)
    energy = "horowitz45.toml"   # optional: an energy table file, relative to this file

    [energy]                     # optional instead of energy = "...": the table inline
    dram_pj_per_bit = 20.3
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hwsim.energy import EnergyTable

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
    ``dram_bytes_per_cycle``: DRAM bandwidth, ``None`` (or 0 in TOML) for no bound; ``energy``: the
    :class:`~hwsim.energy.EnergyTable` (default: Horowitz 45 nm).
    """

    rows: int = 32
    cols: int = 32
    dataflow: str = "os"
    clock_hz: float = 1.0e9
    ifmap_sram_kb: float = 256
    filter_sram_kb: float = 256
    ofmap_sram_kb: float = 128
    dram_bytes_per_cycle: float | None = None
    energy: EnergyTable = field(default_factory=EnergyTable.default)
    name: str = field(default="", compare=False)

    def __post_init__(self):
        _positive_int("rows", self.rows)
        _positive_int("cols", self.cols)
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
        if not self.name:
            object.__setattr__(self, "name", f"{self.rows}x{self.cols}-{self.dataflow}")

    @property
    def pes(self) -> int:
        return self.rows * self.cols

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
        unknown_top = sorted(set(data) - {"array", "energy"})
        if unknown_top:
            raise ValueError(f"{where}: unknown table(s) {', '.join(map(repr, unknown_top))}; valid: 'array', 'energy'")
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
        energy_ref = kw.pop("energy", None)
        if energy_ref is not None and "energy" in data:
            raise ValueError(f"{where}: give the energy table either as [array] energy = \"file\" or as an [energy] table, not both")
        if energy_ref is not None:
            if not isinstance(energy_ref, str):
                raise ValueError(f"{where}: [array] energy must be a path to an energy-table TOML file, got {energy_ref!r}")
            kw["energy"] = EnergyTable.from_toml(_resolve(energy_ref, base_dir))
        elif "energy" in data:
            kw["energy"] = EnergyTable.from_dict(data["energy"], where=f"{where} [energy]")
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
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"array config {str(path)!r} not found")
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"array config {str(path)!r} is not valid TOML: {exc}") from None
        return cls.from_dict(data, base_dir=path.parent, where=f"array config {str(path)!r}")

    @classmethod
    def default(cls) -> "ArrayConfig":
        """The shipped default: ``hwsim/configs/array_32x32_os.toml`` (32x32, output stationary, 1 GHz)."""
        return cls.from_toml(CONFIG_DIR / "array_32x32_os.toml")


def _resolve(ref: str, base_dir: Path | None) -> Path:
    p = Path(ref)
    if p.is_absolute():
        return p
    for d in ([base_dir] if base_dir else []) + [CONFIG_DIR]:
        if (d / p).exists():
            return d / p
    raise FileNotFoundError(f"energy table {ref!r} not found (looked in {', '.join(str(d) for d in ([base_dir] if base_dir else []) + [CONFIG_DIR])})")


def load_array(array) -> ArrayConfig:
    """An :class:`ArrayConfig` from a config, a TOML path, or ``None`` (the default)."""
    if array is None:
        return ArrayConfig.default()
    if isinstance(array, ArrayConfig):
        return array
    if isinstance(array, (str, Path)):
        return ArrayConfig.from_toml(array)
    raise ValueError(f"array must be an hwsim.ArrayConfig, a path to a TOML file, or None; got {array!r}")
