"""Number formats: immutable, validated descriptions of integer, fixed-point, floating-point and
OCP MX block formats, one table of named formats, and :func:`parse_format`.

Value sets (what each format can represent):

* :class:`FixedFormat` ``(bits=W, frac=F, signed)``: the integers ``k * 2**-F`` with
  ``-2**(W-1) <= k < 2**(W-1)`` (signed, two's complement) or ``0 <= k < 2**W`` (unsigned).
  ``int<N>`` / ``uint<N>`` are the ``F = 0`` cases, ``fixed<W>.<F>`` / ``ufixed<W>.<F>`` the others.
* :class:`FloatFormat` ``(exp=E, man=M, bias, subnormals, specials, signed, has_zero)``: sign-magnitude
  values ``2**e * (1 + f / 2**M)`` for exponent codes ``c`` with ``e = c - bias``, plus subnormals
  ``2**(1-bias) * f / 2**M`` at code 0 when ``subnormals`` is true. ``specials`` chooses which codes are
  not finite numbers:

  - ``"ieee"``: the top exponent code holds +-inf (mantissa 0) and NaN (otherwise), as IEEE 754;
  - ``"fn"``: finite + NaN: only the all-ones code (exponent and mantissa) is NaN, no infinities
    (OCP FP8 E4M3, ml_dtypes ``float8_e4m3fn``);
  - ``"fnuz"``: finite + NaN + unsigned zero: the negative-zero code is the only NaN, no infinities,
    no -0 (ml_dtypes ``*fnuz``, Graphcore/AMD FP8);
  - ``"none"``: every code is a finite number (OCP FP6/FP4; qtorch's formats).

  ``has_zero=False`` is the E8M0 scale format: no zero and no sign, exponent code 0 is ``2**-bias``.

* :class:`MXFormat`: OCP Microscaling v1.0 block format: ``block`` (32) consecutive elements along
  one axis share one E8M0 scale ``2**s``; each element is stored in ``elem``.

Every format has ``name``, ``kind`` (``"int"``, ``"fixed"``, ``"float"``, ``"mx"``), ``bits``,
``max`` (largest finite value), ``min_normal`` and ``min_subnormal`` (smallest positive value;
``None`` where the format has none, e.g. FloatFormat without subnormals has ``min_subnormal=None``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

SPECIALS = ("ieee", "fn", "fnuz", "none")


class _Format:
    """Common behaviour of all formats (not instantiated directly)."""

    name: str
    kind: str

    def __str__(self) -> str:
        return self.name

    @property
    def fits_float32(self) -> bool:
        """True when every value of the format is exactly representable as an IEEE float32."""
        raise NotImplementedError


@dataclass(frozen=True)
class FixedFormat(_Format):
    """Two's-complement (or unsigned) fixed point with ``bits`` total bits, ``frac`` of them fractional.

    Values are ``k * 2**-frac`` for integer codes ``k`` in ``[qmin, qmax]``; ``frac`` may be negative
    (coarser than integers) or exceed ``bits`` (a purely fractional format).
    """

    bits: int
    frac: int = 0
    signed: bool = True
    #: Symmetric signed range: codes -qmax..qmax (the most negative two's-complement code unused).
    symmetric: bool = False
    name: str = field(default="", compare=False)

    def __post_init__(self):
        if self.symmetric and not self.signed:
            raise ValueError("symmetric=True applies to signed formats only")
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise ValueError(f"fixed-point bits must be an int, got {self.bits!r}")
        lo = 2 if self.signed else 1
        if not lo <= self.bits <= 32:
            kind = "signed" if self.signed else "unsigned"
            raise ValueError(f"{kind} integer/fixed-point width {self.bits} is impossible; valid: {lo}..32 bits")
        if not isinstance(self.frac, int) or not -64 <= self.frac <= 64:
            raise ValueError(f"fractional bits {self.frac!r} out of range; valid: integers -64..64")
        if not self.name:
            u = "" if self.signed else "u"
            nm = f"{u}int{self.bits}" if self.frac == 0 else f"{u}fixed{self.bits}.{self.frac}"
            object.__setattr__(self, "name", nm + ("sym" if self.symmetric else ""))

    kind = property(lambda self: "int" if self.frac == 0 else "fixed")

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        if self.symmetric:
            return -self.qmax
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """The value of one code step, ``2**-frac``."""
        return math.ldexp(1.0, -self.frac)

    @property
    def max(self) -> float:
        return self.qmax * self.scale

    @property
    def min(self) -> float:
        """Most negative value (0 for unsigned)."""
        return self.qmin * self.scale

    @property
    def min_normal(self) -> float:
        return self.scale

    @property
    def min_subnormal(self) -> float:
        return self.scale

    @property
    def fits_float32(self) -> bool:
        mag_bits = self.bits - 1 if self.signed else self.bits
        return mag_bits <= 24 and self.frac <= 149 and mag_bits - self.frac <= 127

    @property
    def precision(self) -> int:
        """Significant bits of the magnitude."""
        return self.bits - 1 if self.signed else self.bits


@dataclass(frozen=True)
class FloatFormat(_Format):
    """A binary floating-point format with ``exp`` exponent bits and ``man`` explicit mantissa bits.

    ``bias`` defaults to ``2**(exp-1) - 1``. See the module docstring for ``specials``, ``subnormals``,
    ``signed`` and ``has_zero``. ``bits = signed + exp + man``.
    """

    exp: int
    man: int
    bias: int | None = None
    subnormals: bool = True
    specials: str = "ieee"
    signed: bool = True
    has_zero: bool = True
    name: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.exp, int) or not 1 <= self.exp <= 11:
            raise ValueError(f"exponent bits {self.exp!r} impossible; valid: 1..11")
        if not isinstance(self.man, int) or not 0 <= self.man <= 52:
            raise ValueError(f"mantissa bits {self.man!r} impossible; valid: 0..52")
        if self.specials not in SPECIALS:
            raise ValueError(f"unknown specials convention {self.specials!r}; valid: {', '.join(SPECIALS)}")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp - 1)) - 1)
        if not isinstance(self.bias, int):
            raise ValueError(f"bias must be an int, got {self.bias!r}")
        if self.specials == "ieee" and self.exp < 2:
            raise ValueError(f"e{self.exp}m{self.man} with IEEE specials has no finite normal exponent; use exp >= 2")
        if self.specials == "fnuz" and not self.signed:
            raise ValueError("specials='fnuz' encodes NaN as negative zero and needs a sign bit")
        if not self.has_zero and (self.signed or self.subnormals or self.man != 0):
            raise ValueError("has_zero=False describes E8M0 scales only: signed=False, subnormals=False, man=0")
        if self.emax_code < self.emin_code:
            raise ValueError(f"e{self.exp}m{self.man} with specials={self.specials!r} has no finite normal numbers")
        # Range must fit float64 (the emulator computes in float64).
        if self.emax > 1023 or self.emin - self.man < -1074:
            raise ValueError(f"e{self.exp}m{self.man} bias {self.bias}: range exceeds float64, which the emulator computes in")
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        base = f"e{self.exp}m{self.man}"
        std_bias = (1 << (self.exp - 1)) - 1
        extra = []
        if self.bias != std_bias:
            extra.append(f"bias={self.bias}")
        if self.specials != "ieee":
            extra.append(f"specials={self.specials}")
        if not self.subnormals:
            extra.append("no subnormals")
        if not self.signed:
            extra.append("unsigned")
        if not self.has_zero:
            extra.append("no zero")
        return base + (f"({', '.join(extra)})" if extra else "")

    kind = "float"

    @property
    def bits(self) -> int:
        return int(self.signed) + self.exp + self.man

    @property
    def emin_code(self) -> int:
        """Smallest exponent code of a normal number."""
        return 1 if self.has_zero else 0

    @property
    def emax_code(self) -> int:
        """Largest exponent code holding a finite number."""
        top = (1 << self.exp) - 1
        if self.specials == "ieee":
            return top - 1
        if self.specials == "fn" and self.man == 0:
            return top - 1  # the all-ones code is NaN and takes the whole top binade
        return top

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade."""
        return self.emin_code - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite binade."""
        return self.emax_code - self.bias

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.has_zero and self.specials != "fnuz"

    @property
    def max(self) -> float:
        top_mant = (1 << self.man) - 1
        if self.specials == "fn" and self.man > 0:
            top_mant -= 1  # all-ones mantissa at the top exponent is NaN
        return math.ldexp(1.0 + top_mant / (1 << self.man), self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float | None:
        if not (self.has_zero and self.subnormals and self.man > 0):
            return None
        return math.ldexp(1.0, self.emin - self.man)

    @property
    def min_positive(self) -> float:
        """Smallest positive value (a subnormal where the format has them)."""
        return self.min_subnormal or self.min_normal

    @property
    def fits_float32(self) -> bool:
        # the finest quantum of the format is 2**(emin - man), with or without subnormals
        return self.man <= 23 and self.emax <= 127 and self.emin - self.man >= -149


@dataclass(frozen=True)
class MXFormat(_Format):
    """OCP Microscaling (MX) v1.0 block format: ``block`` elements in ``elem`` share one E8M0 scale.

    A block's scale is ``2**(floor(log2(amax)) - emax_elem)`` (OCP MX spec v1.0, section 6.3), clamped
    to E8M0's range; elements are ``x / scale`` rounded into ``elem`` with saturation. ``bits`` is the
    element width; ``bits_per_element`` adds the amortised scale (8 / block).
    """

    elem: FloatFormat | FixedFormat
    block: int = 32
    name: str = field(default="", compare=False)

    kind = "mx"

    def __post_init__(self):
        if not isinstance(self.elem, (FloatFormat, FixedFormat)):
            raise ValueError(f"MX element format must be a FloatFormat or FixedFormat, got {self.elem!r}")
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"MX block size must be a positive int, got {self.block!r}")
        if not self.name:
            object.__setattr__(self, "name", f"mx({self.elem.name}, block={self.block})")

    @property
    def bits(self) -> int:
        return self.elem.bits

    @property
    def bits_per_element(self) -> float:
        return self.elem.bits + 8 / self.block

    @property
    def scale_format(self) -> FloatFormat:
        return E8M0

    @property
    def emax_elem(self) -> int:
        """Exponent of the element format's largest power of two (OCP: emax_elem)."""
        if isinstance(self.elem, FloatFormat):
            return self.elem.emax
        # MXINT8: elements are 1.6 fixed point (two's complement, scale 2**-6): emax_elem = 0.
        return self.elem.bits - 2 - self.elem.frac

    @property
    def max(self) -> float:
        return self.elem.max * E8M0.max

    @property
    def min_normal(self) -> float:
        return self.elem.min_normal * E8M0.min_normal

    @property
    def min_subnormal(self) -> float | None:
        sub = self.elem.min_subnormal
        return None if sub is None else sub * E8M0.min_normal

    @property
    def fits_float32(self) -> bool:
        return False


