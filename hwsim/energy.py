"""Energy per action of a MAC-array accelerator, as a function of the number format: :class:`EnergyTable`.

The default table, :meth:`EnergyTable.default`, is M. Horowitz, "Computing's energy problem (and what
we can do about it)", ISSCC 2014, 45 nm, 0.9 V, turned into bit-width-dependent formulas. All figures
are **45 nm estimates** in picojoules (pJ):

============================  ==========================================  =========================
action                        formula (b = bits, m = mantissa bits)        Horowitz points it gives
============================  ==========================================  =========================
integer multiply              ``0.002995 b^2 + 0.001042 b``                int8 0.200, int32 3.10
integer add                   ``0.00645 + 0.002823 b``  (see note)         int8 0.029, int16 0.052,
                                                                           int32 0.097
float multiply                ``0.004167 (m+1)^2 + 0.05417 (m+1)``         fp16 1.10, fp32 3.70
float add                     ``0.0375 (m+1)``                             fp16 0.41, fp32 0.90
SRAM read or write            ``10 pJ * sqrt(size / 8 KiB)`` per 64 bits  8 KiB: 10 pJ / 64 bit
DRAM read or write            ``20.3 pJ`` per bit (1.3 nJ / 64 bit)
register (pipeline/RF) bit    ``0.0138 pJ`` per bit read or written       extrapolation, see below
random bit (LFSR shift)       ``0.0138 pJ`` per bit, as a register bit     stochastic rounding only
leakage                       ``33.38 mW/mm²`` of PE-array area           Bit Fusion synthesis
============================  ==========================================  =========================

Notes on the choices (each is a field of the table, so a TOML file can replace it):

* **Integer add.** Horowitz lists 0.03 / 0.05 / 0.1 pJ for 8 / 16 / 32-bit adds. A pure ``c * b`` line
  through the 16- and 32-bit points (0.003125 b) gives 0.025 pJ at 8 bits, 17 % under the table; the
  default is instead the affine fit with the smallest worst-case relative error over the three points
  (equal +-3.2 % at all three). ``int_add = {c0 = 0.0, c1 = 0.003125}`` restores the pure line.
* **Float operations** scale with the significand width ``m + 1`` only (the exponent datapath is
  small next to the significand multiplier); the polynomials pass through Horowitz's fp16 and fp32
  multiply (1.1, 3.7 pJ) and fp32 add (0.9 pJ).
* **SRAM** energy per bit grows with the square root of the array size (wire length), anchored at
  Horowitz's 8 KiB SRAM (10 pJ per 64-bit access). Writes cost the same as reads.
* **Registers.** The per-PE operand and accumulator registers are charged the same square-root
  rule extrapolated down to a 64-byte register file: ``10/64 * sqrt(64 B / 8 KiB)`` = 0.0138 pJ/bit.
  This is an extrapolation, not a Horowitz figure.

MAC energy (:meth:`EnergyTable.mac_pj`) = one multiply of the two operand formats + one add in the
accumulator's format:

* operands of different widths: the multiplier is sized for the wider one. Both integer/fixed: the
  integer formula at ``max(bits)``. If either is a float: the float formula at the wider significand,
  where an integer/fixed operand of ``b`` bits counts as a ``b``-bit significand (``m + 1 = b``).
* MX operands (OCP Microscaling): the element multiply (as above, on the element formats) plus the
  shared-scale handling amortised over the block: the two 8-bit E8M0 block exponents are added once
  per block of 32 products, i.e. ``add_int(8) / 32`` per MAC.
* **Random bits.** Every stochastic rounding draws ``rand_bits`` (32 by default) fresh bits from an
  LFSR, i.e. shifts ``rand_bits`` register bits: ``rand_bits * rng_pj_per_bit`` per rounding, for each
  stage that rounds stochastically (:func:`hwsim.pe.stochastic_stages`). So a stochastic MAC costs
  more than the same MAC rounded to nearest.
* **Leakage** is charged by :func:`hwsim.cost` as ``leakage_mw_per_mm2 * PE-array area * time``, so a
  slower or larger configuration pays for it. 33.38 mW/mm² is the leakage per area of Bit Fusion's
  fixed 8-bit PE synthesised at 45 nm (22,952 nW over 687.61 µm²; hsharma35/bitfusion,
  ``results/systolic_array_synth.csv``). SRAM leakage is not modelled.
* a rounded product (``spec.product`` not ``None``) is not charged extra: rounding logic is small
  next to the multiplier and is not in Horowitz's table.

The fp8 e4m3 x fp8 e4m3 -> fp16 MAC then costs 0.70 pJ against 0.30 pJ for int8 x int8 -> int32, a
ratio of 2.3, inside the 1.5x-2.8x range that M. van Baalen et al., "FP8 versus INT8 for efficient
deep learning inference", arXiv:2303.17951 (2023) report for FP8 against INT8 MAC hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

#: Default register-file size used for the register energy extrapolation (bytes).
_RF_BYTES = 64


@dataclass(frozen=True)
class Poly:
    """``c0 + c1 * x + c2 * x**2`` in pJ."""

    c0: float = 0.0
    c1: float = 0.0
    c2: float = 0.0

    def __call__(self, x: float) -> float:
        return self.c0 + self.c1 * x + self.c2 * x * x


def _default_rf_pj_per_bit() -> float:
    return 10.0 / 64 * math.sqrt(_RF_BYTES / 8192)


@dataclass(frozen=True)
class EnergyTable:
    """Energy per action in pJ, as functions of bit widths. See the module docstring for the model.

    ``int_mul(b)``, ``int_add(b)``: integer/fixed-point ops on ``b``-bit operands;
    ``float_mul(s)``, ``float_add(s)``: float ops with ``s = m + 1`` significand bits;
    ``sram_pj_per_64b`` at ``sram_ref_kb`` KiB, scaled by ``sqrt(size / sram_ref_kb)``;
    ``dram_pj_per_bit``; ``rf_pj_per_bit`` (PE registers);
    ``mx_scale_bits``: width of the MX shared scale (E8M0, 8 bits); ``rng_pj_per_bit``: one bit of a
    stochastic-rounding LFSR shifted (default: the register energy per bit); ``leakage_mw_per_mm2``:
    leakage power per mm² of PE-array silicon.
    """

    name: str = "horowitz45"
    source: str = "M. Horowitz, Computing's energy problem, ISSCC 2014 (45 nm estimates)"
    int_mul: Poly = Poly(c0=0.0, c1=0.001042, c2=0.002995)
    int_add: Poly = Poly(c0=0.00645, c1=0.002823)
    float_mul: Poly = Poly(c0=0.0, c1=0.05417, c2=0.004167)
    float_add: Poly = Poly(c0=0.0, c1=0.0375)
    sram_pj_per_64b: float = 10.0
    sram_ref_kb: float = 8.0
    dram_pj_per_bit: float = 20.3
    rf_pj_per_bit: float = _default_rf_pj_per_bit()
    mx_scale_bits: int = 8
    rng_pj_per_bit: float = _default_rf_pj_per_bit()
    leakage_mw_per_mm2: float = 33.38

    # ------------------------------------------------------------------ construction and validation
    def __post_init__(self):
        for f in ("int_mul", "int_add", "float_mul", "float_add"):
            p = getattr(self, f)
            if not isinstance(p, Poly):
                raise ValueError(f"energy table {self.name!r}: {f} must be a Poly, got {p!r}")
            for c in ("c0", "c1", "c2"):
                v = getattr(p, c)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"energy table {self.name!r}: {f}.{c} must be a finite number >= 0 (pJ), got {v!r}")
        for f in ("sram_pj_per_64b", "dram_pj_per_bit", "rf_pj_per_bit", "rng_pj_per_bit", "leakage_mw_per_mm2"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                unit = "mW/mm^2" if f == "leakage_mw_per_mm2" else "pJ"
                raise ValueError(f"energy table {self.name!r}: {f} must be a finite number >= 0 ({unit}), got {v!r}")
        if not isinstance(self.sram_ref_kb, (int, float)) or isinstance(self.sram_ref_kb, bool) or not self.sram_ref_kb > 0:
            raise ValueError(f"energy table {self.name!r}: sram_ref_kb must be a number > 0 (KiB), got {self.sram_ref_kb!r}")
        if not isinstance(self.mx_scale_bits, int) or isinstance(self.mx_scale_bits, bool) or self.mx_scale_bits < 0:
            raise ValueError(f"energy table {self.name!r}: mx_scale_bits must be an int >= 0, got {self.mx_scale_bits!r}")

    @classmethod
    def default(cls) -> "EnergyTable":
        """The Horowitz ISSCC 2014 45 nm table (the module docstring lists every formula)."""
        return cls()

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "energy table") -> "EnergyTable":
        """Build a table from a mapping as read from TOML. Missing keys keep the default's value.

        Keys: ``name``, ``source``, ``sram_pj_per_64b``, ``sram_ref_kb``, ``dram_pj_per_bit``,
        ``rf_pj_per_bit``, ``mx_scale_bits``, ``rng_pj_per_bit``, ``leakage_mw_per_mm2`` (numbers), and ``int_mul``, ``int_add``, ``float_mul``,
        ``float_add`` (tables with keys ``c0``, ``c1``, ``c2``).
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a table of energy entries, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        base = cls.default()
        kw = {}
        for key, val in data.items():
            if key in ("int_mul", "int_add", "float_mul", "float_add"):
                if not isinstance(val, dict):
                    raise ValueError(f"{where}: {key} must be a table with keys c0, c1, c2 (pJ = c0 + c1*x + c2*x^2), got {val!r}")
                bad = sorted(set(val) - {"c0", "c1", "c2"})
                if bad:
                    raise ValueError(f"{where}: {key}: unknown coefficient(s) {', '.join(map(repr, bad))}; valid: c0, c1, c2")
                kw[key] = Poly(**{c: val.get(c, 0.0) for c in ("c0", "c1", "c2")})
            elif key in ("name", "source"):
                if not isinstance(val, str):
                    raise ValueError(f"{where}: {key} must be a string, got {val!r}")
                kw[key] = val
            else:
                kw[key] = val
        try:
            return replace(base, **kw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    @classmethod
    def from_toml(cls, path) -> "EnergyTable":
        """Load a table from a TOML file: the keys of :meth:`from_dict`, at top level or under ``[energy]``."""
        from hwsim import tomlfile

        return cls.from_dict(tomlfile.load(path, "energy table", "energy"), where=f"energy table {str(path)!r}")

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = {"c0": v.c0, "c1": v.c1, "c2": v.c2} if isinstance(v, Poly) else v
        return out

    # ------------------------------------------------------------------------- per-action queries
    def mul_pj(self, fmt) -> float:
        """Energy of one multiply of two operands in ``fmt`` (a format object or name).

        int/fixed: ``int_mul(bits)``; float: ``float_mul(man + 1)``; MX: the element multiply plus the
        block-scale add amortised over the block (``int_add(mx_scale_bits) / block``).
        """
        fmt = _fmt(fmt)
        return self._mul(fmt, fmt)

    def add_pj(self, fmt) -> float:
        """Energy of one add in ``fmt``: int/fixed ``int_add(bits)``, float ``float_add(man + 1)``, MX: its element's add."""
        fmt = _fmt(fmt)
        if fmt.kind == "mx":
            fmt = fmt.elem
        if fmt.kind == "float":
            return self.float_add(fmt.man + 1)
        return self.int_add(fmt.bits)

    def mac_pj(self, spec) -> float:
        """Energy of one MAC of ``spec`` (a ``kernels.MacSpec`` or a preset name): multiply + accumulate.

        The multiplier is sized for the wider operand (module docstring); the add is in ``spec.accum``.
        """
        spec = resolve_spec(spec)
        return self._mul(spec.a, spec.b) + self.add_pj(spec.accum)

    def rng_pj(self, spec) -> float:
        """Energy of the random bits one MAC of ``spec`` draws: ``stages * rand_bits * rng_pj_per_bit``."""
        from hwsim.pe import stochastic_stages

        spec = resolve_spec(spec)
        bits = 32 if spec.rand_bits is None else int(spec.rand_bits)
        return stochastic_stages(spec) * bits * self.rng_pj_per_bit

    def sram_pj_per_bit(self, size_kb: float) -> float:
        """Energy per bit read from or written to an SRAM of ``size_kb`` KiB: ``(E64/64) * sqrt(size/ref)``."""
        if not size_kb > 0:
            raise ValueError(f"SRAM size must be > 0 KiB, got {size_kb!r}")
        return self.sram_pj_per_64b / 64.0 * math.sqrt(size_kb / self.sram_ref_kb)

    # ------------------------------------------------------------------------------------ helpers
    def _significand_bits(self, fmt) -> int:
        return fmt.man + 1 if fmt.kind == "float" else fmt.bits

    def _mul(self, a, b) -> float:
        a, b = _fmt(a), _fmt(b)
        extra = 0.0
        if a.kind == "mx" or b.kind == "mx":
            blocks = [f.block for f in (a, b) if f.kind == "mx"]
            extra = self.int_add(self.mx_scale_bits) / min(blocks) if self.mx_scale_bits else 0.0
            a = a.elem if a.kind == "mx" else a
            b = b.elem if b.kind == "mx" else b
        if a.kind == "float" or b.kind == "float":
            return self.float_mul(max(self._significand_bits(a), self._significand_bits(b))) + extra
        return self.int_mul(max(a.bits, b.bits)) + extra


def _fmt(fmt):
    """A format object from a name or object (via ``kernels.parse_format``)."""
    if isinstance(fmt, str):
        from kernels import parse_format

        return parse_format(fmt)
    if not hasattr(fmt, "kind") or not hasattr(fmt, "bits"):
        raise ValueError(f"expected a number format (object or name such as 'int8', 'fp16'), got {fmt!r}")
    return fmt


def resolve_spec(spec):
    """A ``kernels.MacSpec`` from a spec object or a preset name (``kernels.MacSpec.preset``)."""
    if isinstance(spec, str):
        from kernels import MacSpec

        return MacSpec.preset(spec)
    for attr in ("a", "b", "accum"):
        if not hasattr(spec, attr):
            raise ValueError(f"expected a kernels.MacSpec or a preset name such as 'int8_int32', got {spec!r}")
    return spec


def storage_bits(fmt) -> float:
    """Bits one element occupies in memory: ``bits``, plus the amortised shared scale for MX formats."""
    fmt = _fmt(fmt)
    if fmt.kind == "mx":
        return fmt.elem.bits + 8 / fmt.block
    return float(fmt.bits)
