"""The binary16 / bfloat16 accumulator lanes (``kernels.ops.Path.HALF_F16`` / ``HALF_BF16``, :mod:`kernels._half`).

They accumulate in float32 and round each sum once more to the 16-bit format, which is exact only
when both addends are values of that format (double rounding through >= 2p + 2 bits is innocuous).
These tests hold: the two round trips against independent conversions (numpy float16, ml_dtypes
bfloat16); the double-rounding property itself on random pairs; the gate (which problems take the
lanes and which must not); and the kernels against the literal reference on problems built to hit
the lanes' edges: overflow to inf, binary16 subnormal sums, cancellation to signed zeros, ties.
"""

import ml_dtypes
import numpy as np
import pytest
from numba import njit

import kernels
from kernels import ops
from kernels.ops import Path
from kernels import reference as R
from kernels._half import HAVE_F16C, HAVE_FMA, product_bf16, product_f16, round_bf16, round_f16, round_odd
from kernels.formats import FloatFormat
from kernels.mac import MacSpec, as_spec

from _macedges import edge_problems, fp8_grid
from conftest import same_values


@njit(cache=True)
def _round_both(x, o16, ob16):
    for i in range(x.size):
        o16[i] = round_f16(x[i])
        ob16[i] = round_bf16(x[i])


