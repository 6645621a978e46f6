"""The bit-width sweep's grid: which points a sweep evaluates, parsed and validated from the command line.

A **point** is ``(weights, activations, accum, rounding, seed)``: the number format of the weights
(the MAC's ``b`` operand), of the activations (``a``), of the accumulator, the rounding mode of the
MAC's products and additions, and the stochastic-rounding seed. A **configuration** is a point
without its seed; deterministic roundings have one seed (0), stochastic ones ``seeds`` (0..N-1) and
are reported as mean and standard deviation over them.

Lists (``--formats``, ``--accum``) are comma-separated tokens, each one of:

* a format name that :func:`kernels.parse_format` accepts (``int8``, ``fp8_e4m3``, ``e4m3``,
  ``fixed16.8``, ``mxfp4_e2m1``, ...);
* a family from :data:`kernels.formats.FAMILIES` (``fp8`` = every 8-bit float, ``fp6``, ``fp4``,
  ``mx``);
* a range ``A..B`` of two names that differ in one number: ``int2..int8``, ``e4m1..e4m5``,
  ``fixed8.4..fixed16.4`` (every integer step in between);
* in ``--formats`` only, a weight:activation pair ``W:A`` of the above (``int4:int8``: 4-bit
  weights, 8-bit activations); a single token means the same format for both.

MAC unit of a configuration (:func:`mac_spec`): ``MacSpec(a=activations, b=weights, accum=accum,
rounding=rounding)``. A float accumulator that cannot hold the exact product (operand precisions add
up to more than its significand) gets ``product=accum``: the product is rounded into the accumulator
format first, as in the ``fp32`` and ``fp16_fp16`` presets; otherwise the product is exact (as in
``bf16_fp32``, ``fp8_e4m3_fp16``). With this rule the float32 baseline point is exactly the ``fp32``
preset (plain float32 arithmetic).

Which accumulators pair with which operands (:func:`compatible`): integer operands (``int``,
``uint``, ``fixed``, ``mxint8``: integer codes after quantization) accumulate in integer formats
(``int<N>``, or ``fixed<W>.<F>`` with ``F <= 0``: a register that drops ``-F`` low bits); float and
MX-float operands in float formats or fixed point with fractional bits ``F > 0`` (the setting of
Gupta et al. 2015). Other combinations are skipped and listed, so ``--accum fp32,int32`` serves a
grid of both kinds. For fixed-point operands (``fixed<W>.<F>``, ``mxint8``'s 1.6 elements) an
integer accumulator names the register width: ``int32`` is a 32-bit register with the binary point
of the products (``fixed32.<Fw+Fa>``), as ``quant``'s default. Integer operands with an ``int<N>``
accumulator compute exactly (every product
and sum is an integer; only saturation can happen), so the rounding mode cannot matter: such a
configuration is run once, with the first rounding listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import kernels.formats as kf
from kernels.formats import FAMILIES, FixedFormat, FloatFormat, MXFormat, parse_format

#: The float32 configuration every sweep contains (the reference for ratios and deltas).
BASELINE = ("fp32", "fp32", "fp32", "nearest")

DEFAULT_MODEL = "cifar_cnn"
DEFAULT_FORMATS = "fp32,bf16,fp8_e4m3,fp8_e5m2,int8,int4"
DEFAULT_ACCUM = "fp32,fp16,int32"
DEFAULT_ROUNDING = "nearest,stochastic"
DEFAULT_SEEDS = 2
DEFAULT_LIMIT = 200

ROUNDINGS = ("nearest", "nearest_away", "toward_zero", "up", "down", "stochastic")


@dataclass(frozen=True, order=True)
class Point:
    """One evaluation: formats by canonical name, rounding mode, seed."""

    weights: str
    activations: str
    accum: str
    rounding: str
    seed: int

    @property
    def config(self) -> tuple[str, str, str, str]:
        return (self.weights, self.activations, self.accum, self.rounding)

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.weights, self.activations, self.accum, self.rounding, self.seed)

    def __str__(self) -> str:
        return f"{config_label(self.config)} seed {self.seed}"


# ------------------------------------------------------------------------------------------------
# list parsing

_NUM = re.compile(r"(\d+)")


def _expand_range(token: str) -> list[str]:
    lo, hi = (s.strip() for s in token.split("..", 1))
    a, b = _NUM.split(lo), _NUM.split(hi)  # text, number, text, number, ..., text
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"range {token!r}: both ends must be names that differ in one number, like int2..int8")
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diff) != 1 or diff[0] % 2 == 0:
        raise ValueError(f"range {token!r}: both ends must be names that differ in exactly one number, "
                         "like int2..int8, e4m1..e4m5 or fixed8.4..fixed16.4")
    i = diff[0]
    x, y = int(a[i]), int(b[i])
    step = 1 if y >= x else -1
    return ["".join(a[:i] + [str(n)] + a[i + 1:]) for n in range(x, y + step, step)]


def _expand_token(token: str) -> list[str]:
    t = token.strip().lower()
    if t in FAMILIES:
        return list(FAMILIES[t])
    if ".." in t:
        return _expand_range(t)
    return [t]


def split_list(text) -> list[str]:
    """Tokens of a comma-separated list (a list/tuple of strings passes through, split on commas too)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    out = []
    for it in items:
        out += [t.strip() for t in str(it).split(",") if t.strip()]
    return out