E8M0 = FloatFormat(8, 0, bias=127, subnormals=False, specials="fn", signed=False, has_zero=False,
                   name="float8_e8m0fnu")


def _f(exp, man, name, **kw) -> FloatFormat:
    return FloatFormat(exp, man, name=name, **kw)


#: The table of named formats. Aliases map to the same object.
FORMATS: dict[str, FloatFormat | FixedFormat | MXFormat] = {}


def _register(fmt, *aliases):
    for n in (fmt.name, *aliases):
        FORMATS[n] = fmt
    return fmt


_register(_f(8, 23, "fp32"), "float32")
_register(_f(5, 10, "fp16"), "float16", "half")
_register(_f(8, 7, "bf16"), "bfloat16")
_register(_f(8, 10, "tf32"))
_register(_f(11, 52, "fp64"), "float64")
# ml_dtypes' float types, with its exact semantics (ml_dtypes/include/float8.h, mxfloat.h).
_register(_f(4, 3, "float8_e4m3fn", specials="fn"), "fp8_e4m3")
_register(_f(4, 3, "float8_e4m3fnuz", bias=8, specials="fnuz"))
_register(_f(4, 3, "float8_e4m3b11fnuz", bias=11, specials="fnuz"))
_register(_f(4, 3, "float8_e4m3"))
_register(_f(5, 2, "float8_e5m2"), "fp8_e5m2")
_register(_f(5, 2, "float8_e5m2fnuz", bias=16, specials="fnuz"))
_register(_f(3, 4, "float8_e3m4"))
_register(E8M0, "e8m0")
_register(_f(2, 3, "float6_e2m3fn", specials="none"), "fp6_e2m3")
_register(_f(3, 2, "float6_e3m2fn", specials="none"), "fp6_e3m2")
_register(_f(2, 1, "float4_e2m1fn", specials="none"), "fp4_e2m1")
# OCP MX v1.0 concrete formats (Table 1 of the spec).
for _n, _e in [("mxfp8_e4m3", "fp8_e4m3"), ("mxfp8_e5m2", "fp8_e5m2"), ("mxfp6_e2m3", "fp6_e2m3"),
               ("mxfp6_e3m2", "fp6_e3m2"), ("mxfp4_e2m1", "fp4_e2m1")]:
    _register(MXFormat(FORMATS[_e], 32, name=_n))
