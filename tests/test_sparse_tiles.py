"""The sparse tiles of the float32 paths (``kernels.ops._make_sparse_tile``): they add only the products of A's
nonzero values, and must give the reference's sums, the sign of a zero sum included.

A product of a zero (+0 or -0) leaves every sum as it is except -0, which a +0 product turns into +0; the
sparse tile leaves those products out and recomputes every tile with a sum at -0 on the dense tile. Here the
sparse tiles are forced on (or off) for every call by the thresholds of ``ops._mostly_zeros``.
"""

import numpy as np
import pytest
from conftest import same_values

import kernels
from kernels import ops
from kernels import reference as R
from kernels._half import HAVE_FMA
from kernels.mac import MacSpec, as_spec
from kernels.ops import Path


def _spy_on_kernels(monkeypatch):
    """The ``sparse`` argument of every kernel call from now on, in a list."""
    seen = []
    real = ops._kernel

    def spy(layout, path, has_out):
        fn = real(layout, path, has_out)

        def call(*args):
            seen.append(int(args[21]))  # kernel(X, W2, W32, ..., group, nthr, sparse, XI, XV, XC)
            return fn(*args)
        return call

    monkeypatch.setattr(ops, "_kernel", spy)
    return seen


@pytest.fixture
def sparse(monkeypatch):
    """Every call of a float32 path takes the sparse tiles; yields the kernels' ``sparse`` arguments."""
    monkeypatch.setattr(ops, "_SPARSE_MIN_ZEROS", 0.0)
    monkeypatch.setattr(ops, "_SPARSE_PER_COLUMN", 0.0)
    return _spy_on_kernels(monkeypatch)


def _with_zeros(rng, z, fraction=0.6):
    """``z`` with about ``fraction`` of its values set to zeros, a third of them -0."""
    z = np.array(z, dtype=np.float64)
    u = rng.random(z.shape)
    z[u < fraction] = 0.0
    z[u < fraction / 3] = -0.0
    return z


_SPECS = [
    (MacSpec("fp8_e4m3", "fp16", fma=True), Path.HALF_F16),
    (MacSpec("fp8_e4m3", "bf16", fma=True), Path.HALF_BF16),
    (as_spec("bf16_fp32"), Path.NATIVE32),
    (as_spec("fp32"), Path.NATIVE32),
    (as_spec("fp16_fp16"), Path.HALF_PRODUCT_EXACT_F16),
    (MacSpec("bf16", "bf16", product="bf16"), Path.HALF_PRODUCT_EXACT_BF16),
    (MacSpec("fp32", "fp16", product="fp16"), Path.HALF_PRODUCT_F16 if HAVE_FMA else Path.PRODUCT),
    (MacSpec("fp32", "bf16", product="bf16"), Path.HALF_PRODUCT_BF16 if HAVE_FMA else Path.PRODUCT),
    # operands down to 2**-14: products below half of binary16's smallest subnormal round to +-0, so some sums
    # end at -0 and the sparse tiles must recompute their tiles
    (MacSpec("fp8_e5m2", "fp16", fma=True), Path.HALF_F16),
]


def _operand(rng, spec, shape, scale):
    z = rng.standard_normal(shape) * scale
    if spec.a.name == "float8_e5m2":
        z = z * 2.0 ** rng.integers(-14, 1, shape)
    return z

#: (n, H, W, Cin, kh, kw, stride, padding, Cout): windows inside the input and cut by the padding on every
#: side, a window wider than the input, 1x1 windows (read from the input directly), 16 + 8 + N % 8 columns
_WINDOWS = [(3, 9, 11, 5, 3, 3, 1, "same", 24), (2, 8, 7, 17, 3, 5, (2, 3), "same", 37),
            (2, 6, 6, 4, 1, 1, 1, "valid", 16), (1, 4, 13, 2, 4, 2, (1, 2), "valid", 8),
            (2, 2, 3, 3, 5, 5, 1, "same", 21), (1, 7, 9, 1, 3, 3, (3, 1), "same", 3),
            (2, 5, 5, 6, 1, 1, 2, "same", 45)]


