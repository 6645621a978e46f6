"""Silicon area of the parts of a processing element, as a function of bit widths: :class:`AreaTable`.

The default table, :meth:`AreaTable.default` (``hwsim/configs/area45.toml``), is a **45 nm estimate**
in µm², built from five per-bit coefficients:

==============================  =============================================  =====================
part                            area                                           coefficient
==============================  =============================================  =====================
integer multiplier (pa x pw)    ``int_mul_um2 * pa * pw`` (array multiplier:   ``int_mul_um2``
                                one partial-product cell per bit pair)
float multiplier                ``float_mul_um2 * sa * sb`` (``s = man + 1``,   ``float_mul_um2``
                                significand array) + an exponent adder
adder, accumulator (b bits)     ``adder_um2_per_bit * b``                       ``adder_um2_per_bit``
register (b bits)               ``register_um2_per_bit * b``                    ``register_um2_per_bit``
barrel shifter (w bits wide)    ``shifter_um2_per_bit * w * ceil(log2 w)``      ``shifter_um2_per_bit``
Bit Fusion fusion unit          as synthesised, whole                          ``fusion_unit_um2``
==============================  =============================================  =====================

**Calibration** (the numbers and their derivation are in ``area45.toml``):

* ``int_mul_um2``, ``adder_um2_per_bit`` and ``register_um2_per_bit`` are fitted (smallest worst-case
  relative error) to the areas of Bit Fusion's fixed-bitwidth PEs synthesised at 45 nm: 124.9 /
  282.2 / 687.6 / 2,203.2 µm² for 2 / 4 / 8 / 16-bit operands (H. Sharma et al., "Bit Fusion:
  Bit-Level Dynamically Composable Architecture for Accelerating Deep Neural Networks", ISCA 2018).
  The areas are the single-PE rows of ``results/systolic_array_synth.csv`` in the authors'
  repository (hsharma35/bitfusion). Such a PE is modelled as a b x b multiplier, a (2b + 6)-bit
  accumulator and registers for both operands and the accumulator. ``adder_um2_per_bit`` and
  ``register_um2_per_bit`` are fixed beforehand at the NanGate 45 nm Open Cell Library's ``FA_X1``
  full adder (4.256 µm²) and ``DFF_X1`` flip-flop (4.522 µm²); ``int_mul_um2`` is the minimax fit
  (errors +6.0 / -6.0 / +0.4 / -1.2 %), the 6 guard bits the width that fits best.
* ``fusion_unit_um2``: Bit Fusion's fusible PE (16 BitBricks, 2- to 8-bit operands) as synthesised in
  the same file, 1,733.13 µm²; its accumulator and registers are part of that figure.
* Floats are scaled from the integer units by M. Horowitz's 45 nm figures ("Computing's energy
  problem (and what we can do about it)", ISSCC 2014): ``float_mul_um2`` makes an fp32 multiplier
  (24 x 24 significand) 7,700 / 3,495 = 2.20 times a 32 x 32 integer multiplier, and
  ``shifter_um2_per_bit`` makes an fp32 adder 4,184 / 137 = 30.5 times a 32-bit integer adder.

A float adder (:meth:`AreaTable.float_add`) on ``s``-bit significands with ``e``-bit exponents is an
exponent subtractor (``e + 1`` bits), an alignment shifter and a normalisation shifter (each ``s + 3``
bits wide: guard, round and sticky bits) and a significand adder (``s + 3`` bits); the shifter
coefficient absorbs the leading-zero count and the rounding logic, which are not modelled apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

CONFIG_DIR = Path(__file__).with_name("configs")
_NUMBERS = ("int_mul_um2", "float_mul_um2", "adder_um2_per_bit", "register_um2_per_bit", "shifter_um2_per_bit",
            "fusion_unit_um2")


@dataclass(frozen=True)
class AreaTable:
    """Area per bit of the parts of a PE, in µm² (model and calibration: module docstring).

    Every coefficient is a finite number > 0. Build one from TOML with :meth:`from_toml` (the keys
    are the field names, at top level or under ``[area]``); a table must give every coefficient.
    """

    name: str
    source: str
    int_mul_um2: float
    float_mul_um2: float
    adder_um2_per_bit: float
    register_um2_per_bit: float
    shifter_um2_per_bit: float
    fusion_unit_um2: float

    def __post_init__(self):
        for f in ("name", "source"):
            if not isinstance(getattr(self, f), str):
                raise ValueError(f"area table: {f} must be a string, got {getattr(self, f)!r}")
        for f in _NUMBERS:
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"area table {self.name!r}: {f} must be a finite number > 0 (µm²), got {v!r}")

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: dict, *, where: str = "area table") -> "AreaTable":
        """A table from a mapping as read from TOML; every key of the dataclass is required."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a table of area coefficients, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        missing = [k for k in valid if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(map(repr, missing))}; an area table gives all of "
                             f"{', '.join(valid)}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def from_toml(cls, path) -> "AreaTable":
        """Load a table from a TOML file: the keys of :meth:`from_dict`, at top level or under ``[area]``."""
        from hwsim import tomlfile

        return cls.from_dict(tomlfile.load(path, "area table", "area"), where=f"area table {str(path)!r}")

    @classmethod
    def default(cls) -> "AreaTable":
        """The shipped 45 nm table, ``hwsim/configs/area45.toml`` (calibration: module docstring)."""
        return _default()

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_(self, **kw) -> "AreaTable":
        return replace(self, **kw)

    # ------------------------------------------------------------------------------ parts (µm²)
    def int_mul(self, pa: int, pw: int) -> float:
        """An integer array multiplier of ``pa`` x ``pw`` bits."""
        return self.int_mul_um2 * pa * pw

    def float_mul(self, sa: int, sb: int, exp_bits: int) -> float:
        """A float multiplier of ``sa`` x ``sb`` significand bits plus the ``exp_bits + 1``-bit exponent adder."""
        return self.float_mul_um2 * sa * sb + self.adder(exp_bits + 1)

    def adder(self, bits: float) -> float:
        """A ``bits``-bit integer adder."""
        return self.adder_um2_per_bit * bits

    def register(self, bits: float) -> float:
        """``bits`` flip-flops."""
        return self.register_um2_per_bit * bits

    def shifter(self, width: int) -> float:
        """A barrel shifter ``width`` bits wide: ``ceil(log2 width)`` stages of ``width`` 2:1 multiplexers."""
        return self.shifter_um2_per_bit * width * max(1, math.ceil(math.log2(max(width, 2))))

    def float_add(self, sig: int, exp_bits: int) -> float:
        """A float adder on ``sig``-bit significands (module docstring): exponent subtractor, alignment and
        normalisation shifters and significand adder, each on ``sig + 3`` bits."""
        w = sig + 3
        return self.adder(exp_bits + 1) + 2 * self.shifter(w) + self.adder(w)


_DEFAULT: list = []


def _default() -> AreaTable:
    if not _DEFAULT:
        _DEFAULT.append(AreaTable.from_toml(CONFIG_DIR / "area45.toml"))
    return _DEFAULT[0]
