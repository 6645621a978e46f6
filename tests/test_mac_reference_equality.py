"""The fast Numba MAC kernels equal the literal reference (:mod:`kernels.reference`) bit for bit.

Randomized (hypothesis, fixed example budgets, no deadline) over operand / product / accumulator /
output formats (integer, fixed point, fp32 / fp16 / bf16 / fp8 / fp6 / fp4, MX operands, narrow
accumulators that overflow), every rounding mode per stage (stochastic with seeds and rand_bits),
every accumulation order (chunk sizes 1 .. larger than K), fma, every overflow mode, shapes with
K = 1 and empty dimensions, convolution strides and paddings, offsets, and the ``stats`` counters.
Values are compared as bit patterns (NaN == NaN, the sign of zero counts), dtypes exactly.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernels
from kernels import reference as R
from kernels.formats import FixedFormat, FloatFormat, MXFormat, parse_format
from kernels.mac import MacSpec

from conftest import same_values

OPERANDS = ["int8", "int4", "uint4", "fixed8.4", "fixed12.10", "fp16", "bf16", "fp8_e4m3", "float8_e5m2",
            "float8_e4m3fnuz", "float8_e3m4", "fp6_e2m3", "fp4_e2m1", "mxfp8_e4m3", "mxint8", "fp32", "tf32"]
ACCUMS = ["fp32", "fp16", "bf16", "fp8_e4m3", "float8_e5m2", "e5m6", "e3m2", "fp6_e3m2", "e10m52", "float8_e5m2fnuz",
          "int32", "int16", "int8", "fixed16.8", "fixed8.3", "fixed10.6", "uint8", "int12"]
PRODUCTS = [None, None, "fp16", "bf16", "fp8_e4m3", "e5m6", "fp32", "fixed12.6", "int8", "fixed16.10"]
OUTS = [None, None, None, "fp8_e4m3", "bf16", "fp16", "int8", "fixed8.4", "fp4_e2m1"]
ROUNDINGS = ["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic"]
SCALES = [2.0 ** -14, 2.0 ** -6, 1.0, 1.0, 8.0, 2.0 ** 7, 2.0 ** 9, 2.0 ** 12]

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much,
                                                                         HealthCheck.too_slow])


@st.composite
def specs(draw):
    while True:
        a = draw(st.sampled_from(OPERANDS))
        b = draw(st.sampled_from([None, *OPERANDS]))
        accum = draw(st.sampled_from(ACCUMS))
        fma = draw(st.booleans())
        product = None if fma else draw(st.sampled_from(PRODUCTS))
        order = draw(st.sampled_from(["sequential", "pairwise", "chunked"]))
        chunk = draw(st.sampled_from([1, 2, 3, 5, 8, 64])) if order == "chunked" else None
        rounding = draw(st.sampled_from(ROUNDINGS))
        pr = draw(st.sampled_from([None, *ROUNDINGS]))
        ar = draw(st.sampled_from([None, *ROUNDINGS]))
        overflow = draw(st.sampled_from([None, "saturate", "wrap", "ieee"]))
        out = draw(st.sampled_from(OUTS))
        rand_bits = draw(st.sampled_from([None, None, 1, 3, 8, 23, 32]))
        try:
            return MacSpec(a, accum, b=b, product=product, rounding=rounding, product_rounding=pr,
                           accum_rounding=ar, overflow=overflow, fma=fma, order=order, chunk=chunk, out=out,
                           rand_bits=rand_bits)
        except ValueError:
            continue  # an invalid combination (checked in test_macspec); draw again


def _values(draw, shape, fmt, scale):
    """Random values for an operand of format ``fmt``: normal * scale, with zeros of both signs, and
    (float formats only: fixed formats have no NaN) infinities and NaN now and then."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape) * scale
    if x.size:
        specials = [0.0, -0.0]
        elem = fmt.elem if isinstance(fmt, MXFormat) else fmt
        if isinstance(elem, FloatFormat) and draw(st.integers(0, 4)) == 0:
            specials += [np.inf, -np.inf, np.nan]
        mask = rng.random(shape) < draw(st.sampled_from([0.0, 0.1, 0.3]))
        x[mask] = rng.choice(specials, size=int(mask.sum()))
    return x