def test_host_has_f16c_where_the_cpu_says_so():
    """HAVE_F16C follows /proc/cpuinfo (x86 Linux): a wrong True would make LLVM emit a libcall."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        pytest.skip("no /proc/cpuinfo: nothing to compare HAVE_F16C with")  # not Linux: nothing to check
    assert HAVE_F16C == ("f16c" in flags)


def test_round_trips_equal_numpy_and_ml_dtypes(rng):
    """Every class of float32: random bit patterns (NaN excluded for bf16, documented), and the
    edges: binary16's overflow threshold 65520, its smallest subnormal and half of it, ties."""
    u = rng.integers(0, 2 ** 32, 4_000_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([65504, 65519.996, 65520, -65520, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26,
                      1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.3895314e38,
                      3.4028235e38, np.inf, -np.inf, 0.0, -0.0, 1e-45], dtype=np.float32)
    x = np.concatenate([u.view(np.float32), edges])
    x = x[~np.isnan(x)]
    o16, ob16 = np.empty_like(x), np.empty_like(x)
    with np.errstate(over="ignore"):
        _round_both(x, o16, ob16)
        w16 = x.astype(np.float16).astype(np.float32)
        wb16 = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(o16.view(np.uint32), w16.view(np.uint32))
    assert np.array_equal(ob16.view(np.uint32), wb16.view(np.uint32))


def _random_fp16(rng, n):
    """Finite binary16 values of every binade (subnormals included), both signs."""
    bits = rng.integers(0, 0x7C00, n).astype(np.uint16) | (rng.integers(0, 2, n).astype(np.uint16) << 15)
    return bits.view(np.float16)


def test_double_rounding_through_float32_is_innocuous_for_binary16(rng):
    """R16(fl32(x + y)) == R16(x + y) for binary16 x, y: the float64 sum is exact (binary16 spans
    2**-24 .. 2**16), numpy's float64 -> float16 conversion rounds once. Pairs of random values, and
    pairs built near ties (y tiny against x), where a wrong double rounding would show."""
    x = _random_fp16(rng, 2_000_000)
    y = np.concatenate([_random_fp16(rng, 1_000_000),
                        (x[1_000_000:].astype(np.float64) * 2.0 ** -rng.integers(10, 14, 1_000_000)).astype(np.float16)])
    with np.errstate(over="ignore"):
        via32 = (x.astype(np.float32) + y.astype(np.float32)).astype(np.float16)
        exact = (x.astype(np.float64) + y.astype(np.float64)).astype(np.float16)
    assert same_values(via32, exact).all()


def test_double_rounding_through_float32_is_innocuous_for_bfloat16(rng):
    """The same for bfloat16, within 40 binades of each other (the float64 sum exact), rounded once
    from float64 by kernels.quantize (itself tested against ml_dtypes and gfloat)."""
    n = 1_000_000
    e = rng.integers(-120, 120, n)
    x = np.ldexp(rng.integers(128, 256, n) * rng.choice([-1.0, 1.0], n), e - 7)
    y = np.ldexp(rng.integers(128, 256, n) * rng.choice([-1.0, 1.0], n), e - 7 - rng.integers(0, 40, n))
    via32 = (x.astype(np.float32) + y.astype(np.float32)).astype(ml_dtypes.bfloat16).astype(np.float64)
    exact = kernels.quantize(x + y, "bf16").astype(np.float64)
    assert same_values(via32, exact).all()


def _fp8_products(dt):
    v = np.arange(256, dtype=np.uint8).view(dt).astype(np.float64)
    v = np.unique(np.abs(v[np.isfinite(v)]))
    p = np.unique(np.outer(v, v))
    return np.concatenate([p, -p[p > 0]])


@pytest.mark.parametrize("dt", [ml_dtypes.float8_e5m2, ml_dtypes.float8_e4m3fn], ids=str)
def test_double_rounding_is_innocuous_for_every_binary16_plus_every_fp8_product(dt):
    """The HALF_F16 gate's argument (``ops._half_lane``): R16(fl32(acc + p)) == R16(acc + p) for every finite
    binary16 acc and every product p of two fp8 values (at most 8 significant bits, many of them off
    binary16's grid: e5m2 products reach down to 2**-32 and up to 2**31.6). numpy only: the float64 sum is
    exact wherever the result is finite in binary16 (|p| < 2**17 there, and both are multiples of 2**-32),
    and numpy's float64 -> float16 conversion rounds once. Products of 12 significant bits break it."""
    acc = np.arange(0x7C00, dtype=np.uint16)
    acc = np.concatenate([acc, acc | 0x8000]).view(np.float16)
    acc64, acc32 = acc.astype(np.float64), acc.astype(np.float32)
    rng = np.random.default_rng(0)
    twelve = np.ldexp(rng.integers(2 ** 11, 2 ** 12, 64).astype(np.float64), rng.integers(-40, 5, 64) - 12)
    bad = 0
    with np.errstate(over="ignore"):
        for p in _fp8_products(dt):
            via32 = (acc32 + np.float32(p)).astype(np.float16)
            assert same_values(via32, (acc64 + p).astype(np.float16)).all(), p
        for p in twelve:
            bad += int((~same_values((acc32 + np.float32(p)).astype(np.float16), (acc64 + p).astype(np.float16))).sum())
    assert bad > 0


@pytest.mark.parametrize("spec,data,want", [
    ("fp8_e4m3_fp16", "normal", Path.HALF_F16),
    (MacSpec("fp8_e4m3", "bf16"), "normal", Path.HALF_BF16),
    (MacSpec("fp8_e4m3", "fp16"), "normal", Path.HALF_F16),               # product rounding None without fma too
    (MacSpec("fp4_e2m1", "fp16", b="fp8_e5m2"), "normal", Path.HALF_F16),
    ("fp8_e4m3_fp16", "big", Path.HALF_F16),                   # a product above 65504: inf, as the spec's
    ("fp8_e4m3_fp16", "nan", None),
    ("fp8_e4m3_fp16", "inf", None),
    (MacSpec("fp8_e5m2", "fp16"), "clipped", Path.HALF_F16),
    (MacSpec("fp8_e5m2", "fp16"), "tiny", Path.HALF_F16),       # products off binary16's grid (2**-32): still exact
    (MacSpec("bf16", "bf16"), "tiny", None),                    # 2**-140: below float32's normals, it may round
    (MacSpec("fp16", "fp16"), "normal", None),                  # 22 product bits > 11
    (MacSpec("fp8_e4m3", "fp16", b="e5m7"), "normal", None),    # 12 product bits: one too many
    (MacSpec("fp8_e4m3", "fp16", b="e5m6"), "normal", Path.HALF_F16),  # 11
    (MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), "normal", None),
    (MacSpec("fp8_e4m3", "fp16", rounding="toward_zero"), "normal", None),
    (MacSpec("fp8_e4m3", "fp16", overflow="saturate"), "normal", None),
    (MacSpec("fp8_e4m3", "fp16", order="pairwise"), "normal", None),
    (MacSpec("fp8_e4m3", "fp16", product="fp16"), "normal", None),
    (MacSpec("fp8_e4m3", "e5m6"), "normal", None),
    (MacSpec("mxfp8_e4m3", "bf16"), "normal", Path.HALF_BF16),             # MX: the data condition (normal products)
])
def test_gate(rng, spec, data, want):
    spec = as_spec(spec)
    a = rng.standard_normal((4, 40))
    b = rng.standard_normal((40, 3))
    if data == "big":
        a[0, 0], b[0, 0] = 448.0, 240.0
    elif data in ("nan", "inf"):
        a[1, 2] = np.nan if data == "nan" else -np.inf
    elif data == "tiny":
        a[2, 3], b[3, 1] = 2.0 ** -16, 2.0 ** -16
        if spec.accum == FloatFormat(8, 7):
            a[2, 3], b[3, 1] = 2.0 ** -70, 2.0 ** -70
    elif data == "clipped":  # every magnitude >= 2**-7: products >= 2**-14, binary16 normals
        a, b = np.copysign(np.maximum(abs(a), 2.0 ** -7), a), np.copysign(np.maximum(abs(b), 2.0 ** -7), b)
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    path = ops._paths(spec, A, B)
    assert path == want if want else path not in (Path.HALF_F16, Path.HALF_BF16, Path.NATIVE32)
    assert ops._paths(spec, A, B, stats=True) not in (Path.HALF_F16, Path.HALF_BF16)  # counters: the scalar core's events


