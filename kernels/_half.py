"""float32 -> 16-bit float -> float32 round trips that vectorise, for the 16-bit accumulator lanes.

* :func:`round_f16`: IEEE 754 round-to-nearest-even of a float32 into binary16 (fp16), widened back
  to float32. It is LLVM's ``fptrunc float to half`` followed by ``fpext``: on x86 with F16C one
  ``vcvtps2ph`` / ``vcvtph2ps`` pair per 16 lanes. Subnormals are kept, ``|x| >= 65520`` becomes inf,
  inf and NaN stay. Only for hosts with F16C (:data:`HAVE_F16C`): elsewhere LLVM would call a
  runtime helper that Numba may not link, and callers take another path.
* :func:`round_bf16`: round-to-nearest-even of a float32 into bfloat16, widened back, by integer
  arithmetic on the bit pattern: ``(u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000``. Exact for every
  finite float32 and for inf (bfloat16 shares float32's exponent field, so subnormals round the same
  way and a carry out of the largest finite binade lands on inf, which is IEEE overflow); a NaN may
  turn into inf, so callers never pass one.

The MAC kernels use them to accumulate in float32 and round each sum once to the 16-bit format,
which equals one rounding of the exact sum when both addends are values of that format (see
``kernels.ops._half_lane``).

* :func:`mul_add_f32`: ``a * b + c`` in float32, LLVM's ``llvm.fmuladd``: one FMA where the target has
  one, else a multiply and an add. The two differ only when ``a * b`` is inexact in float32, so callers
  pass exact products only; then either is one rounding of the exact ``a * b + c``.
* :func:`product_f16` / :func:`product_bf16`: a float32 product ``a * b`` rounded to nearest even into
  binary16 / bfloat16 *once*, also when float32 rounds the product: the float32 product ``s`` and its
  exact error ``e = fma(a, b, -s)`` (one FMA instruction, :data:`HAVE_FMA`) give the exact product
  ``s + e``. Rounding ``s`` again is wrong only when ``s`` is exactly halfway between two neighbours of
  the 16-bit format and ``e != 0``: every such midpoint is a float32 value and rounding is monotonic,
  so a rounded ``s`` that is no midpoint has the exact product's nearest neighbour. At a midpoint the
  sign of ``e`` picks the neighbour (``e == 0`` is a true tie, to even). Exact only where ``e`` is: the
  caller keeps ``|a * b|`` in [2**-100, float32 max] (the error of a float32 product is a float32
  value unless the product's exponents sum below -103, Boldo & Muller) or zero.
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._core import f32_bits


def _host_has(feature: str) -> bool:
    try:
        return f"+{feature}" in _llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:  # llvmlite cannot tell on this host: do not rely on the instruction
        return False


HAVE_F16C = _host_has("f16c")
#: an FMA instruction (elsewhere ``llvm.fma`` would be a libm call that Numba may not link)
HAVE_FMA = _host_has("fma")


@intrinsic
def _f16_round_trip(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.fptrunc(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.float32), codegen


@njit(cache=True, inline="always")
def round_f16(x):
    """float32 ``x`` rounded to nearest even into binary16, as float32 (see the module docstring)."""
    return _f16_round_trip(x)


def _f32_intrinsic3(name):
    """An intrinsic calling LLVM's three-operand float32 intrinsic ``name`` (``llvm.fmuladd``, ``llvm.fma``)."""

    @intrinsic
    def call(typingctx, a, b, c):
        if not (a == b == c == types.float32):
            return None

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            return builder.call(builder.module.declare_intrinsic(name, [f32], ir.FunctionType(f32, [f32] * 3)), args)

        return types.float32(types.float32, types.float32, types.float32), codegen

    return call


_fmuladd32 = _f32_intrinsic3("llvm.fmuladd")
_fma32 = _f32_intrinsic3("llvm.fma")


@njit(cache=True, inline="always")
def mul_add_f32(a, b, c):
    """float32 ``a * b + c``, fused or not (see the module docstring): exact ``a * b`` only."""
    return _fmuladd32(a, b, c)


@njit(cache=True, inline="always")
def _round_exact(s, e, r, emin, man):
    """The 16-bit rounding of the exact value s + e, given ``r``, the rounding of s, before the overflow
    check (see the module docstring; ``emin``, ``man``: the format's smallest normal exponent and
    mantissa bits). On magnitudes, where float32's q - floor(q) is exact (for a negative q above -0.5
    it is 1 - |q|, which rounds). Branch-free, so that it vectorises."""
    E = np.int32((f32_bits(s) >> _E23) & _EMASK) - _BIAS
    qe = max(E, emin) - man  # the format's quantum at s is 2**qe
    q = np.abs(s) * bits_f32(np.uint32((_BIAS - qe) << _E23))  # |s| / 2**qe, exact
    fq = np.floor(q)
    away = (e > 0) == (s > 0)  # the exact value lies beyond s, away from zero
    side = np.copysign((fq + _ONEF if away else fq) * bits_f32(np.uint32((_BIAS + qe) << _E23)), s)
    return side if (q - fq == _HALF and e != 0) else r  # s a midpoint: the neighbour on e's side


@njit(cache=True, inline="always")
def product_f16(a, b):
    """float32 ``a * b`` rounded to nearest even into binary16 once, as float32 (module docstring)."""
    s = a * b
    return round_f16(_round_exact(s, _fma32(a, b, -s), round_f16(s), -14, 10))  # 65536 (a midpoint moved up): inf


@njit(cache=True, inline="always")
def product_bf16(a, b):
    """float32 ``a * b`` rounded to nearest even into bfloat16 once, as float32 (module docstring)."""
    s = a * b
    return round_bf16(_round_exact(s, _fma32(a, b, -s), round_bf16(s), -126, 7))


_E23 = np.uint32(23)
_EMASK = np.uint32(0xFF)
_BIAS = np.int32(127)
_HALF = np.float32(0.5)
_ONEF = np.float32(1.0)
_M16 = np.uint32(0xFFFF0000)
_H16 = np.uint32(0x7FFF)
_S16 = np.uint32(16)
_ONE = np.uint32(1)


@intrinsic
def bits_f32(typingctx, x):
    if x != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(cache=True, inline="always")
def round_bf16(x):
    """float32 ``x`` (not NaN) rounded to nearest even into bfloat16, as float32."""
    u = f32_bits(x)
    return bits_f32(np.uint32((u + _H16 + ((u >> _S16) & _ONE)) & _M16))