@pytest.mark.parametrize("spec, path", _SPECS, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["tiles", "groups"])
def test_sparse_tiles_equal_reference(rng, sparse, spec, path, grouped, monkeypatch):
    """Matmuls (1, 7, 13, 50 and 1543 rows: one tile, tiles cut short, hundreds of tiles over the tasks; 11 to 45
    columns: 16 + 8 + N % 8) and convolutions (_WINDOWS) of operands with 60 % zeros, both signs, give the
    reference's values on the sparse tiles, also with the tiles in groups sharing each column panel
    (``ops._tiles_per_group``, forced); rows with no nonzero value at all included. fp8_e5m2 operands into
    binary16 make sums that end at -0 (counted: the case must occur)."""
    if grouped:
        monkeypatch.setattr(ops, "_GROUP_BYTES", 0)
    scale = 1.0 if path == Path.NATIVE32 else 0.5
    negative_zeros = 0
    for M, N in [(1, 11), (7, 37), (50, 40), (1543, 11), (13, 45)]:
        a = kernels.quantize(_with_zeros(rng, _operand(rng, spec, (M, 19), scale)), spec.a)
        a[M // 2] = 0.0
        b = kernels.quantize(_operand(rng, spec, (19, N), scale), spec.b)
        assert ops._paths(spec, ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)) == path
        got, want = kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)
        assert same_values(got, want).all(), (M, N)
        negative_zeros += int(np.sum((want == 0) & np.signbit(want)))
    for n, H, W, cin, kh, kw, stride, pad, cout in _WINDOWS:
        x = kernels.quantize(_with_zeros(rng, _operand(rng, spec, (n, H, W, cin), scale)), spec.a)
        w = kernels.quantize(_operand(rng, spec, (kh, kw, cin, cout), scale), spec.b)
        got, want = kernels.conv2d(x, w, spec, stride=stride, padding=pad), R.ref_conv2d(x, w, spec, stride=stride,
                                                                                         padding=pad)
        assert same_values(got, want).all(), (H, W, cin, kh, kw)
        negative_zeros += int(np.sum((want == 0) & np.signbit(want)))
    if spec.a.name == "float8_e5m2":
        assert negative_zeros > 0
    assert len(sparse) == 5 + len(_WINDOWS) and all(sparse)  # every call on the sparse tiles


@pytest.mark.parametrize("sparse_tiles", [True, False], ids=["sparse", "dense"])
def test_a_zero_product_after_a_negative_zero_sum(rng, sparse_tiles, monkeypatch):
    """fp8_e5m2 operands into binary16 (the HALF_F16 path): 2**-14 * -2**-14 = -2**-28 rounds to -0, and the
    later products of zero activations then decide the sum's sign: a +0 one (0 * +1) makes it +0, -0 ones
    (0 * -1) keep -0. Leaving out the zeros' products would keep -0 in every such column: the sparse tile must
    redo the tile. The rows' lists are 1 long against 3 in one row of the tile, and the steps past a short
    list must change nothing: they read k = 0, whose weights (+1) would make a +0 product of a zero."""
    if not sparse_tiles:
        monkeypatch.setattr(ops, "_SPARSE_MIN_ZEROS", 2.0)
    else:
        monkeypatch.setattr(ops, "_SPARSE_MIN_ZEROS", 0.0)
        monkeypatch.setattr(ops, "_SPARSE_PER_COLUMN", 0.0)
    seen = _spy_on_kernels(monkeypatch)
    spec = MacSpec("fp8_e5m2", "fp16", fma=True)
    a = np.zeros((9, 4))
    a[:, 1] = 2.0 ** -14  # every row: a zero, the tiny product, two zeros
    a[4, 2:] = 1.0, 0.5  # one row with two more nonzero values: its sums are nonzero
    b = np.array([[1.0, 1.0, 1.0, 1.0],
                  [-(2.0 ** -14), -(2.0 ** -14), -(2.0 ** -14), 2.0 ** -14],
                  [1.0, -1.0, -1.0, 1.0],
                  [-1.0, -1.0, 1.0, 1.0]])
    b = np.tile(b, (1, 6))  # 16 + 8 columns: two blocks (the last columns alone would show a -0)
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    assert ops._paths(spec, A, B) == Path.HALF_F16 and ops._mostly_zeros(A, 24) == sparse_tiles
    got, want = kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)
    assert same_values(got, want).all()
    # the reference's signs, spelt out: -0 only where no +0 product follows the -0 sum
    col = np.arange(24) % 4
    zero_rows = np.delete(np.arange(9), 4)
    assert (got[zero_rows] == 0).all() and (got[4] != 0).all()
    assert (np.signbit(got[zero_rows]) == (col == 1)[None, :]).all()
    x = a.reshape(1, 3, 3, 4)  # the same rows as 1x1 and 3x1 convolutions (these through the pixel lists)
    for w in (b.reshape(1, 1, 4, 24), np.stack([b, 0 * b, 0 * b]).reshape(3, 1, 4, 24)):
        assert same_values(kernels.conv2d(x, w, spec, padding="same"),
                           R.ref_conv2d(x, w, spec, padding="same")).all()
    assert seen == [int(sparse_tiles)] * 3