_register(MXFormat(FixedFormat(8, 6, name="int8 (1.6)"), 32, name="mxint8"))

#: Families for sweeps and listings (``fp8`` = every 8-bit float, ...).
FAMILIES = {
    "fp8": ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e4m3", "float8_e5m2",
            "float8_e5m2fnuz", "float8_e3m4"],
    "fp6": ["float6_e2m3fn", "float6_e3m2fn"],
    "fp4": ["float4_e2m1fn"],
    "mx": ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4_e2m1", "mxint8"],
}

_VALID_FORMS = (
    "int<N> (N=2..32), uint<N> (N=1..32), fixed<W>.<F>, ufixed<W>.<F>, e<E>m<M> (E=1..11, M=0..52), "
    "or a named format: " + ", ".join(sorted(FORMATS))
)


def parse_format(name) -> FloatFormat | FixedFormat | MXFormat:
    """Return the format object for ``name`` (format objects pass through unchanged).

    Raises ``ValueError`` naming the input and the valid forms for anything else.
    """
    if isinstance(name, (FloatFormat, FixedFormat, MXFormat)):
        return name
    if not isinstance(name, str):
        raise ValueError(f"a format must be a name or a format object, got {name!r} ({type(name).__name__})")
    key = name.strip().lower()
    if key in FORMATS:
        return FORMATS[key]
    try:
        m = re.fullmatch(r"(u?)int(\d+)", key)
        if m:
            return FixedFormat(int(m[2]), 0, signed=not m[1])
        m = re.fullmatch(r"(u?)fixed(\d+)\.(-?\d+)", key)
        if m:
            return FixedFormat(int(m[2]), int(m[3]), signed=not m[1])
        m = re.fullmatch(r"e(\d+)m(\d+)", key)
        if m:
            return FloatFormat(int(m[1]), int(m[2]))
    except ValueError as exc:
        raise ValueError(f"format {name!r}: {exc}") from None
    raise ValueError(f"unknown format {name!r}; valid forms: {_VALID_FORMS}")