@pytest.mark.parametrize("acc", ["fp16", "bf16"])
@pytest.mark.parametrize("K", [1, 3, 4, 7, 64, 301])
@pytest.mark.parametrize("N", [6, 200])  # four-k passes up to 128 lanes, one k per pass above
def test_matmul_lanes_equal_reference(rng, acc, K, N):
    spec = MacSpec("fp8_e4m3", acc, fma=True)
    for name, a, b in edge_problems(rng, K):
        b = np.tile(b, (1, -(-N // b.shape[1])))[:, :N]
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        assert ops._paths(spec, A, B) == (Path.HALF_F16 if acc == "fp16" else Path.HALF_BF16), name
        got, want = kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)
        assert got.dtype == want.dtype
        assert same_values(got, want).all(), (name, got, want)


def _convolutions_equal_reference(spec, x, w, wd):
    """conv2d and depthwise_conv2d with both paddings and strides equal the literal reference."""
    for pad in ("same", "valid"):
        for stride in (1, (2, 1)):
            got = kernels.conv2d(x, w, spec, stride=stride, padding=pad)
            assert same_values(got, R.ref_conv2d(x, w, spec, stride=stride, padding=pad)).all()
            got = kernels.depthwise_conv2d(x, wd, spec, stride=stride, padding=pad)
            assert same_values(got, R.ref_depthwise_conv2d(x, wd, spec, stride=stride, padding=pad)).all()


@pytest.mark.parametrize("acc", ["fp16", "bf16"])
def test_convolutions_on_the_lanes_equal_reference(rng, acc):
    spec = MacSpec("fp8_e4m3", acc, fma=True, out="fp8_e4m3")
    x = fp8_grid(rng, (2, 9, 8, 5), 4.0)
    w = fp8_grid(rng, (3, 3, 5, 7), 2.0)
    wd = fp8_grid(rng, (3, 2, 5, 2), 2.0)
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == (Path.HALF_F16 if acc == "fp16" else Path.HALF_BF16)
    _convolutions_equal_reference(spec, x, w, wd)


def test_without_f16c_binary16_takes_the_float64_lanes(rng, monkeypatch):
    """A host without F16C: the gate sends binary16 elsewhere (bfloat16 needs no instruction), and
    the result is the same."""
    a, b = fp8_grid(rng, (3, 50)), fp8_grid(rng, (50, 4))
    want = kernels.matmul(a, b, "fp8_e4m3_fp16")
    monkeypatch.setattr(ops, "HAVE_F16C", False)
    spec = as_spec("fp8_e4m3_fp16")
    assert ops._paths(spec, a, b) == Path.NEAREST
    assert ops._paths(MacSpec("fp8_e4m3", "bf16"), a, b) == Path.HALF_BF16
    assert same_values(kernels.matmul(a, b, spec), want).all()


@pytest.mark.parametrize("z,want", [
    (np.array([]), (np.inf, 0.0)), (np.array([0.0, -0.0]), (np.inf, 0.0)), (np.array([3.0, -0.5, 0.0]), (0.5, 3.0)),
    (np.array([-2.0 ** -1074, 5.0]), (2.0 ** -1074, 5.0)), (np.array([np.inf, 2.0]), (2.0, np.inf)),
    (np.array([3.0, -0.25, 0.0], np.float32), (0.25, 3.0)), (np.array([[1, 2], [3, -7]], np.int8), (1.0, 7.0)),
    (np.array([[1.0, 2.0], [3.0, 4.0]])[:, :1], (1.0, 3.0)),
    # float32 (uint32 lanes): zeros of both signs only, the smallest subnormal, inf, the largest finite value,
    # a length past the vector width with the extremes last
    (np.array([0.0, -0.0], np.float32), (np.inf, 0.0)), (np.array([-2.0 ** -149, 5.0], np.float32), (2.0 ** -149, 5.0)),
    (np.array([np.inf, -2.0], np.float32), (2.0, np.inf)),
    (np.array([1.0] * 37 + [-3.4028234663852886e38, 0.0, -2.0 ** -126], np.float32), (2.0 ** -126, 3.4028234663852886e38))])
def test_abs_range(z, want):
    assert ops._abs_range(z) == want


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_abs_range_reports_nan(dt):
    lo, hi = ops._abs_range(np.array([1.0, np.nan, 2.0], dt))
    assert np.isnan(hi)


def _random_bf16(rng, shape, lo=64, hi=190):
    """Finite bfloat16 values with biased exponents in [lo, hi] (products stay in float32's normal range),
    both signs."""
    n = int(np.prod(shape))
    bits = (rng.integers(lo, hi + 1, n).astype(np.uint32) << 23) | (rng.integers(0, 128, n).astype(np.uint32) << 16)
    bits |= rng.integers(0, 2, n).astype(np.uint32) << 31
    return bits.view(np.float32).astype(np.float64).reshape(shape)


def _product_problems(rng, acc, K):
    """(name, a, b) for product-rounded 16-bit MACs: ordinary values; every binade (binary16: subnormal
    products and sums, products that overflow to inf and inf - inf = NaN); cancellation to signed zeros;
    sums that overflow; ties of the product rounding."""
    if acc == "fp16":
        wide = (_random_fp16(rng, 5 * K).reshape(5, K).astype(np.float64),
                _random_fp16(rng, 7 * K).reshape(K, 7).astype(np.float64))
        big = 200.0
    else:
        wide = (_random_bf16(rng, (5, K)), _random_bf16(rng, (K, 7)))
        big = 2.0 ** 63
    out = [("normal", rng.standard_normal((4, K)), rng.standard_normal((K, 6))), ("wide", *wide)]
    a = rng.standard_normal((2, K))
    a[:, 1::2] = -a[:, 0::2][:, : K // 2] if K > 1 else a[:, 1::2]
    out.append(("cancel", a, np.ones((K, 3)) * [1.0, -1.0, 3.0]))
    out.append(("overflow", np.full((2, K), big), np.full((K, 3), big) * [1.0, -1.0, 0.5]))
    # 1 + 2**-p + 2**-(2p) style ties: (1 + 2**-6)**2 = 1 + 2**-5 + 2**-12 rounds at binary16's 2**-10 step
    t = 1 + 2.0 ** -6 if acc == "fp16" else 1 + 2.0 ** -4
    out.append(("ties", np.full((3, K), t) * [[1.0], [-1.0], [0.75]], np.full((K, 4), t)))
    return out


@pytest.mark.parametrize("acc", ["fp16", "bf16"])
@pytest.mark.parametrize("operands", ["same", "fp32"])
@pytest.mark.parametrize("K", [1, 2, 3, 64, 301])
@pytest.mark.parametrize("N", [6, 200])  # two-k passes up to 128 lanes, one k per pass above
def test_product_rounded_lanes_equal_reference(rng, acc, operands, K, N):
    """HALF_PRODUCT_EXACT_F16 / BF16 (fp16_fp16 and its bfloat16 twin: products exact in float32) and, with
    the same values as fp32 operands, HALF_PRODUCT_F16 / BF16 (the FMA's error term) equal the literal
    reference."""
    spec = MacSpec(acc if operands == "same" else "fp32", acc, product=acc)
    if operands == "same":
        want_path = Path.HALF_PRODUCT_EXACT_F16 if acc == "fp16" else Path.HALF_PRODUCT_EXACT_BF16
    else:
        want_path = (Path.HALF_PRODUCT_F16 if acc == "fp16" else Path.HALF_PRODUCT_BF16) if HAVE_FMA else Path.PRODUCT
    for name, a, b in _product_problems(rng, acc, K):
        b = np.tile(b, (1, -(-N // b.shape[1])))[:, :N]
        A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
        if (operands, acc, name) == ("fp32", "bf16", "wide"):  # bfloat16's range: products below 2**-100 leave
            assert ops._paths(spec, A, B) in (want_path, Path.PRODUCT), name
        else:
            assert ops._paths(spec, A, B) == want_path, name
        with np.errstate(all="ignore"):
            got, want = kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)
        assert got.dtype == want.dtype
        assert same_values(got, want).all(), (name, got, want)


@pytest.mark.parametrize("acc", ["fp16", "bf16"])
def test_product_rounded_convolutions_equal_reference(rng, acc):
    spec = MacSpec("fp8_e4m3" if acc == "bf16" else "fp16", acc, product=acc, out="fp8_e4m3")
    x = rng.standard_normal((2, 9, 8, 5)) * 4
    w = rng.standard_normal((3, 3, 5, 7))
    wd = rng.standard_normal((3, 2, 5, 2))
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == (Path.HALF_PRODUCT_EXACT_F16 if acc == "fp16" else Path.HALF_PRODUCT_EXACT_BF16)
    _convolutions_equal_reference(spec, x, w, wd)


@pytest.mark.parametrize("spec,data,want", [
    ("fp16_fp16", "normal", Path.HALF_PRODUCT_EXACT_F16),
    (MacSpec("bf16", "bf16", product="bf16"), "normal", Path.HALF_PRODUCT_EXACT_BF16),
    (MacSpec("fp8_e4m3", "fp16", product="fp16"), "normal", Path.HALF_PRODUCT_EXACT_F16),
    (MacSpec("fp16", "bf16", b="fp8_e4m3", product="bf16"), "normal", Path.HALF_PRODUCT_EXACT_BF16),
    (MacSpec("bf16", "fp16", product="fp16"), "normal", Path.HALF_PRODUCT_EXACT_F16),  # the sweep's bf16 -> fp16
    ("fp16_fp16", "nan", None),
    ("fp16_fp16", "inf", None),
    (MacSpec("bf16", "bf16", product="bf16"), "tiny", None),       # a product below float32's normal range
    (MacSpec("bf16", "bf16", product="bf16"), "huge", None),       # a product above float32's largest value
    # 48 product bits: float32 rounds them, the FMA's error term makes the product stage one rounding
    (MacSpec("fp32", "fp16", product="fp16"), "normal", Path.HALF_PRODUCT_F16 if HAVE_FMA else None),
    (MacSpec("fp32", "bf16", product="bf16"), "normal", Path.HALF_PRODUCT_BF16 if HAVE_FMA else None),
    (MacSpec("fp32", "fp16", product="fp16"), "small", None),      # a product below 2**-100: its error may round
    (MacSpec("bf16", "bf16", product="bf16"), "small", Path.HALF_PRODUCT_EXACT_BF16),  # ... which an exact one has not
    (MacSpec("fp16", "fp32", product="fp16"), "normal", None),     # product format differs from the accumulator's
    (MacSpec("fp16", "fp16", product="fp16", rounding="stochastic"), "normal", None),
    (MacSpec("fp16", "fp16", product="fp16", product_rounding="toward_zero"), "normal", None),
    (MacSpec("fp16", "fp16", product="fp16", overflow="saturate"), "normal", None),
    (MacSpec("fp16", "fp16", product="fp16", order="pairwise"), "normal", None),
])
def test_product_gate(rng, spec, data, want):
    spec = as_spec(spec)
    a = rng.standard_normal((4, 40))
    b = rng.standard_normal((40, 3))
    if data in ("nan", "inf"):
        a[1, 2] = np.nan if data == "nan" else -np.inf
    elif data == "tiny":
        a[2, 3], b[3, 1] = 2.0 ** -70, 2.0 ** -70
    elif data == "huge":
        a[2, 3], b[3, 1] = 2.0 ** 70, 2.0 ** 70
    elif data == "small":
        a[2, 3], b[3, 1] = 2.0 ** -51, 2.0 ** -51
    A, B = ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)
    path = ops._paths(spec, A, B)
    lanes = (Path.HALF_PRODUCT_F16, Path.HALF_PRODUCT_BF16, Path.HALF_PRODUCT_EXACT_F16, Path.HALF_PRODUCT_EXACT_BF16)
    assert path == want if want else path not in lanes
    assert ops._paths(spec, A, B, stats=True) not in lanes  # counters: the scalar core's events


@pytest.mark.parametrize("spec,a,b", [
    (MacSpec("e9m2", "bf16", product="bf16"), 2.0 ** 130, 2.0 ** -120),      # an operand above float32's max
    (MacSpec("e9m2", "bf16", product="bf16"), 1.75 * 2.0 ** -148, 2.0 ** 30),  # ... off float32's subnormal grid
    (MacSpec("e9m2", "bf16", product="bf16"), 2.0 ** -160, 2.0 ** 40),        # ... below float32's range
    (MacSpec("e9m2", "bf16"), 2.0 ** 130, 2.0 ** -120),
    (MacSpec("e9m2", "fp16"), 2.0 ** -160, 2.0 ** 150),
    (MacSpec("mxfp8_e4m3", "fp16", product="fp16"), 448 * 2.0 ** 127, 2.0 ** -120),  # an MX block scale
    (MacSpec("mxfp8_e4m3", "bf16"), 448 * 2.0 ** 127, 2.0 ** -120),
])
def test_operands_float32_cannot_hold_leave_the_float32_lanes(spec, a, b):
    """The float32 lanes read the operands as float32: one outside float32's normal range (a wide exponent,
    an MX block scale) must send the call elsewhere, with the reference's result (a review found
    inf / rounded / 0 where the products alone were checked)."""
    A, B = np.full((1, 1), a), np.full((1, 1), b)
    path = ops._paths(spec, ops._prepare(A, spec.a, 1), ops._prepare(B, spec.b, 0))
    assert path not in (Path.HALF_F16, Path.HALF_BF16, Path.HALF_PRODUCT_F16, Path.HALF_PRODUCT_BF16,
                        Path.HALF_PRODUCT_EXACT_F16, Path.HALF_PRODUCT_EXACT_BF16)
    got, want = kernels.matmul(A, B, spec), R.ref_matmul(A, B, spec)
    assert same_values(got, want).all(), (got, want)


#: (n, H, W, Cin, kh, kw, stride, padding, Cout): window rows inside the input, in the padding above / below,
#: cut by the padding left / right or on both sides (a window wider than the input), tiles across output rows
#: and images, 1x1 windows, 16 + 8 + N % 8 columns
_WINDOWS = [(3, 9, 11, 5, 3, 3, 1, "same", 24), (2, 8, 7, 17, 3, 5, (2, 3), "same", 37),
            (2, 6, 6, 4, 1, 1, 1, "valid", 16), (1, 4, 13, 2, 4, 2, (1, 2), "valid", 8),
            (2, 2, 3, 3, 5, 5, 1, "same", 21), (1, 7, 9, 1, 3, 3, (3, 1), "same", 3)]


@pytest.mark.parametrize("spec", [MacSpec("fp8_e4m3", "fp16", fma=True), as_spec("fp32"), as_spec("fp16_fp16"),
                                  MacSpec("fp32", "bf16", product="bf16")], ids=str)
@pytest.mark.parametrize("geometry", _WINDOWS, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["tiles", "groups"])
def test_tiles_read_window_rows_where_they_lie(rng, spec, geometry, grouped, monkeypatch):
    """The tiles of a convolution read each window row of a patch in the input itself, from zeros, or from a
    buffer holding a row cut by the padding (``ops._patch_rows``), one segment of kw * Cin values after
    another; every geometry gives the reference's values, also with the tiles in groups that share each
    column panel of the weights (``ops._tiles_per_group``, forced here for weights of any size)."""
    if grouped:
        monkeypatch.setattr(ops, "_GROUP_BYTES", 0)
    n, H, W, cin, kh, kw, stride, pad, cout = geometry
    x = kernels.quantize(rng.standard_normal((n, H, W, cin)) * 0.5, spec.a)
    w = kernels.quantize(rng.standard_normal((kh, kw, cin, cout)) * 0.5, spec.b)
    assert ops._paths(spec, ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)) in ops._KINDS
    got = kernels.conv2d(x, w, spec, stride=stride, padding=pad)
    assert same_values(got, R.ref_conv2d(x, w, spec, stride=stride, padding=pad)).all()


@pytest.mark.parametrize("spec, path", [
    (MacSpec("fp8_e4m3", "fp16", fma=True), Path.HALF_F16),
    (MacSpec("fp8_e4m3", "bf16", fma=True), Path.HALF_BF16),
    (as_spec("bf16_fp32"), Path.NATIVE32),  # exact products
    (as_spec("fp32"), Path.NATIVE32),  # float32 products rounded before the add: never fused into an FMA
    (as_spec("fp16_fp16"), Path.HALF_PRODUCT_EXACT_F16),
    (MacSpec("bf16", "bf16", product="bf16"), Path.HALF_PRODUCT_EXACT_BF16),
    (MacSpec("fp32", "fp16", product="fp16"), Path.HALF_PRODUCT_F16 if HAVE_FMA else Path.PRODUCT),
    (MacSpec("fp32", "bf16", product="bf16"), Path.HALF_PRODUCT_BF16 if HAVE_FMA else Path.PRODUCT),
], ids=str)
@pytest.mark.parametrize("M, N", [(1, 11), (3, 16), (5, 24), (7, 37), (13, 45), (50, 40), (1543, 11), (1030, 3)])
@pytest.mark.parametrize("grouped", [False, True], ids=["tiles", "groups"])
def test_tiles_of_rows_equal_reference(rng, spec, path, M, N, grouped, monkeypatch):
    """Matmul and convolution rows on the float32 paths are computed six (four on HALF_PRODUCT_F16 / BF16) at a
    time (``ops._TILE_ROWS``), whole tiles per task, in register-blocked blocks of 16 and then 8 columns
    (``kernels._vec``) and the
    last N % 8 columns alone: every row count (1543 rows: 258 tiles over 256 tasks, the last tile cut short)
    and column count (16 + 8 + 0, 16 + 16 + 5, 16 + 16 + 8 + 5, ...) gives the reference's values, and
    float32 products that round stay unfused. The same with the tiles in groups of up to ``ops._GROUP``
    sharing each column panel of B (``ops._tiles_per_group``, forced here for any B: on two threads 13 rows are
    3 tiles in tasks of 1 and 2, 50 rows 9 tiles in tasks of 4 and 5, 1543 rows 33 tasks of 7 or 8 tiles, the
    last cut short)."""
    if grouped:
        monkeypatch.setattr(ops, "_GROUP_BYTES", 0)
    scale = 1.0 if path == Path.NATIVE32 else 0.5
    a = kernels.quantize(rng.standard_normal((M, 19)) * scale, spec.a)
    b = kernels.quantize(rng.standard_normal((19, N)) * scale, spec.b)
    assert ops._paths(spec, ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)) == path
    assert same_values(kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)).all()
    x = kernels.quantize(rng.standard_normal((2, 5, M % 7 + 3, 3)) * scale, spec.a)
    w = kernels.quantize(rng.standard_normal((3, 2, 3, N)) * scale, spec.b)
    for pad in ("same", "valid"):
        got = kernels.conv2d(x, w, spec, stride=(1, 2), padding=pad)
        assert same_values(got, R.ref_conv2d(x, w, spec, stride=(1, 2), padding=pad)).all()


@pytest.mark.parametrize("spec, path", [
    (MacSpec("fp8_e4m3", "fp16", fma=True), Path.HALF_F16),
    (MacSpec("fp8_e4m3", "bf16", fma=True), Path.HALF_BF16),
    (as_spec("fp32"), Path.NATIVE32),
    (as_spec("fp16_fp16"), Path.HALF_PRODUCT_EXACT_F16),
    (MacSpec("bf16", "bf16", product="bf16"), Path.HALF_PRODUCT_EXACT_BF16),
    (MacSpec("fp32", "fp16", product="fp16"), Path.HALF_PRODUCT_F16 if HAVE_FMA else Path.PRODUCT),
    (MacSpec("fp32", "bf16", product="bf16"), Path.HALF_PRODUCT_BF16 if HAVE_FMA else Path.PRODUCT),
], ids=str)
@pytest.mark.parametrize("mult", [1, 3])
def test_depthwise_rows_on_the_float32_paths_equal_reference(rng, spec, path, mult):
    """The float32 paths' depthwise rows read the input directly (``ops._make_row_dw``), one loop for a
    channel multiplier of 1 and one for the others; taps in the padding add zero products."""
    scale = 0.5 if path in (Path.HALF_F16, Path.HALF_BF16) else 1.0
    x = kernels.quantize(rng.standard_normal((2, 6, 5, 4)) * scale, spec.a)
    w = kernels.quantize(rng.standard_normal((3, 3, 4, mult)) * scale, spec.b)
    X, W = ops._prepare(x, spec.a, 3), ops._prepare(w, spec.b, 2)
    assert ops._paths(spec, X, W) == path
    for pad in ("same", "valid"):
        for stride in (1, (2, 1)):
            got = kernels.depthwise_conv2d(x, w, spec, stride=stride, padding=pad)
            assert same_values(got, R.ref_depthwise_conv2d(x, w, spec, stride=stride, padding=pad)).all()


def _midpoint_products(rng, acc, K):
    """float32 operands (a of 8 rows, b of 3 columns) whose exact products lie within a float32 rounding of
    the 16-bit format's midpoints, so that float32's product often is one: b = m / a for midpoints m, the
    rows of a scaled by powers of two (some products in binary16's subnormal range or past its largest
    value), both signs."""
    man = 10 if acc == "fp16" else 7
    a0 = rng.uniform(1, 2, K).astype(np.float32)
    m = (2 * rng.integers(2 ** man, 2 ** (man + 1), (K, 3)) + 1) * 2.0 ** -(man + 1) * 2.0 ** rng.integers(-3, 4, (K, 3))
    b = (m / a0[:, None]).astype(np.float32)
    scale = np.array([1, -1, 2 ** 3, -2 ** -5, 2 ** -18, -2 ** -22, 2 ** 14, 1])[:, None]
    a = (a0[None, :] * scale).astype(np.float32)
    a[7, ::3] *= -1
    return a, b


@pytest.mark.skipif(not HAVE_FMA, reason="a host without FMA keeps inexact products off the lanes (gate test)")
@pytest.mark.parametrize("acc", ["fp16", "bf16"])
def test_inexact_products_round_once_on_the_lanes(rng, acc):
    """fp32 operands into a 16-bit product and accumulator: float32 rounds the products, so the lanes fix
    each product stage with the FMA's error term (``kernels._half.product_f16``). On products built to
    land on the format's midpoints (where rounding float32's product again is wrong), matmul, conv2d and
    depthwise_conv2d equal the reference."""
    spec = MacSpec("fp32", acc, product=acc)
    path = Path.HALF_PRODUCT_F16 if acc == "fp16" else Path.HALF_PRODUCT_BF16
    a, b = _midpoint_products(rng, acc, 72)
    exact = a.astype(np.float64)[:, :, None] * b.astype(np.float64)[None, :, :]
    twice = kernels.quantize((a[:, :, None] * b[None, :, :]).astype(np.float64), acc)  # float32's product rounded again
    assert (twice != kernels.quantize(exact, acc)).sum() >= 10  # the data hits the double-rounding cases
    assert ops._paths(spec, ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)) == path
    assert same_values(kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)).all()
    # 27 columns (the columns scaled by powers of two: products still on midpoints) reach the vector blocks
    # of 16 and 8 columns (kernels._vec), not only the scalar loop of the last N % 8
    bw = np.concatenate([b * np.float32(f) for f in (1, -1, 2, 0.5, -4, 8, -0.25, 1, -1)], axis=1)
    twice_w = kernels.quantize((a[:, :, None] * bw[None, :, :]).astype(np.float64), acc)
    exact_w = kernels.quantize(a.astype(np.float64)[:, :, None] * bw.astype(np.float64)[None, :, :], acc)
    assert (twice_w[..., :24] != exact_w[..., :24]).sum() >= 80
    assert ops._paths(spec, ops._prepare(a, spec.a, 1), ops._prepare(bw, spec.b, 0)) == path
    assert same_values(kernels.matmul(a, bw, spec), R.ref_matmul(a, bw, spec)).all()
    x = a.reshape(2, 4, 4, 18)[..., :4].copy()
    w = b[:36].T.reshape(3, 3, 4, 3).copy()
    assert same_values(kernels.conv2d(x, w, spec, padding="same"), R.ref_conv2d(x, w, spec, padding="same")).all()
    wd = b[:36, 1].reshape(3, 3, 4, 1).copy()
    assert same_values(kernels.depthwise_conv2d(x, wd, spec, padding="same"),
                       R.ref_depthwise_conv2d(x, wd, spec, padding="same")).all()


