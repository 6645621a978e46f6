"""``MacSpec``: an immutable, validated description of one multiply-accumulate unit.

Exact semantics of every MAC kernel (:func:`kernels.matmul`, :func:`kernels.conv2d`,
:func:`kernels.depthwise_conv2d`; :mod:`kernels.reference` implements them literally):

1. **Operands.** Inputs are first rounded into the operand formats ``a`` / ``b`` with
   ``rounding="nearest"`` and the format's default overflow (identity for values already in the
   format). MX operand formats share their scale along the reduction axis: the last axis of the
   left matmul operand, the first axis of the right one; for convolutions the input-channel axis of
   the activations (NHWC axis 3) and of the weights (HWIO axis 2).
2. **Products.** Each product ``a_k * b_k`` is computed exactly (the operand precisions must add up to
   at most 53 bits, which is checked); with a ``product`` format it is then rounded into it with
   ``product_rounding`` (stochastic counter stage 0). ``fma=True`` states that the product is not
   rounded on its own (and requires ``product=None``).
3. **Accumulation** into the ``accum`` format, starting from +0. Every addition ``acc + p`` is computed
   exactly and rounded once into ``accum`` with ``accum_rounding`` and ``overflow`` (stage 1):

   An exact zero sum is +0, except under ``down`` (-0 unless both operands are +0: IEEE 754 6.3).

   * ``sequential``: ``acc = R(acc + p_k)`` for k = 0, 1, ..., K-1 (addition number ``t = k``);
   * ``pairwise``: a balanced tree. Level 0 is ``p_0..p_{K-1}``; each level adds neighbours
     ``(0,1), (2,3), ...`` with one rounding per addition; an odd last element moves up unchanged;
     the addition at level ``l`` (0-based) and position ``i`` has ``t = l * 2**24 + i``. A single
     term (K = 1) is rounded once, ``t = 0``;
   * ``chunked``: partial sums of ``chunk`` consecutive terms, each accumulated sequentially from +0
     (``t = k`` for the term ``p_k``); then the partial sums are added sequentially into the
     accumulator from +0 (``t = K + c`` for partial sum ``c``). With an ``inner`` format the partial
     sums are a second, narrower accumulator: each of their additions is rounded into ``inner`` with
     ``inner_rounding`` (default ``accum_rounding``) and ``inner_overflow`` (default: the format's own;
     ``"saturate"`` clamps), and only the additions of partial sums into the accumulator use ``accum``.
     This is a two-level accumulator: onnxruntime's x86 u8s8 GEMM without VNNI (``vpmaddubsw``
     saturates each pair of adjacent products to int16 before the int32 sums: preset
     ``ort_u8s8_pairs``), or a tensor core's multi-term adder feeding a wider register.

   K = 0 gives +0.
4. **Output.** The accumulator is rounded into ``out`` (when given) with ``accum_rounding`` (stage 2,
   ``t = 0``).

Stochastic rounding uses :mod:`kernels.rng` with counter
``((e + offset) * 4 + stage) * 2**32 + t``, where ``e`` is the flat C-order index of the output
element; so results depend only on the seed and the position, never on threads or blocking.

Convolutions are GEMMs over im2col patches: for output (n, oh, ow, co) the terms run over
``k = (dh * kw + dw) * cin + ci`` (C-order of the HWI kernel axes), zero padding included (a padded
position contributes an exact +0 term); depthwise output channel ``c * m + j`` sums over
``k = dh * kw + dw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from .formats import FixedFormat, FloatFormat, MXFormat, parse_format
from .quantize import default_overflow, rand_bits_value, rounding_code

ORDERS = ("sequential", "pairwise", "chunked")


def precision_bits(fmt) -> int:
    """Significant bits of a format's values (exact products need a + b <= 53)."""
    if isinstance(fmt, MXFormat):
        return precision_bits(fmt.elem)
    if isinstance(fmt, FloatFormat):
        return fmt.man + 1
    return fmt.bits - 1 if fmt.signed else fmt.bits


def _finest(fmt) -> float:
    """The smallest nonzero magnitude step of a format (its quantum at zero)."""
    f = fmt.elem if isinstance(fmt, MXFormat) else fmt
    if isinstance(f, FloatFormat):
        return 2.0 ** (f.emin - f.man) if f.has_zero else f.min_normal
    return f.scale


def _check_range(spec) -> None:
    """The emulator computes exactly in float64: every product must be exact there (no underflow:
    finest(a) * finest(b) >= 2**-1074; no overflow), and the product / accumulator / output formats
    must leave room for one addition (max <= 2**1022) so an overflow is seen as a finite excess."""
    import math

    la = math.log2(_finest(spec.a)) + math.log2(_finest(spec.b))
    if la < -1074:
        raise ValueError(f"operands {spec.a.name} x {spec.b.name}: products as small as 2**{la:.0f} are below "
                         "float64's resolution (2**-1074); the emulator computes products exactly in float64")
    hi = math.log2(spec.a.max) + math.log2(spec.b.max)
    if hi >= 1022:
        raise ValueError(f"operands {spec.a.name} x {spec.b.name}: products up to 2**{hi:.0f} exceed the float64 range "
                         "the emulator computes in (at most 2**1022)")
    for role in ("product", "accum", "out", "inner"):
        f = getattr(spec, role)
        if f is not None and f.max > 2.0 ** 1022:
            raise ValueError(f"{role} format {f.name} has max {f.max:.4g} > 2**1022: the emulator's float64 sums "
                             "could not see its overflows; use a format with a smaller range")