def _maybe_empty(data, **dims):
    """The dimensions, one of them set to 0 about one time in eight."""
    which = data.draw(st.sampled_from([None] * 7 + [list(dims)]), "empty?")
    if which is not None:
        dims[data.draw(st.sampled_from(which), "empty dim")] = 0
    return dims


def _check(got, want, what):
    (g, gs), (w, ws) = got, want
    assert g.dtype == w.dtype, f"{what}: dtype {g.dtype} != {w.dtype}"
    assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
    eq = same_values(g, w)
    if not eq.all():
        i = np.flatnonzero(~eq)[:6]
        raise AssertionError(f"{what}: {int((~eq).sum())} of {eq.size} differ at flat {i}: "
                             f"fast {g.ravel()[i]!r} reference {w.ravel()[i]!r}")
    assert (gs.saturated, gs.wrapped, gs.overflowed, gs.invalid) == \
        (ws.saturated, ws.wrapped, ws.overflowed, ws.invalid), f"{what}: stats {gs} != {ws}"


def _run_both(fast, ref, args, kwargs, spec):
    """Both kernels on the same problem; an error must be the same error in both."""
    try:
        want = ref(*args, **kwargs)
    except ValueError as exc:
        try:
            fast(*args, **kwargs)
        except ValueError as exc2:
            assert type(exc2) is type(exc)
            return
        raise AssertionError(f"{spec.name}: the reference raised {exc!r}, the fast kernel did not")
    got = fast(*args, **kwargs)
    _check(got, want, f"{spec.name} {kwargs}")


@settings(max_examples=160, **SETTINGS)
@given(data=st.data(), spec=specs())
def test_matmul_equals_reference(data, spec):
    M = data.draw(st.sampled_from([5, 3, 1, 2, 4]), "M")
    K = data.draw(st.sampled_from([9, 33, 1, 2, 3, 4, 7, 1, 16, 33, 64]), "K")
    N = data.draw(st.sampled_from([6, 4, 1, 2, 3]), "N")
    scale = data.draw(st.sampled_from(SCALES), "scale")
    M, K, N = _maybe_empty(data, M=M, K=K, N=N).values()
    a = _values(data.draw, (M, K), spec.a, scale)
    b = _values(data.draw, (K, N), spec.b, scale)
    kw = dict(seed=data.draw(st.integers(0, 2**40), "seed"), offset=data.draw(st.sampled_from([0, 0, 1, 7]), "off"),
              stats=True)
    _run_both(kernels.matmul, R.ref_matmul, (a, b, spec), kw, spec)


STRIDES = [1, 2, (2, 1), (1, 3)]


@settings(max_examples=90, **SETTINGS)
@given(data=st.data(), spec=specs())
def test_conv2d_equals_reference(data, spec):
    n = data.draw(st.sampled_from([2, 1]), "n")
    H, W = data.draw(st.sampled_from([7, 5, 6, 4, 3, 2, 1]), "H"), data.draw(st.sampled_from([6, 7, 5, 4, 3, 2, 1]), "W")
    cin = data.draw(st.sampled_from([3, 2, 1]), "cin")
    cout = data.draw(st.sampled_from([3, 1, 2]), "cout")
    kh, kw = data.draw(st.integers(1, 3), "kh"), data.draw(st.integers(1, 3), "kw")
    scale = data.draw(st.sampled_from(SCALES), "scale")
    n, H, W, cin, cout = _maybe_empty(data, n=n, H=H, W=W, cin=cin, cout=cout).values()
    x = _values(data.draw, (n, H, W, cin), spec.a, scale)
    w = _values(data.draw, (kh, kw, cin, cout), spec.b, scale)
    kw_ = dict(stride=data.draw(st.sampled_from(STRIDES), "stride"),
               padding=data.draw(st.sampled_from(["valid", "same"]), "padding"),
               seed=data.draw(st.integers(0, 2**40), "seed"), offset=data.draw(st.sampled_from([0, 5]), "off"),
               stats=True)
    if _window_too_large(kernels.conv2d, (x, w, spec), kw_, kh, kw, H, W):
        return
    _run_both(kernels.conv2d, R.ref_conv2d, (x, w, spec), kw_, spec)


