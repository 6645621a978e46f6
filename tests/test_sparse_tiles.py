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


@pytest.fixture
def sparse(monkeypatch):
    """Every call of a float32 path takes the sparse tiles."""
    monkeypatch.setattr(ops, "_SPARSE_MIN_ZEROS", 0.0)
    monkeypatch.setattr(ops, "_SPARSE_PER_COLUMN", 0.0)


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
]

#: (n, H, W, Cin, kh, kw, stride, padding, Cout): windows inside the input and cut by the padding on every
#: side, a window wider than the input, 1x1 windows (read from the input directly), 16 + 8 + N % 8 columns
_WINDOWS = [(3, 9, 11, 5, 3, 3, 1, "same", 24), (2, 8, 7, 17, 3, 5, (2, 3), "same", 37),
            (2, 6, 6, 4, 1, 1, 1, "valid", 16), (1, 4, 13, 2, 4, 2, (1, 2), "valid", 8),
            (2, 2, 3, 3, 5, 5, 1, "same", 21), (1, 7, 9, 1, 3, 3, (3, 1), "same", 3),
            (2, 5, 5, 6, 1, 1, 2, "same", 45)]


@pytest.mark.parametrize("spec, path", _SPECS, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["tiles", "groups"])
def test_sparse_tiles_equal_reference(rng, sparse, spec, path, grouped, monkeypatch):
    """Matmuls (every row count of a tile, the last tile cut short; 16 + 8 + N % 8 columns) and convolutions
    (_WINDOWS) of operands with 60 % zeros, both signs, give the reference's values on the sparse tiles, also
    with the tiles in groups sharing each column panel (``ops._tiles_per_group``, forced); rows with no nonzero
    value at all included."""
    if grouped:
        monkeypatch.setattr(ops, "_GROUP_BYTES", 0)
    scale = 1.0 if path == Path.NATIVE32 else 0.5
    for M, N in [(1, 11), (7, 37), (50, 40), (1543, 11), (13, 45)]:
        a = kernels.quantize(_with_zeros(rng, rng.standard_normal((M, 19)) * scale), spec.a)
        a[M // 2] = 0.0
        b = kernels.quantize(rng.standard_normal((19, N)) * scale, spec.b)
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        assert ops._paths(spec, A, B) == path and ops._mostly_zeros(A, N)
        assert same_values(kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)).all(), (M, N)
    for n, H, W, cin, kh, kw, stride, pad, cout in _WINDOWS:
        x = kernels.quantize(_with_zeros(rng, rng.standard_normal((n, H, W, cin)) * scale), spec.a)
        w = kernels.quantize(rng.standard_normal((kh, kw, cin, cout)) * scale, spec.b)
        got = kernels.conv2d(x, w, spec, stride=stride, padding=pad)
        assert same_values(got, R.ref_conv2d(x, w, spec, stride=stride, padding=pad)).all(), (H, W, cin, kh, kw)


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


def test_the_sparse_tiles_take_calls_with_enough_zeros():
    """``_mostly_zeros``: a sample spread over A, and more zeros needed where there are fewer output columns
    (the lists cost the same per row whatever N): 70 % zeros take the sparse tiles for 32 columns, 40 % do not;
    40 % do for 512 columns; an empty A or no columns never."""
    def a(frac):
        z = np.ones(100_000, np.float32)
        z[: int(frac * z.size)] = 0.0
        return np.random.default_rng(0).permutation(z).reshape(-1, 10)

    assert ops._mostly_zeros(a(0.7), 32) and not ops._mostly_zeros(a(0.4), 32)
    assert ops._mostly_zeros(a(0.4), 512) and not ops._mostly_zeros(a(0.2), 512)
    assert not ops._mostly_zeros(a(0.95), 8)  # 0.3 + 8 / 8 > 1
    assert not ops._mostly_zeros(np.zeros((0, 4), np.float32), 4) and not ops._mostly_zeros(a(1.0), 0)