def parse_formats(text, what: str = "--formats") -> list[str]:
    """Canonical format names of a list of names, families and ranges, in order, duplicates removed.

    Raises ``ValueError`` naming every bad value (and why) at once."""
    names, bad = [], []
    for token in split_list(text):
        try:
            expanded = _expand_token(token)
        except ValueError as exc:
            bad.append(str(exc))
            continue
        for n in expanded:
            try:
                names.append(parse_format(n).name)
            except ValueError as exc:
                bad.append(f"{n!r}: {_short(exc)}")
    if bad:
        raise ValueError(f"{what}: unknown or invalid format(s): " + "; ".join(bad) +
                         f". Valid: names from `hwsim formats`, families ({', '.join(FAMILIES)}), "
                         "ranges like int2..int8, and (in --formats) weight:activation pairs like int4:int8")
    if not names:
        raise ValueError(f"{what}: empty list")
    return list(dict.fromkeys(names))


def _short(exc) -> str:
    msg = str(exc)
    return msg.split("; valid forms:")[0]


def parse_format_pairs(text) -> list[tuple[str, str]]:
    """``(weights, activations)`` pairs of a ``--formats`` list (``W:A`` tokens give pairs, others both)."""
    pairs, bad = [], []
    for token in split_list(text):
        sides = token.split(":")
        if len(sides) > 2:
            bad.append(f"{token!r}: at most one ':' (weights:activations)")
            continue
        try:
            ws = parse_formats(sides[0], "--formats")
            acts = parse_formats(sides[-1], "--formats")
        except ValueError as exc:
            bad.append(str(exc).removeprefix("--formats: "))
            continue
        if len(sides) == 1:
            pairs += [(w, w) for w in ws]
        else:
            pairs += [(w, a) for w in ws for a in acts]
    if bad:
        raise ValueError("--formats: " + "; ".join(bad))
    if not pairs:
        raise ValueError("--formats: empty list")
    return list(dict.fromkeys(pairs))


def parse_roundings(text) -> list[str]:
    toks = [t.lower() for t in split_list(text)]
    bad = [t for t in toks if t not in ROUNDINGS]
    if bad:
        raise ValueError(f"--rounding: unknown rounding mode(s) {', '.join(map(repr, bad))}; valid: {', '.join(ROUNDINGS)}")
    if not toks:
        raise ValueError("--rounding: empty list")
    return list(dict.fromkeys(toks))


# ------------------------------------------------------------------------------------------------
# formats -> MAC units


