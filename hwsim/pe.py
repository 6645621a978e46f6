"""Processing-element kinds: which MAC specs each can run, how many cycles it takes, and its area.

Three kinds (``ArrayConfig.pe``):

``"fixed"``
    Today's bit-parallel PE: one MAC of the spec per cycle, for every format. Cycles are SCALE-Sim's
    (:mod:`hwsim.cycles`).
``"bit_fusion"``
    Bit Fusion's fusible PE (H. Sharma et al., "Bit Fusion: Bit-Level Dynamically Composable
    Architecture for Accelerating Deep Neural Networks", ISCA 2018): 16 2-bit BitBricks fused into one
    8-bit unit. With ``pa``-bit activations and ``pw``-bit weights a unit does
    ``floor(8 / max(pa, 2)) * floor(8 / max(pw, 2))`` MACs per cycle (``Accelerator.get_perf_factor``
    of the authors' simulator, hsharma35/bitfusion, ``high_prec = 8``, ``low_prec = 2``). The factor
    widens the array's reduction dimension, as that simulator's ``get_compute_cycles`` does
    (``ceil(window / (rows * factor))`` per output tile, no fill or drain overhead): a layer takes
    ``repeats * pixels * ceil(filters / cols) * ceil(window / (rows * factor))`` cycles, whatever the
    configured dataflow (SRAM traffic still follows the dataflow). Runs integer and fixed-point
    operands of 1 to 8 bits (the simulator has no wider case) with an integer or fixed-point
    accumulator of at most 32 bits (its output buffer is 32 bits wide); no floats, no MX.
``"bit_serial"``
    A bit-serial PE. ``serial_operands="a"`` (Stripes: P. Judd et al., MICRO 2016): activations
    enter one bit per cycle against bit-parallel weights, so every MAC takes ``pa`` cycles: SCALE-Sim
    cycles times ``pa``. ``serial_operands="ab"`` (Loom: S. Sharify et al., DAC 2018): both operands
    serial, ``pa * pw`` cycles per MAC. Runs integer and fixed-point operands (1 to 32 bits) with an
    integer or fixed-point accumulator; no floats, no MX.

Area (:func:`pe_area_um2`, parts in :func:`pe_area_parts`) from an :class:`hwsim.area.AreaTable`:

* **fixed**: the multiplier (integer ``pa x pw`` array; a float significand multiplier when either
  operand is a float, an integer operand counting as a ``bits``-bit significand), plus a rounder
  (an adder as wide as the product's significand) when the product is rounded (``spec.product``),
  plus, for MX operands, the shared-scale adder (9 bits) and both 8-bit scale registers; the
  accumulator adder (a float adder for a float accumulator; an integer adder otherwise, with an
  alignment shifter when float products enter a fixed-point accumulator); registers for both
  operands and the accumulator.
* **bit_fusion**: ``fusion_unit_um2``, whatever the spec (the unit is the same silicon at every
  precision; the accumulator and registers are in the figure).
* **bit_serial**: ``"a"``: a ``1 x pw`` multiplier (AND gates), the accumulator adder and registers
  for the weight, the activation's shift register and the accumulator; ``"ab"``: a ``1 x 1``
  multiplier and the same registers.
* **random bits** for stochastic rounding, on every kind: each rounding stage that rounds
  stochastically (the product when ``spec.product`` is set, the accumulation when the accumulator
  cannot hold the sum exactly) has its own ``rand_bits``-bit LFSR (register bits) and the adder
  that adds the random bits below the kept ones.
"""

from __future__ import annotations

import math

from hwsim.area import AreaTable

PE_KINDS = ("fixed", "bit_fusion", "bit_serial")
SERIAL_OPERANDS = ("a", "ab")
#: Bit Fusion's fusion unit: the widest operand it runs in one pass, and its BitBrick width.
FUSION_BITS = 8
BRICK_BITS = 2
FUSION_ACCUM_BITS = 32


def check_kind(pe, serial_operands="a"):
    if pe not in PE_KINDS:
        raise ValueError(f"unknown PE kind {pe!r}; valid: {', '.join(map(repr, PE_KINDS))}")
    if serial_operands not in SERIAL_OPERANDS:
        raise ValueError(f"unknown serial_operands {serial_operands!r}; valid: 'a' (activations serial, Stripes), "
                         "'ab' (activations and weights serial, Loom)")


def _is_integer(fmt) -> bool:
    return fmt.kind in ("int", "fixed")


def check_spec(spec, pe: str, serial_operands: str = "a") -> None:
    """Raise ``ValueError`` naming the format and the kind when ``pe`` cannot run ``spec`` (module docstring)."""
    check_kind(pe, serial_operands)
    if pe == "fixed":
        return
    label = "Bit Fusion" if pe == "bit_fusion" else "bit-serial"
    for role, fmt in (("activations (a)", spec.a), ("weights (b)", spec.b), ("accumulator", spec.accum)):
        if not _is_integer(fmt):
            raise ValueError(f"a {pe!r} PE cannot run {role} in {fmt.name}: {label} PEs run integer and fixed-point "
                             "operands and accumulators only; use pe='fixed' for float and MX formats")
    if pe == "bit_fusion":
        for role, fmt in (("activations (a)", spec.a), ("weights (b)", spec.b)):
            if fmt.bits > FUSION_BITS:
                raise ValueError(f"a 'bit_fusion' PE cannot run {fmt.bits}-bit {role} ({fmt.name}): its fusion units "
                                 f"take 1 to {FUSION_BITS} bits; use pe='fixed'")
        if spec.accum.bits > FUSION_ACCUM_BITS:
            raise ValueError(f"a 'bit_fusion' PE cannot accumulate in {spec.accum.name}: its accumulator holds at "
                             f"most {FUSION_ACCUM_BITS} bits")


