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
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._core import f32_bits


def _host_has_f16c() -> bool:
    try:
        return "+f16c" in _llvm.get_host_cpu_features().flatten().split(",")
    except RuntimeError:  # llvmlite cannot tell on this host: do not rely on the instruction
        return False


HAVE_F16C = _host_has_f16c()


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


@intrinsic
def _fmuladd32(typingctx, a, b, c):
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fmuladd", [f32], ir.FunctionType(f32, [f32] * 3))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(cache=True, inline="always")
def mul_add_f32(a, b, c):
    """float32 ``a * b + c``, fused or not (see the module docstring): exact ``a * b`` only."""
    return _fmuladd32(a, b, c)


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