def test_without_fma_inexact_products_leave_the_lanes(rng, monkeypatch):
    monkeypatch.setattr(ops, "HAVE_FMA", False)
    a, b = rng.standard_normal((3, 8)), rng.standard_normal((8, 2))
    assert ops._paths(MacSpec("fp32", "fp16", product="fp16"), a, b) == Path.PRODUCT
    assert ops._paths(as_spec("fp16_fp16"), a, b) == (Path.HALF_PRODUCT_EXACT_F16 if HAVE_F16C else Path.PRODUCT)


def test_products_off_the_binary16_grid_on_the_lanes_equal_reference(rng):
    """fp8_e5m2 operands over their whole range: products below binary16's smallest subnormal and above its
    largest value take HALF_F16 (the gate's argument, ``ops._half_lane``) and equal the reference."""
    spec = MacSpec("fp8_e5m2", "fp16", fma=True)
    a = kernels.quantize(rng.standard_normal((37, 50)) * 2.0 ** rng.integers(-16, 14, (37, 50)), "fp8_e5m2")
    b = kernels.quantize(rng.standard_normal((50, 9)) * 2.0 ** rng.integers(-16, 9, (50, 9)), "fp8_e5m2")
    p = np.abs(a[:, :, None] * b[None, :, :])
    assert ((p > 0) & (p < 2.0 ** -24)).sum() > 100 and (p > 65504).sum() > 100
    assert ops._paths(spec, ops._prepare(a, spec.a, 1), ops._prepare(b, spec.b, 0)) == Path.HALF_F16
    got = kernels.matmul(a, b, spec)
    assert np.isinf(got).any() and same_values(got, R.ref_matmul(a, b, spec)).all()
    x = a[:32].reshape(2, 4, 4, 50)[..., :5].copy()
    w = b[:45].reshape(3, 3, 5, 9).copy()
    _convolutions_equal_reference(spec, x, w, w[..., :2].copy())


