"""Register-blocked float32 GEMM blocks for the float32 paths of :mod:`kernels.ops`, written in LLVM IR.

:func:`make_block` returns a Numba intrinsic ``block(wide, init, K, prows, pb, ldb, pc, ldc)`` on raw float32
addresses (int64; strides in elements). Row p of A is the K float32 values at the byte address ``prows[p]``
(``prows`` the address of an int64 table of ``rows`` entries), so a caller can point the rows into a
convolution's input instead of gathering them. It computes, for the ``rows`` rows p of A and the 16
(``wide`` = 1) or 8 columns j of B at ``pb``::

    acc = C[p, j] if init == 1 else +0;  for k = 0, 1, ..., K - 1:  acc = step(acc, A[p, k], B[k, j]);  C[p, j] = acc

(``init`` = 1 continues a sum over the next K values of k: a caller splits K into segments without changing
the order of the additions.)

each output alone, in order of k, with the ``kind`` (:data:`kernels.ops._KINDS` positions) of
:func:`kernels.ops._f32_add`:

* 0, NATIVE32: ``acc + a * b``, an IEEE float32 multiply and add, never fused;
* 1, HALF_F16: ``llvm.fmuladd`` (the products are exact, so fused or not is one rounding), then
  ``fptrunc`` to half and ``fpext`` back (:func:`kernels._half.round_f16`);
* 2, HALF_BF16: ``llvm.fmuladd``, then the bfloat16 rounding of :func:`kernels._half.round_bf16` on the bit
  pattern, ``(u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000``;
* 3 / 4, HALF_PRODUCT_F16 / BF16: the float32 product, its exact error by ``llvm.fma``, the product rounded
  once into binary16 / bfloat16 as :func:`kernels._half.product_f16` / ``product_bf16`` do it (rounded to odd in
  float32, :func:`kernels._half.round_odd`, then to the 16-bit format), then the unfused float32 sum rounded
  again;
* 5 / 6, HALF_PRODUCT_EXACT_F16 / BF16: as 3 / 4 for products exact in float32: the float32 product rounded
  to the 16-bit format directly.

The ``rows`` x 2 (or 1) accumulators are ``<8 x float>`` values that stay in registers across the k loop (LLVM
promotes their stack slots), so each step loads 2 (or 1) vectors of B and ``rows`` scalars of A and does no
other memory traffic; with 6 rows and 16 columns, twelve independent dependency chains hide the add and round
latency. AVX2 has 16 vector registers: 12 accumulators, 2 of B and a broadcast. Prototype (one thread,
--avx2, fp8 operands, /tmp): NATIVE32 30.3 / 30.1 / 35.3 GMAC/s and HALF_F16 14.2 / 15.3 / 15.9 on (M, K, N)
= (8004, 288, 32), (8004, 576, 64), (2004, 512, 512), against 17.3 / 24.0 / 27.3 and 11.7 / 13.8 / 15.2 for
the four-row scalar tile; HALF_F16 is bound by the F16C conversions (a float32-only rounding was no faster).
A C prototype of the same block (gcc -O3, --avx2 flags, one thread, Zen 4) reached 16.5 GMAC/s with A and B in
L1 and 12.7-14.6 on (8004, 288 / 576, 32 / 64): the conversions' throughput is the limit, so the tiles' only
further lever is fewer steps.

:func:`sparse_block` is that lever: ``sparse_block(kind, rows, wide, n, pidx, pval, ldl, pcnt, pb, ldb, pc,
ldc)`` steps through each row's list of nonzero values of A (and their k) instead of all K, each row loading its
own row of B, and leaves the others' products out; :func:`kernels.ops._make_sparse_tile` says why the sums stay
the same.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_V8 = ir.VectorType(_F32, 8)
_U8 = ir.VectorType(_I32, 8)
_H8 = ir.VectorType(ir.HalfType(), 8)


def _round(builder, kind, s):
    """The accumulator rounding of ``kind`` on an <8 x float> sum (kinds 1 and 2)."""
    if kind == 1:
        return builder.fpext(builder.fptrunc(s, _H8), _V8)
    u = builder.bitcast(s, _U8)
    lsb = builder.and_(builder.lshr(u, ir.Constant(_U8, [16] * 8)), ir.Constant(_U8, [1] * 8))
    r = builder.and_(builder.add(builder.add(u, ir.Constant(_U8, [0x7FFF] * 8)), lsb),
                     ir.Constant(_U8, [0xFFFF0000] * 8))
    return builder.bitcast(r, _V8)


def _vconst(ty, v):
    return ir.Constant(ir.VectorType(ty, 8), [v] * 8)


def _round_odd(builder, s, e):
    """:func:`kernels._half.round_odd` on <8 x float> lanes: s + e rounded to odd in float32, for s = RN32(s + e)
    and the exact error e (s unchanged where e is zero or NaN)."""
    u = builder.bitcast(s, _U8)
    sign_differs = builder.icmp_signed("<", builder.xor(builder.bitcast(e, _U8), u), _vconst(_I32, 0))
    step = builder.select(sign_differs, _vconst(_I32, -1), _vconst(_I32, 1))
    even = builder.icmp_unsigned("==", builder.and_(u, _vconst(_I32, 1)), _vconst(_I32, 0))
    move = builder.and_(builder.fcmp_ordered("!=", e, _vconst(_F32, 0.0)), even)  # ordered: false for NaN
    return builder.bitcast(builder.select(move, builder.add(u, step), u), _V8)


def _product_step(builder, kind, acc, a, b):
    """acc + the product a * b rounded once into binary16 (kinds 3, 5) / bfloat16 (kinds 4, 6), the sum rounded
    again (:func:`kernels.ops._f32_add`, :func:`kernels._half.product_f16` / ``product_bf16``; kinds 5 and 6:
    the product exact in float32, rounded once directly)."""
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * 3), "llvm.fma.v8f32")
    r16 = 1 if kind in (3, 5) else 2
    s = builder.fmul(a, b)
    if kind >= 5:  # products exact in float32
        p = _round(builder, r16, s)
    else:
        p = _round(builder, r16, _round_odd(builder, s, builder.call(fma, [a, b, builder.fneg(s)])))
    return _round(builder, r16, builder.fadd(acc, p))


def _emit(builder, kind, nv, rows, init, K, arow, B, ldb, C, ldc):
    """The IR of one block of ``rows`` rows and ``8 * nv`` columns (see the module docstring)."""
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * 3), "llvm.fmuladd.v8f32")
    slots = [[cgutils.alloca_once(builder, _V8) for _ in range(nv)] for _ in range(rows)]
    cvec = [[builder.bitcast(builder.gep(builder.gep(C, [builder.mul(ir.Constant(_I64, p), ldc)]),
                                         [ir.Constant(_I64, 8 * q)]), _V8.as_pointer()) for q in range(nv)]
            for p in range(rows)]
    with builder.if_else(builder.icmp_signed("==", init, ir.Constant(_I64, 1))) as (then, otherwise):
        with then:  # go on from the sums in C
            for p in range(rows):
                for q in range(nv):
                    builder.store(builder.load(cvec[p][q], align=4), slots[p][q])
        with otherwise:
            for row in slots:
                for slot in row:
                    builder.store(ir.Constant(_V8, [0.0] * 8), slot)
    undef = ir.Constant(_V8, ir.Undefined)
    zero_mask = ir.Constant(_U8, [0] * 8)
    with cgutils.for_range(builder, K) as loop:
        k = loop.index
        brow = builder.gep(B, [builder.mul(k, ldb)])
        bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(_I64, 8 * q)]), _V8.as_pointer()), align=4)
              for q in range(nv)]
        for p in range(rows):
            a = builder.load(builder.gep(arow[p], [k]))
            av = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(_I32, 0)), undef, zero_mask)
            for q in range(nv):
                acc = builder.load(slots[p][q])
                if kind == 0:
                    s = builder.fadd(acc, builder.fmul(av, bv[q]))
                elif kind >= 3:
                    s = _product_step(builder, kind, acc, av, bv[q])
                else:
                    s = _round(builder, kind, builder.call(fmuladd, [av, bv[q], acc]))
                builder.store(s, slots[p][q])
    for p in range(rows):
        for q in range(nv):
            builder.store(builder.load(slots[p][q]), cvec[p][q], align=4)


def make_block(kind: int, rows: int):
    """The block intrinsic ``block(wide, init, K, prows, pb, ldb, pc, ldc)`` of ``kind`` (0 NATIVE32, 1 HALF_F16, 2
    HALF_BF16, 3 HALF_PRODUCT_F16, 4 HALF_PRODUCT_BF16, 5 HALF_PRODUCT_EXACT_F16, 6 HALF_PRODUCT_EXACT_BF16) for
    ``rows`` rows: 16 columns where ``wide`` is 1, else 8 (see the module docstring)."""
    if kind not in range(7) or rows < 1:
        raise ValueError(f"no block for kind={kind!r}, rows={rows!r}")

    @intrinsic
    def block(typingctx, wide, init, K, prows, pb, ldb, pc, ldc):
        if not all(t == types.int64 for t in (wide, init, K, prows, pb, ldb, pc, ldc)):
            return None
        sig = types.void(*([types.int64] * 8))

        def codegen(context, builder, signature, args):
            wide, init, K, prows, pb, ldb, pc, ldc = args
            B, C = (builder.inttoptr(v, _F32.as_pointer()) for v in (pb, pc))
            table = builder.inttoptr(prows, _I64.as_pointer())
            arow = [builder.inttoptr(builder.load(builder.gep(table, [ir.Constant(_I64, p)])), _F32.as_pointer())
                    for p in range(rows)]
            with builder.if_else(builder.icmp_signed("==", wide, ir.Constant(_I64, 1))) as (then, otherwise):
                with then:
                    _emit(builder, kind, 2, rows, init, K, arow, B, ldb, C, ldc)
                with otherwise:
                    _emit(builder, kind, 1, rows, init, K, arow, B, ldb, C, ldc)
            return context.get_dummy_value()

        return sig, codegen

    return block


def _emit_sparse(builder, kind, nv, rows, n, idx, val, ldl, cnt, B, ldb, C, ldc):
    """The IR of one sparse block (see :func:`sparse_block`)."""
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * 3), "llvm.fmuladd.v8f32")
    slots = [[cgutils.alloca_once(builder, _V8) for _ in range(nv)] for _ in range(rows)]
    for row in slots:
        for slot in row:
            builder.store(ir.Constant(_V8, [0.0] * 8), slot)
    counts = [builder.load(builder.gep(cnt, [ir.Constant(_I64, p)])) for p in range(rows)]
    lo = counts[0]
    for c in counts[1:]:
        lo = builder.select(builder.icmp_signed("<", c, lo), c, lo)
    lo = builder.select(builder.icmp_signed("<", n, lo), n, lo)
    irow = [builder.gep(idx, [builder.mul(ir.Constant(_I64, p), ldl)]) for p in range(rows)]
    vrow = [builder.gep(val, [builder.mul(ir.Constant(_I64, p), ldl)]) for p in range(rows)]
    undef = ir.Constant(_V8, ir.Undefined)
    zero_mask = ir.Constant(_U8, [0] * 8)

    def steps(i, masked):
        for p in range(rows):
            k = builder.sext(builder.load(builder.gep(irow[p], [i])), _I64)
            a = builder.load(builder.gep(vrow[p], [i]))
            av = builder.shuffle_vector(builder.insert_element(undef, a, ir.Constant(_I32, 0)), undef, zero_mask)
            brow = builder.gep(B, [builder.mul(k, ldb)])
            live = builder.icmp_signed("<", i, counts[p]) if masked else None
            for q in range(nv):
                bv = builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(_I64, 8 * q)]), _V8.as_pointer()),
                                  align=4)
                acc = builder.load(slots[p][q])
                if kind == 0:
                    s = builder.fadd(acc, builder.fmul(av, bv))
                elif kind >= 3:
                    s = _product_step(builder, kind, acc, av, bv)
                else:
                    s = _round(builder, kind, builder.call(fmuladd, [av, bv, acc]))
                if masked:  # past this row's list: the sum stays as it is
                    s = builder.select(live, s, acc)
                builder.store(s, slots[p][q])

    with cgutils.for_range(builder, lo) as loop:  # every row has a value here
        steps(loop.index, False)
    with cgutils.for_range(builder, n, start=lo) as loop:  # some rows' lists have ended
        steps(loop.index, True)
    for p in range(rows):
        for q in range(nv):
            cv = builder.bitcast(builder.gep(builder.gep(C, [builder.mul(ir.Constant(_I64, p), ldc)]),
                                             [ir.Constant(_I64, 8 * q)]), _V8.as_pointer())
            builder.store(builder.load(slots[p][q]), cv, align=4)


@intrinsic
def sparse_block(typingctx, kind, rows, wide, n, pidx, pval, ldl, pcnt, pb, ldb, pc, ldc):
    """The sparse block ``sparse_block(kind, rows, wide, n, pidx, pval, ldl, pcnt, pb, ldb, pc, ldc)`` of ``kind``
    (as :func:`make_block`) for ``rows`` rows, both compile-time constants (literals: one block is compiled per
    pair): 16 columns where ``wide`` is 1, else 8. Row p's nonzero values of A
    are the ``cnt[p]`` float32 values at ``pval + 4 * p * ldl``, their k the int32 values at ``pidx + 4 * p * ldl``
    (increasing), ``cnt`` the int64 table at ``pcnt``; it computes, from +0::

        acc = +0;  for i = 0, 1, ..., cnt[p] - 1:  acc = step(acc, val[p][i], B[idx[p][i], j]);  C[p, j] = acc

    with B's row k at ``pb + 4 * k * ldb``. Steps i < n run for all rows together, each row's sums left as they
    are once its list has ended (``n`` the longest list), so the rows keep their independent dependency
    chains. With finite B, leaving out a product whose A value is +-0 changes no sum but a -0 one (acc + +-0
    is acc unless acc is -0 and the product +0: +0 in IEEE arithmetic): the caller recomputes a block that
    ends at -0 (:func:`kernels.ops._make_sparse_tile`). Each list entry i >= cnt[p] below n must hold a k of
    B's rows (it is read, not used)."""
    if not (isinstance(kind, types.IntegerLiteral) and isinstance(rows, types.IntegerLiteral)
            and kind.literal_value in range(7) and rows.literal_value >= 1):
        return None
    if not all(t == types.int64 for t in (wide, n, pidx, pval, ldl, pcnt, pb, ldb, pc, ldc)):
        return None
    k, R = kind.literal_value, rows.literal_value
    sig = types.void(kind, rows, *([types.int64] * 10))

    def codegen(context, builder, signature, args):
        wide, n, pidx, pval, ldl, pcnt, pb, ldb, pc, ldc = args[2:]
        idx = builder.inttoptr(pidx, _I32.as_pointer())
        val, B, C = (builder.inttoptr(v, _F32.as_pointer()) for v in (pval, pb, pc))
        cnt = builder.inttoptr(pcnt, _I64.as_pointer())
        with builder.if_else(builder.icmp_signed("==", wide, ir.Constant(_I64, 1))) as (then, otherwise):
            with then:
                _emit_sparse(builder, k, 2, R, n, idx, val, ldl, cnt, B, ldb, C, ldc)
            with otherwise:
                _emit_sparse(builder, k, 1, R, n, idx, val, ldl, cnt, B, ldb, C, ldc)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_f32(typingctx, addr):
    """The float32 at the byte address ``addr`` (int64): the tiles' last columns read their rows through the
    same address table as the blocks."""
    if addr != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], _F32.as_pointer()), align=4)

    return types.float32(types.int64), codegen