@dataclass(frozen=True)
class MacSpec:
    """One MAC unit: operand formats ``a``/``b``, optional ``product`` format, ``accum`` format,
    rounding per stage, overflow, accumulation order and optional output format.

    See the module docstring for the exact semantics. Formats may be names or format objects;
    they are stored as format objects. ``MacSpec("fp8_e4m3_fp16")`` (a preset name alone, no other
    field) is that preset; to change a preset, ``as_spec(name).with_(...)``.
    """

    a: object
    accum: object = None
    b: object = None
    product: object = None
    rounding: str = "nearest"
    product_rounding: str | None = None
    accum_rounding: str | None = None
    overflow: str | None = None
    fma: bool = False
    order: str = "sequential"
    chunk: int | None = None
    out: object = None
    rand_bits: int | None = None
    inner: object = None
    inner_rounding: str | None = None
    inner_overflow: str | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.accum is None:
            self._from_preset(set_)
            return
        set_("a", parse_format(self.a))
        set_("b", self.a if self.b is None else parse_format(self.b))
        set_("accum", parse_format(self.accum))
        if self.product is not None:
            set_("product", parse_format(self.product))
        if self.out is not None:
            set_("out", parse_format(self.out))
        if self.inner is not None:
            set_("inner", parse_format(self.inner))
            if self.order != "chunked":
                raise ValueError(f"inner={self.inner.name} is the accumulator of the partial sums of order='chunked', "
                                 f"not of order={self.order!r}")
            set_("inner_rounding", self.inner_rounding or self.accum_rounding or self.rounding)
            rounding_code(self.inner_rounding)
            if self.inner_overflow not in (None, "saturate", "wrap", "ieee"):
                raise ValueError(f"unknown inner_overflow {self.inner_overflow!r}; valid: None, 'saturate', 'wrap', "
                                 "'ieee'")
            if self.inner_overflow == "wrap" and not isinstance(self.inner, FixedFormat):
                raise ValueError(f"inner_overflow='wrap' needs an integer/fixed inner format, not {self.inner.name}")
        elif self.inner_rounding is not None or self.inner_overflow is not None:
            raise ValueError("inner_rounding / inner_overflow need an inner format")
        for role in ("accum", "product", "out", "inner"):
            f = getattr(self, role)
            if isinstance(f, MXFormat):
                raise ValueError(f"MacSpec {role}={f.name}: MX block formats are operand formats only; "
                                 "use a float or fixed-point format here")
        rounding_code(self.rounding)
        for r in ("product_rounding", "accum_rounding"):
            if getattr(self, r) is None:
                set_(r, self.rounding)
            rounding_code(getattr(self, r))
        if self.overflow not in (None, "saturate", "wrap", "ieee"):
            raise ValueError(f"unknown overflow mode {self.overflow!r}; valid: None, 'saturate', 'wrap', 'ieee'")
        if self.overflow == "wrap" and not isinstance(self.accum, FixedFormat):
            raise ValueError(f"overflow='wrap' needs an integer/fixed accumulator, not {self.accum.name}")
        if self.overflow == "ieee" and isinstance(self.accum, FixedFormat):
            raise ValueError(f"overflow='ieee' needs a float accumulator, not {self.accum.name}")
        if self.fma and self.product is not None:
            raise ValueError(f"fma=True means the product is not rounded on its own; it contradicts product={self.product.name}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown accumulation order {self.order!r}; valid: {', '.join(ORDERS)}")
        if self.order == "chunked":
            if not isinstance(self.chunk, int) or isinstance(self.chunk, bool) or self.chunk < 1:
                raise ValueError(f"order='chunked' needs chunk = a positive int, got {self.chunk!r}")
        elif self.chunk is not None:
            raise ValueError(f"chunk={self.chunk!r} is only meaningful with order='chunked', not {self.order!r}")
        rand_bits_value(self.rand_bits)
        pa, pb = precision_bits(self.a), precision_bits(self.b)
        if pa + pb > 53:
            raise ValueError(f"operands {self.a.name} x {self.b.name} need {pa} + {pb} = {pa + pb} bits for an exact "
                             "product; the emulator computes products exactly in float64 (at most 53 bits)")
        _check_range(self)
        if not self.name:
            set_("name", self._describe())

    def _from_preset(self, set_):
        """``MacSpec(name)`` with no accumulator: the preset ``name``, or an error that names the value."""
        others = [f.name for f in fields(self) if f.name not in ("a", "accum", "name")
                  and getattr(self, f.name) != f.default]
        if isinstance(self.a, str) and self.a in PRESETS:
            if others:
                raise ValueError(f"MacSpec({self.a!r}) is a preset and takes no other fields (got {', '.join(others)}); "
                                 f"to change a preset use kernels.mac.as_spec({self.a!r}).with_(...)")
            preset = PRESETS[self.a]
            for f in fields(self):
                set_(f.name, getattr(preset, f.name))
            return
        hint = (f"{self.a!r} is not a preset either; presets: {', '.join(PRESETS)}" if isinstance(self.a, str)
                else f"presets: {', '.join(PRESETS)}")
        raise ValueError(f"MacSpec needs an accumulator format, MacSpec(a, accum, ...), or a preset name alone; {hint}")

    def _describe(self) -> str:
        parts = [f"{self.a.name}" + (f"x{self.b.name}" if self.b != self.a else "")]
        if self.product is not None:
            parts.append(f"prod={self.product.name}")
        parts.append(f"acc={self.accum.name}")
        if self.out is not None:
            parts.append(f"out={self.out.name}")
        if self.product_rounding != self.accum_rounding:
            parts.append(f"{self.product_rounding}/{self.accum_rounding}")
        elif self.rounding != "nearest":
            parts.append(self.rounding)
        if self.order != "sequential":
            parts.append(self.order + (f"({self.chunk})" if self.chunk else ""))
        if self.inner is not None:
            parts.append(f"inner={self.inner.name}" + (f" {self.inner_overflow}" if self.inner_overflow else ""))
        if self.overflow:
            parts.append(self.overflow)
        return " ".join(parts)

    @property
    def out_format(self):
        """The format of the kernel's results (``out`` or, when None, ``accum``)."""
        return self.out if self.out is not None else self.accum

    @property
    def is_stochastic(self) -> bool:
        return "stochastic" in (self.product_rounding, self.accum_rounding)

    def overflow_for(self, fmt) -> str:
        """The overflow mode used when rounding into ``fmt`` (the spec's, or the format's default)."""
        if self.overflow is None:
            return default_overflow(fmt)
        if self.overflow == "wrap" and not isinstance(fmt, FixedFormat):
            return default_overflow(fmt)
        if self.overflow == "ieee" and isinstance(fmt, FixedFormat):
            return "saturate"
        return self.overflow

    def inner_overflow_for(self) -> str:
        """The overflow mode of the partial sums' rounding into ``inner``."""
        return self.inner_overflow or default_overflow(self.inner)

    def with_(self, **changes) -> "MacSpec":
        """A copy with some fields changed (re-validated)."""
        return replace(self, name="", **changes)

    @staticmethod
    def preset(name: str) -> "MacSpec":
        """A named common MAC unit; see :data:`PRESETS`."""
        if isinstance(name, MacSpec):
            return name
        if name not in PRESETS:
            raise ValueError(f"unknown MAC preset {name!r}; valid: {', '.join(PRESETS)}")
        return PRESETS[name]