@settings(max_examples=70, **SETTINGS)
@given(data=st.data(), spec=specs())
def test_depthwise_equals_reference(data, spec):
    n = data.draw(st.sampled_from([2, 1]), "n")
    H, W = data.draw(st.sampled_from([7, 5, 6, 4, 3, 2, 1]), "H"), data.draw(st.sampled_from([6, 7, 5, 4, 3, 2, 1]), "W")
    c = data.draw(st.sampled_from([3, 2, 1]), "c")
    m = data.draw(st.sampled_from([1, 2]), "m")
    kh, kw = data.draw(st.integers(1, 3), "kh"), data.draw(st.integers(1, 3), "kw")
    scale = data.draw(st.sampled_from(SCALES), "scale")
    n, H, W, c = _maybe_empty(data, n=n, H=H, W=W, c=c).values()
    x = _values(data.draw, (n, H, W, c), spec.a, scale)
    w = _values(data.draw, (kh, kw, c, m), spec.b, scale)
    kw_ = dict(stride=data.draw(st.sampled_from(STRIDES), "stride"),
               padding=data.draw(st.sampled_from(["valid", "same"]), "padding"),
               seed=data.draw(st.integers(0, 2**40), "seed"), offset=data.draw(st.sampled_from([0, 3]), "off"),
               stats=True)
    if _window_too_large(kernels.depthwise_conv2d, (x, w, spec), kw_, kh, kw, H, W):
        return
    _run_both(kernels.depthwise_conv2d, R.ref_depthwise_conv2d, (x, w, spec), kw_, spec)


def _window_too_large(fn, args, kw_, kh, kw, H, W):
    """A window larger than the input with 'valid' padding has no output: a clear error, not an empty
    array (True when that case was drawn and checked)."""
    if kw_["padding"] == "valid" and (kh > H or kw > W):
        with pytest.raises(ValueError, match="larger than the .* input with padding='valid'"):
            fn(*args, **kw_)
        return True
    return False


GRID_ORDERS = [("sequential", None), ("pairwise", None), ("chunked", 1), ("chunked", 4), ("chunked", 64)]
# (operand, product, accumulator, out, overflow, scale): every addition really rounds in these
GRID_UNITS = [
    ("fp16", None, "bf16", None, None, 1.0),
    ("fp8_e4m3", "fp16", "e5m6", "fp8_e4m3", None, 4.0),
    ("int8", "fixed12.2", "fixed12.4", None, "wrap", 8.0),
    ("bf16", None, "fp16", None, "saturate", 64.0),
    # wide dynamic range: float64 sums are inexact, the TwoSum residual decides directed / tied roundings
    ("fp16", None, "fp32", None, None, 20),
    ("fp32", None, "e10m52", None, None, 60),
]


def _grid_values(rng, shape, scale):
    """normal * scale; an int scale w means normal * 2**U{-w..w} per element (wide dynamic range)."""
    x = rng.standard_normal(shape)
    return x * scale if isinstance(scale, float) else np.ldexp(x, rng.integers(-scale, scale + 1, size=shape))