def operand_kind(fmt) -> str:
    """``"int"`` for formats whose values are integer codes after quantization (int/uint/fixed,
    MX with fixed-point elements), ``"float"`` otherwise."""
    fmt = parse_format(fmt)
    if isinstance(fmt, MXFormat):
        fmt = fmt.elem
    return "int" if isinstance(fmt, FixedFormat) else "float"


def compatible(weights: str, activations: str, accum: str) -> str | None:
    """``None`` if the accumulator pairs with the operands (module docstring), else the reason not."""
    kw, ka = operand_kind(weights), operand_kind(activations)
    acc = parse_format(accum)
    if isinstance(acc, MXFormat):
        return "MX block formats are operand formats only"
    if kw != ka:
        return None  # mixed integer/float operands: any accumulator, the quantizer decides
    if kw == "int" and not (isinstance(acc, FixedFormat) and acc.frac <= 0):
        return "integer operands accumulate in integer formats (int<N>, fixed<W>.<F> with F <= 0)"
    if kw == "float" and isinstance(acc, FixedFormat) and acc.frac <= 0:
        return "float operands need a float or fractional fixed-point (F > 0) accumulator"
    return None


def exact(weights: str, activations: str, accum: str) -> bool:
    """True when no product or sum is ever rounded: integer operands into an ``int<N>`` accumulator."""
    acc = parse_format(accum)
    return (operand_kind(weights) == operand_kind(activations) == "int" and isinstance(acc, FixedFormat)
            and acc.frac == 0)


def _precision(fmt) -> int:
    from kernels.mac import precision_bits

    return precision_bits(parse_format(fmt))


def _frac(fmt) -> int:
    f = parse_format(fmt)
    if isinstance(f, MXFormat):
        f = f.elem
    return f.frac if isinstance(f, FixedFormat) else 0


def mac_spec(weights: str, activations: str, accum: str, rounding: str):
    """The :class:`kernels.MacSpec` of a configuration (rule in the module docstring)."""
    from kernels.mac import MacSpec

    acc = parse_format(accum)
    if isinstance(acc, FixedFormat) and operand_kind(weights) == operand_kind(activations) == "int":
        shift = _frac(weights) + _frac(activations)  # the register's binary point follows the operands'
        if shift:
            acc = FixedFormat(acc.bits, acc.frac + shift, signed=acc.signed)
    product = None
    if isinstance(acc, FloatFormat) and _precision(weights) + _precision(activations) > acc.man + 1:
        product = acc
    return MacSpec(a=activations, b=weights, accum=acc, product=product, rounding=rounding)


SCALE_MODES = ("auto", "real", "pow2", "none")


def scale_kind(fmt, mode: str = "auto") -> str:
    """The quantizer's scale kind for a tensor in ``fmt`` (``quant.scales``): MX formats ``"mx"``
    always; otherwise ``mode``, where ``"auto"`` is ``"real"`` (per-tensor activations, per-channel
    weights, calibrated) for integer / fixed point, ``"none"`` for float formats whose range holds the
    float32 network's values as they are (largest value >= 128: fp16, bf16, fp8 e4m3 / e5m2; the
    accumulator then sees the network's own magnitudes, as with ``hwsim run --mac``), and ``"pow2"``
    (a power-of-two tensor scale putting the largest magnitude in the top binade) for narrower floats
    (fp6, fp4, e3m4, e4m3b11fnuz)."""
    f = parse_format(fmt)
    if isinstance(f, MXFormat):
        return "mx"
    if mode != "auto":
        return mode
    if isinstance(f, FixedFormat):
        return "real"
    return "none" if f.max >= 128 else "pow2"


def is_stochastic(rounding: str) -> bool:
    return rounding == "stochastic"