def fusion_factor(pa: int, pw: int) -> int:
    """MACs per Bit Fusion unit per cycle: ``floor(8 / max(pa, 2)) * floor(8 / max(pw, 2))``."""
    return (FUSION_BITS // max(pa, BRICK_BITS)) * (FUSION_BITS // max(pw, BRICK_BITS))


def serial_factor(pa: int, pw: int, serial_operands: str) -> int:
    """Cycles per MAC of a bit-serial PE: ``pa`` (Stripes) or ``pa * pw`` (Loom)."""
    return pa * pw if serial_operands == "ab" else pa


def fusion_cycles(gemm, rows: int, cols: int, factor: int) -> int:
    """Cycles of a GEMM-shaped layer on a ``rows x cols`` Bit Fusion array (module docstring)."""
    return gemm.repeats * gemm.pixels * -(-gemm.filters // cols) * -(-gemm.window // (rows * factor))


def peak_macs_per_cycle(spec, array) -> float:
    """MACs one PE of ``array.pe`` does per cycle for ``spec``: 1, the fusion factor, or 1 / serial factor."""
    if array.pe == "bit_fusion":
        return fusion_factor(spec.a.bits, spec.b.bits)
    if array.pe == "bit_serial":
        return 1 / serial_factor(spec.a.bits, spec.b.bits, array.serial_operands)
    return 1


def array_cycles(gemm, sched, spec, array) -> int:
    """Stall-free cycles of a GEMM-shaped layer on one ``rows x cols`` array of ``array.pe`` PEs; ``sched`` is
    its SCALE-Sim schedule (:func:`hwsim.cycles.schedule`) on that array."""
    if array.pe == "bit_fusion":
        return fusion_cycles(gemm, array.rows, array.cols, fusion_factor(spec.a.bits, spec.b.bits))
    if array.pe == "bit_serial":
        return sched.cycles * serial_factor(spec.a.bits, spec.b.bits, array.serial_operands)
    return sched.cycles


# ------------------------------------------------------------------------------------------------ area


def _sig(fmt) -> int:
    return fmt.man + 1 if fmt.kind == "float" else fmt.bits


def _exp(fmt) -> int:
    return fmt.exp if fmt.kind == "float" else 0


def _elem(fmt):
    return fmt.elem if fmt.kind == "mx" else fmt


def stochastic_stages(spec) -> int:
    """How many of the MAC's rounding stages round stochastically and can round at all: the product when
    ``spec.product`` is set, the accumulation unless the accumulator holds every sum exactly (integer
    or fixed-point operands into a fixed-point accumulator with at least their fraction bits)."""
    n = 0
    if spec.product is not None and spec.product_rounding == "stochastic":
        n += 1
    if spec.accum_rounding == "stochastic":
        a, b, acc = _elem(spec.a), _elem(spec.b), spec.accum
        exact = _is_integer(a) and _is_integer(b) and _is_integer(acc) and acc.frac >= a.frac + b.frac
        if not exact:
            n += 1
    return n


def pe_area_parts(spec, pe: str = "fixed", table: AreaTable | None = None, serial_operands: str = "a") -> dict:
    """The area in µm² of one PE of kind ``pe`` running ``spec``, by part: ``multiplier``,
    ``accumulator``, ``registers``, ``random_bits`` (module docstring). Raises ``ValueError`` when the
    kind cannot run the spec."""
    from hwsim.energy import resolve_spec

    spec = resolve_spec(spec)
    check_spec(spec, pe, serial_operands)
    t = AreaTable.default() if table is None else table
    if not isinstance(t, AreaTable):
        raise ValueError(f"table must be an hwsim.area.AreaTable or None, got {t!r}")
    a, b, acc = _elem(spec.a), _elem(spec.b), spec.accum
    rand = t.register(_rand_bits(spec)) + t.adder(_rand_bits(spec))
    rng = stochastic_stages(spec) * rand
    if pe == "bit_fusion":
        return {"multiplier": t.fusion_unit_um2, "accumulator": 0.0, "registers": 0.0, "random_bits": rng}
    if pe == "bit_serial":
        mul = t.int_mul(1, 1 if serial_operands == "ab" else b.bits)
        return {"multiplier": mul, "accumulator": t.adder(acc.bits),
                "registers": t.register(a.bits + b.bits + acc.bits), "random_bits": rng}
    mx_bits = sum(f.scale_format.bits for f in (spec.a, spec.b) if f.kind == "mx")
    if a.kind == "float" or b.kind == "float":
        mul = t.float_mul(_sig(a), _sig(b), max(_exp(a), _exp(b)))
    else:
        mul = t.int_mul(a.bits, b.bits)
    if spec.product is not None:
        mul += t.adder(_sig(spec.product))
    if mx_bits:
        mul += t.adder(9)
    if acc.kind == "float":
        accum = t.float_add(_sig(acc), acc.exp)
    else:
        accum = t.adder(acc.bits)
        if a.kind == "float" or b.kind == "float":
            accum += t.shifter(acc.bits)
    regs = t.register(a.bits + b.bits + acc.bits + mx_bits)
    return {"multiplier": mul, "accumulator": accum, "registers": regs, "random_bits": rng}


def _rand_bits(spec) -> int:
    return 32 if spec.rand_bits is None else int(spec.rand_bits)


def pe_area_um2(spec, pe: str = "fixed", table: AreaTable | None = None, serial_operands: str = "a") -> float:
    """The area of one PE of kind ``pe`` running ``spec`` (a ``kernels.MacSpec`` or preset name), in µm²:
    the sum of :func:`pe_area_parts`."""
    return math.fsum(pe_area_parts(spec, pe, table, serial_operands).values())