@pytest.mark.parametrize("unit", GRID_UNITS, ids=[f"{u[0]}-{u[1]}-{u[2]}-{u[3]}-{u[4]}" for u in GRID_UNITS])
@pytest.mark.parametrize("order,chunk", GRID_ORDERS, ids=[f"{o}{c or ''}" for o, c in GRID_ORDERS])
def test_grid_equals_reference(unit, order, chunk):
    """Every rounding mode x order on problems where the roundings matter (guaranteed coverage next
    to the randomized search above): matmul, conv2d and depthwise, with stats and an offset."""
    op, prod, acc, out, ovf, scale = unit
    rng = np.random.default_rng(GRID_UNITS.index(unit) * 10 + GRID_ORDERS.index((order, chunk)))
    a, b = _grid_values(rng, (4, 29), scale), _grid_values(rng, (29, 5), scale)
    x, w = _grid_values(rng, (2, 6, 5, 3), scale), _grid_values(rng, (3, 2, 3, 2), scale)
    for rounding in ["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic"]:
        spec = MacSpec(op, acc, product=prod, out=out, overflow=ovf, rounding=rounding, order=order, chunk=chunk,
                       rand_bits=5 if chunk == 4 else None)
        kw = dict(seed=11, offset=3, stats=True)
        _check(kernels.matmul(a, b, spec, **kw), R.ref_matmul(a, b, spec, **kw), spec.name)
        if rounding not in ("nearest", "down", "stochastic"):
            continue  # the convolutions share the accumulation code: three modes suffice there
        _check(kernels.conv2d(x, w, spec, stride=(2, 1), padding="same", **kw),
               R.ref_conv2d(x, w, spec, stride=(2, 1), padding="same", **kw), spec.name + " conv2d")
        _check(kernels.depthwise_conv2d(x, w, spec, padding="same", **kw),
               R.ref_depthwise_conv2d(x, w, spec, padding="same", **kw), spec.name + " depthwise")


PRESETS = ["int8_int32", "int4_int16", "fp16_fp32", "bf16_fp32", "fp16_fp16", "fp8_e4m3_fp16", "fp8_e4m3_fp32",
           "fp8_e5m2_fp16", "fp32", "fp32_fma"]


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), preset=st.sampled_from(PRESETS))
def test_presets_equal_reference(data, preset):
    """Preset names (the fast kernels have special paths for some: exact integer BLAS, native fp32)."""
    spec = kernels.mac.as_spec(preset)
    M, K, N = data.draw(st.sampled_from([3, 1, 4, 0])), data.draw(st.sampled_from([5, 40, 1, 0])), data.draw(st.sampled_from([4, 1, 2, 0]))
    scale = data.draw(st.sampled_from([1.0, 100.0, 2.0 ** -10]))
    a = _values(data.draw, (M, K), spec.a, scale)
    b = _values(data.draw, (K, N), spec.b, scale)
    for stats in (False, True):
        want = R.ref_matmul(a, b, preset, stats=stats)
        got = kernels.matmul(a, b, preset, stats=stats)
        _check(got if stats else (got, R.RefStats()), want if stats else (want, R.RefStats()), preset)
    x = _values(data.draw, (2, 5, 4, 3), spec.a, scale)
    w = _values(data.draw, (3, 2, 3, 2), spec.b, scale)
    _check(kernels.conv2d(x, w, preset, padding="same", stats=True), R.ref_conv2d(x, w, preset, padding="same",
                                                                                     stats=True), preset)
    _check(kernels.depthwise_conv2d(x, w, preset, stride=2, stats=True),
           R.ref_depthwise_conv2d(x, w, preset, stride=2, stats=True), preset)


def test_specs_strategy_covers_the_space():
    """The strategy reaches every format kind, order, overflow mode and the fma / product / out stages."""
    seen = set()

    @settings(max_examples=400, database=None, **SETTINGS)
    @given(spec=specs())
    def collect(spec):
        seen.add(("order", spec.order))
        seen.add(("ovf", spec.overflow))
        seen.add(("fma", spec.fma))
        seen.add(("prod", spec.product is not None))
        seen.add(("out", spec.out is not None))
        seen.add(("acc", type(spec.accum).__name__))
        seen.add(("a", type(spec.a).__name__))
        seen.add(("stoch", spec.is_stochastic))

    collect()
    want = {("order", o) for o in ("sequential", "pairwise", "chunked")} | \
        {("ovf", o) for o in (None, "saturate", "wrap", "ieee")} | {("fma", True), ("fma", False)} | \
        {("prod", True), ("out", True), ("acc", "FixedFormat"), ("acc", "FloatFormat"), ("a", "MXFormat"),
         ("a", "FixedFormat"), ("a", "FloatFormat"), ("stoch", True), ("stoch", False)}
    assert want <= seen, want - seen
    assert isinstance(parse_format("fixed8.3"), FixedFormat)