# ------------------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class Grid:
    """The configurations and points of a sweep, in evaluation order (the baseline first)."""

    pairs: tuple[tuple[str, str], ...]
    accums: tuple[str, ...]
    roundings: tuple[str, ...]
    seeds: int
    configs: tuple[tuple[str, str, str, str], ...]
    skipped: tuple[tuple[tuple[str, str, str], str], ...]

    @property
    def points(self) -> list[Point]:
        out = []
        for c in self.configs:
            for s in seeds_for(c[3], self.seeds):
                out.append(Point(*c, s))
        return out


def seeds_for(rounding: str, seeds: int) -> range:
    return range(seeds) if is_stochastic(rounding) else range(1)


def build_grid(formats=DEFAULT_FORMATS, accum=DEFAULT_ACCUM, rounding=DEFAULT_ROUNDING,
               seeds: int = DEFAULT_SEEDS) -> Grid:
    """Parse and validate the lists; raise ``ValueError`` naming bad values or an empty grid."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"--seeds must be a positive integer, got {seeds!r}")
    errors = []
    try:
        pairs = parse_format_pairs(formats)
    except ValueError as exc:
        errors.append(str(exc))
        pairs = []
    try:
        accums = parse_formats(accum, "--accum")
        mx = [a for a in accums if isinstance(parse_format(a), MXFormat)]
        if mx:
            raise ValueError(f"--accum: MX block formats are operand formats only, not accumulators: {', '.join(mx)}")
    except ValueError as exc:
        errors.append(str(exc))
        accums = []
    try:
        roundings = parse_roundings(rounding)
    except ValueError as exc:
        errors.append(str(exc))
        roundings = []
    if errors:
        raise ValueError("; ".join(errors))
    configs, skipped, invalid = [BASELINE], [], []
    for w, a in pairs:
        for acc in accums:
            why = compatible(w, a, acc)
            if why:
                skipped.append(((w, a, acc), why))
                continue
            for r in roundings[:1] if exact(w, a, acc) else roundings:
                try:
                    mac_spec(w, a, acc, r)
                except ValueError as exc:
                    invalid.append(f"{w}:{a} accum {acc} {r}: {exc}")
                    continue
                configs.append((w, a, acc, r))
    if invalid:
        raise ValueError("invalid MAC unit(s): " + "; ".join(invalid))
    configs = list(dict.fromkeys(configs))
    if len(configs) == 1 and BASELINE[:3] not in [(w, a, acc) for (w, a) in pairs for acc in accums]:
        raise ValueError("no (formats, accumulator) combination pairs up: " +
                         "; ".join(f"{w}:{a} with {acc}: {why}" for (w, a, acc), why in skipped))
    return Grid(tuple(pairs), tuple(accums), tuple(roundings), seeds, tuple(configs), tuple(skipped))


# ------------------------------------------------------------------------------------------------
# labels and families (tables and plots)


def short_name(name: str) -> str:
    """A short alias for display (``float8_e4m3fn`` -> ``fp8_e4m3``)."""
    fmt = parse_format(name)
    if not fmt.name.startswith("float"):
        return fmt.name
    aliases = [n for n, f in kf.FORMATS.items() if f is fmt and n != fmt.name]
    short = [n for n in aliases if n.startswith("fp")]
    return short[0] if short else fmt.name


def pair_label(weights: str, activations: str) -> str:
    w, a = short_name(weights), short_name(activations)
    return w if w == a else f"W {w} / A {a}"


def config_label(config) -> str:
    w, a, acc, r = config
    return f"{pair_label(w, a)}, acc {short_name(acc)}, {r}"


def family(name: str) -> str:
    """Plot family of a format: ``int``, ``fixed``, ``float``, ``mx``."""
    fmt = parse_format(name)
    if isinstance(fmt, MXFormat):
        return "mx"
    if isinstance(fmt, FixedFormat):
        return "int" if fmt.frac == 0 else "fixed"
    return "float"


def storage_bits(name: str) -> float:
    """Bits per stored element (MX: element bits + shared scale / block)."""
    fmt = parse_format(name)
    if isinstance(fmt, MXFormat):
        return fmt.bits_per_element
    return float(fmt.bits)