@njit(cache=True)
def _round_odd_all(s, e, out):
    for i in range(s.size):
        out[i] = round_odd(s[i], e[i])


def test_round_odd_picks_the_odd_neighbour_on_the_errors_side(rng):
    """``kernels._half.round_odd(s, e)``, for s float32's nearest value to s + e, against numpy's
    ``nextafter``: s where e is 0 (either sign) or s is inf / NaN with a NaN e, else whichever of s and its
    neighbour towards e has an odd last significand bit. Normal s of both signs, powers of two (whose
    neighbour towards zero lies in the binade below), float32's largest value and its smallest normals."""
    n = 200_000
    bits = rng.integers(0x00800000, 0x7F800000, n, dtype=np.uint32)
    bits[: n // 8] &= np.uint32(0xFF800000)  # powers of two
    bits[n // 8: n // 8 + 100] = 0x7F7FFFFF
    bits[n // 8 + 100: n // 8 + 200] = 0x00800000 + np.arange(100, dtype=np.uint32)
    s = bits.view(np.float32) * np.where(rng.integers(0, 2, n) == 1, np.float32(-1), np.float32(1))
    # |e| at most a quarter of the smaller gap around s: then s is float32's nearest value to s + e
    with np.errstate(over="ignore"):
        up, down = np.nextafter(s, np.float32(np.inf)), np.nextafter(s, -np.float32(np.inf))
    gap = np.minimum(np.abs(up - s), np.abs(s - down))
    e = (gap * rng.uniform(2.0 ** -20, 0.25, n) * rng.choice([-1, 1, 0], n)).astype(np.float32)
    e[:50] = -0.0
    assert (np.abs(e) <= gap / 4).all() and (e[: n // 8] != 0).sum() > n // 20 and (np.signbit(e) != np.signbit(s)).any()
    got = np.empty_like(s)
    _round_odd_all(s, e, got)
    with np.errstate(over="ignore"):
        toward = np.nextafter(s, np.where(e > 0, np.float32(np.inf), -np.float32(np.inf)))
    odd = (s.view(np.uint32) & 1) == 1
    want = np.where((e == 0) | odd, s, toward)
    assert same_values(got, want).all()
    assert ((got != s) == ((e != 0) & ~odd)).all() and ((e != 0) & ~odd).sum() > n // 5
    special = np.array([np.inf, -np.inf, np.nan], dtype=np.float32)
    _round_odd_all(special, np.full(3, np.nan, np.float32), got[:3])
    assert same_values(got[:3], special).all()


@njit(cache=True)
def _products16(a, b, o16, ob16):
    for i in range(a.size):
        o16[i] = product_f16(a[i], b[i])
        ob16[i] = product_bf16(a[i], b[i])


def test_product_rounding_near_zero_and_the_midpoints_keeps_magnitude_and_sign(rng):
    """``kernels._half.product_f16`` / ``product_bf16`` against kernels.quantize of the exact product, signs of zero
    included: float32 products aimed at -0x1.fffffep-26 (just below half binary16's smallest subnormal; the
    midpoint test once read it as one, giving -2**-24 for -0), at the first midpoints, at 65520 and near
    float32's smallest normals, both signs. A review found 42.59432 * -6.996783e-10."""
    h = float.fromhex
    targets = np.array([h("0x1.fffffep-26"), 2.0 ** -25, h("0x1.000002p-25"), 3 * 2.0 ** -26, 3 * 2.0 ** -25, 65520.0,
                        2.0 ** -14 + 2.0 ** -25, h("0x1.fffffep-100"), 2.0 ** -99])
    a0 = rng.uniform(1, 2, (len(targets), 4000)).astype(np.float32)
    t = np.concatenate([targets, -targets])[:, None]
    a = np.concatenate([a0, a0]).astype(np.float32)
    b = (t / a).astype(np.float32)
    a, b = np.append(a.ravel(), np.float32(42.59432)), np.append(b.ravel(), np.float32(-6.996783e-10))
    o16, ob16 = np.empty_like(a), np.empty_like(a)
    _products16(a, b, o16, ob16)
    exact = a.astype(np.float64) * b.astype(np.float64)
    assert same_values(o16, kernels.quantize(exact, "fp16")).all()
    assert same_values(ob16, kernels.quantize(exact, "bf16")).all()
    assert o16[-1] == 0 and np.signbit(o16[-1])


def test_tiles_group_where_the_weights_pass_the_cache():
    """Weights of more than 512 KB in float32 (cifar_cnn's fc1, 2304 x 512) put the tiles in groups; a
    convolution's few weights (3 x 3 x 64 x 64) do not."""
    assert ops._tiles_per_group(2304 * 512) == ops._GROUP > 1
    assert ops._tiles_per_group(3 * 3 * 64 * 64) == 1