def as_spec(spec) -> MacSpec:
    """A MacSpec from a MacSpec or a preset name."""
    if isinstance(spec, MacSpec):
        return spec
    if isinstance(spec, str):
        return MacSpec.preset(spec)
    raise ValueError(f"expected a MacSpec or a preset name ({', '.join(PRESETS)}), got {spec!r}")


#: Common MAC units. int8_int32 wraps like a two's-complement int32 register (as TF-Lite's
#: reference kernels assume); the narrow-operand float presets multiply exactly (the product fits the
#: accumulator's datapath) and round each addition; ``fp32`` is plain float32 arithmetic (multiply
#: rounded, then add rounded, as numpy does elementwise); ``fp32_fma`` fuses them.
PRESETS = {
    "int8_int32": MacSpec("int8", "int32", overflow="wrap", name="int8_int32"),
    "int4_int16": MacSpec("int4", "int16", overflow="wrap", name="int4_int16"),
    "fp16_fp32": MacSpec("fp16", "fp32", fma=True, name="fp16_fp32"),
    "bf16_fp32": MacSpec("bf16", "fp32", fma=True, name="bf16_fp32"),
    "fp16_fp16": MacSpec("fp16", "fp16", product="fp16", name="fp16_fp16"),
    "fp8_e4m3_fp16": MacSpec("fp8_e4m3", "fp16", fma=True, name="fp8_e4m3_fp16"),
    "fp8_e4m3_fp32": MacSpec("fp8_e4m3", "fp32", fma=True, name="fp8_e4m3_fp32"),
    "fp8_e5m2_fp16": MacSpec("fp8_e5m2", "fp16", fma=True, name="fp8_e5m2_fp16"),
    "fp32": MacSpec("fp32", "fp32", product="fp32", name="fp32"),
    # onnxruntime's x86 u8s8 GEMM without AVX-VNNI: vpmaddubsw adds each pair of adjacent u8 x s8 products
    # and saturates the pair to int16 (MLAS qgemm_kernel_avx2 / sse41), then int32 sums
    "ort_u8s8_pairs": MacSpec("uint8", "int32", b="int8", order="chunked", chunk=2, inner="int16",
                              inner_overflow="saturate", overflow="wrap", name="ort_u8s8_pairs"),
    "fp32_fma": MacSpec("fp32", "fp32", fma=True, name="fp32_fma"),
}