@pytest.mark.parametrize("spec", [MacSpec("fp8_e4m3", "fp16", rounding="stochastic"), MacSpec("fp8_e4m3", "fp16"),
                                  MacSpec("int4", "fixed16.4", rounding="down", overflow="saturate"),
                                  MacSpec("bf16", "bf16", product="bf16", order="pairwise"), MacSpec.preset("bf16_fp32")],
                         ids=["fp16-stochastic", "fp16-nearest", "fixed-down", "bf16-pairwise", "bf16_fp32-native"])
def test_many_pixels_per_task_equal_reference(spec):
    """More output pixels than the kernels' tasks (ops._BLOCKS), so each task runs several pixels with
    the same scratch buffers: every pixel must still equal the reference (nothing left over from the
    previous pixel, the right stochastic counters)."""
    from kernels import ops

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 14, 13, 3)) * 4
    assert 2 * 14 * 13 > ops._BLOCKS
    w = rng.standard_normal((3, 3, 3, 4))
    wd = rng.standard_normal((3, 3, 3, 2))
    for pad in ("same", "valid"):
        got = kernels.conv2d(x, w, spec, padding=pad, seed=3, offset=11)
        assert same_values(got, R.ref_conv2d(x, w, spec, padding=pad, seed=3, offset=11)).all()
        got = kernels.depthwise_conv2d(x, wd, spec, padding=pad, seed=3, offset=11)
        assert same_values(got, R.ref_depthwise_conv2d(x, wd, spec, padding=pad, seed=3, offset=11)).all()


@pytest.mark.parametrize("z,want", [
    (np.array([]), True), (np.array([0.0, -0.0, 1.0, -2.0 ** 60, 2.0 ** -60]), True), (np.array([3.0, 2.0 ** 61]), False),
    (np.array([2.0 ** -61]), False), (np.array([1.0, np.nan]), False), (np.array([np.inf]), False),
    (np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[:, :1], True), (np.array([5, 2 ** 62], np.int64), False)])
def test_native_float32_gate(z, want):
    """The native float32 path runs only on operands whose products float32 holds exactly: finite,
    nonzero magnitudes in [2**-60, 2**60]."""
    from kernels.ops import _in_safe_range

    assert _in_safe_range(z) is want


def test_native_float32_gate_sends_tiny_operands_elsewhere():
    """bf16_fp32 with operands below 2**-60: float32 would lose the products' low bits (subnormal
    products), the kernel must still equal the reference."""
    a = np.array([[2.0 ** -70, 1.5 * 2.0 ** -66, 1.0]])
    b = np.array([[2.0 ** -70], [2.0 ** -70], [2.0 ** -100]])
    spec = MacSpec.preset("bf16_fp32")
    assert same_values(kernels.matmul(a, b, spec), R.ref_matmul(a, b, spec)).all()


def test_exact_conv_path_spans_several_blocks():
    """int8_int32 convolutions take the exact BLAS path, im2col in blocks of images (about 1 MB
    each): a batch spanning three blocks, a last partial one included, equals exact integer conv."""
    from numpy.lib.stride_tricks import sliding_window_view

    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (12, 20, 20, 16)).astype(np.float32)
    w = rng.integers(-128, 128, (3, 3, 16, 4)).astype(np.float32)
    per_img = 18 * 18 * 3 * 3 * 16 * 4  # bytes of float32 im2col per image
    assert 2 < -(-12 // max(1, 2 ** 20 // per_img))  # several blocks
    win = sliding_window_view(x.astype(np.int64), (3, 3), axis=(1, 2))  # (n, 18, 18, Cin, 3, 3)
    want = np.einsum("nhwcij,ijco->nhwo", win, w.astype(np.int64))
    got = kernels.conv2d(x, w, "int8_int32")
    assert np.array_equal(got, want.astype(np.float64))
