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
  binary16 / bfloat16 *once*, also when float32 rounds the product. The float32 product ``s`` and its exact
  error ``e = fma(a, b, -s)`` (one FMA instruction, :data:`HAVE_FMA`) give the exact product ``x = s + e``,
  and :func:`round_odd` turns them into ``x`` rounded to odd in float32 (``s`` where ``e`` is zero, else the
  one of x's two float32 neighbours whose last significand bit is 1), which then rounds to the 16-bit
  format as ``x`` itself would. Rounding to odd into a format of at least P + 2 bits is innocuous for a
  later rounding to nearest into P bits (S. Boldo and G. Melquiond, "Emulation of FMA and correctly
  rounded sums: proved algorithms using rounding to odd", IEEE Trans. Computers 57(4), 2008); here
  directly: every midpoint between two neighbours of the 16-bit format (subnormal ones and the overflow
  threshold, 65520 for binary16, included) is a float32 value whose last significand bit is 0. An
  inexact ``x`` rounds to an odd neighbour, so never onto a midpoint, and rounding is monotonic, so
  that neighbour lies strictly on x's side of every midpoint: both round to the same 16-bit value.
  Exact only where ``e`` is: the caller keeps ``|a * b|`` in [2**-100, float32 max] (the error of a
  float32 product is a float32 value unless the product's exponents sum below -103, Boldo & Muller) or
  zero.
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
def round_odd(s, e):
    """float32 ``x = s + e`` rounded to odd, for ``s`` = x rounded to nearest in float32 and ``e`` = x - s,
    exact: ``s`` where e is zero (or NaN: s is then an inf, or NaN, and stays), else the float32 neighbour
    of x on e's side of s where s's last significand bit is 0 (one step of its bit pattern, away from
    zero where e has s's sign, else towards zero), and s itself where that bit is 1. Branch-free, so
    that it vectorises (see the module docstring for why it serves the 16-bit roundings). An overflowed
    product is outside this contract: ``s`` = inf with ``e = fma(a, b, -s)`` = -inf gives float32's largest
    value (which both 16-bit roundings still take to inf); the product gates keep products finite."""
    u = f32_bits(s)
    away = (f32_bits(e) ^ u) < _SIGN  # e has s's sign: x lies beyond s, away from zero
    step = _ONE if away else _ALL  # +1 or -1 on the bit pattern (uint32 wrap-around)
    return bits_f32(np.uint32(u + step)) if (e != 0 and (u & _ONE) == _ZERO and not np.isnan(e)) else s


@njit(cache=True, inline="always")
def product_f16(a, b):
    """float32 ``a * b`` rounded to nearest even into binary16 once, as float32 (module docstring)."""
    s = a * b
    return round_f16(round_odd(s, _fma32(a, b, -s)))


@njit(cache=True, inline="always")
def product_bf16(a, b):
    """float32 ``a * b`` rounded to nearest even into bfloat16 once, as float32 (module docstring)."""
    s = a * b
    return round_bf16(round_odd(s, _fma32(a, b, -s)))


_SIGN = np.uint32(0x80000000)
_ALL = np.uint32(0xFFFFFFFF)
_ZERO = np.uint32(0)
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