def test_the_sparse_tiles_take_calls_with_enough_zeros():
    """``_mostly_zeros``: a sample spread over A (every channel), and more zeros needed where there are fewer
    output columns (the lists cost the same per row whatever N): 70 % zeros take the sparse tiles for 32
    columns, 40 % do not; 40 % do for 512 columns; an empty A or no columns never."""
    def a(frac):
        z = np.ones(100_000, np.float32)
        z[: int(frac * z.size)] = 0.0
        return np.random.default_rng(0).permutation(z).reshape(-1, 10)

    assert ops._mostly_zeros(a(0.7), 32) and not ops._mostly_zeros(a(0.4), 32)
    assert ops._mostly_zeros(a(0.4), 512) and not ops._mostly_zeros(a(0.2), 512)
    assert not ops._mostly_zeros(a(0.95), 8)  # 0.3 + 8 / 8 > 1
    assert not ops._mostly_zeros(np.zeros((0, 4), np.float32), 4) and not ops._mostly_zeros(a(1.0), 0)
    # every channel seen: a plain stride through (8, 32, 32, 32) values would be a multiple of 32 (channel 0 only)
    x = np.ones((8, 32, 32, 32), np.float32)
    x[..., 0] = 0.0  # 3 % zeros, all in channel 0
    assert not ops._mostly_zeros(x, 64)
    x = np.zeros((8, 32, 32, 32), np.float32)
    x[..., 0] = 1.0  # 97 % zeros, channel 0 dense
    assert ops._mostly_zeros(x, 64)


def test_the_sparse_tile_alone(rng):
    """``ops._tile_sparse_f16`` on lists built by hand, two tiles of 6 rows and 16 + 8 + 3 columns: the dense
    tile's sums bit for bit, returning False, on finite fp8 values with zeros; and on rows whose sum the
    left-out +0 products would have turned from -0 into +0, it returns True and leaves those sums at -0 (the
    caller then recomputes the tile)."""
    T, nt, K, N = ops._TILE_ROWS[1], 2, 40, 27
    rows = T * nt

    def both(A, B):
        A, B = np.ascontiguousarray(A, np.float32), np.asarray(B, np.float32)
        P = (A.ctypes.data + A.strides[0] * np.arange(rows, dtype=np.int64)).reshape(1, rows)
        dense = np.empty((rows, N), np.float32)
        ops._tile_f16(np.int64(1), np.int64(K), np.int64(N), P, ops._panels(B), dense, np.int64(nt))
        LI, LV = np.empty((rows, K), np.int32), np.empty((rows, K), np.float32)
        cnt = np.empty(rows, np.int64)
        for p in range(rows):
            nz = np.flatnonzero(A[p])
            cnt[p] = len(nz)
            LI[p, :len(nz)], LV[p, :len(nz)] = nz, A[p, nz]
        sparse = np.empty((rows, N), np.float32)
        flag = ops._tile_sparse_f16(np.int64(K), np.int64(N), ops._panels(B), sparse, np.int64(nt), LI, LV, cnt)
        return dense, sparse, flag

    A = kernels.quantize(_with_zeros(rng, rng.standard_normal((rows, K))), "fp8_e4m3")
    A[3] = 0.0
    B = kernels.quantize(rng.standard_normal((K, N)), "fp8_e4m3")
    dense, sparse, flag = both(A, B)
    assert not flag and same_values(sparse, dense).all()
    # rows 2 and 9: 2**-14 * -2**-14 at k = 1 rounds to -0, then zeros times +1 (+0 products) make the sum +0
    A, B = np.zeros((rows, K)), np.ones((K, N))
    A[[2, 9], 1] = 2.0 ** -14
    B[1] = -(2.0 ** -14)
    # a longer list in each tile: the other rows' steps past their lists read k = 0 (+1 weights) and must
    # change nothing (a +0 product would turn their -0 into +0)
    A[[5, 11], :3] = 1.0
    dense, sparse, flag = both(A, B)
    assert flag
    assert (dense[[2, 9]] == 0).all() and not np.signbit(dense[[2, 9]]).any()
    assert (sparse[[2, 9]] == 0).all() and np.signbit(sparse[[2, 9]]).all()
    keep = np.setdiff1d(np.arange(rows), [2, 9])
    assert same_values(sparse[keep], dense[keep]).all()


def test_calls_take_the_sparse_tiles_where_they_may(rng, monkeypatch):
    """What the kernel is told (its ``sparse`` argument, with the default thresholds): the sparse tiles for
    cifar-like activations (ReLU of normal values: half zeros) into 64 columns, not for dense ones, and not
    where a weight is inf (fp32's gate for float32 products does not look at the data, and 0 * inf is NaN:
    those NaNs must stay)."""
    seen = _spy_on_kernels(monkeypatch)
    spec = as_spec("fp32")
    x = np.maximum(rng.standard_normal((2, 6, 6, 16)), 0).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 64)).astype(np.float32)
    for xs, ws, want in [(x, w, 1), (x + 1, w, 0)]:
        seen.clear()
        got = kernels.conv2d(xs, ws, spec, padding="same")
        assert seen == [want] and same_values(got, R.ref_conv2d(xs, ws, spec, padding="same")).all()
    w[1, 1, 3, 5] = np.inf
    seen.clear()
    got, want = kernels.conv2d(x, w, spec, padding="same"), R.ref_conv2d(x, w, spec, padding="same")
    assert seen == [0] and np.isnan(want).any() and same_values(got, want).all()
