"""API fuzz test: arbitrary dtypes, shapes (empty and 0-d included), NaN / inf and parameter values into
the public entry points. Every call must either return what the reference returns, or raise ValueError /
TypeError with a message: never another exception type, never a silent garbage result.

References: ``parse_format`` round-trips its result through the format's own name; ``kernels.quantize``
equals the scalar rounding core (``kernels.quantize._round_array``, the rounding of
``kernels.reference``) element by element, on the exact input values; ``MacSpec`` rebuilds equal from
its own fields; ``matmul`` / ``conv2d`` / ``depthwise_conv2d`` equal ``kernels.reference``; ``hwsim.run``
equals itself run one image at a time (its batch independence), and ``hwsim.accuracy`` the top-1 of
that output. 10,100 examples in all, derandomized (the same examples on every run).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hwsim
import kernels
from kernels import reference as R
from kernels.formats import FORMATS, MXFormat, parse_format
from kernels.mac import MacSpec
from kernels.quantize import _round_array

from conftest import same_values

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
OK = (ValueError, TypeError)
TINY = Path(__file__).resolve().parent / "golden" / "tiny_cnn.keras"


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, error) for an allowed error that carries a message; anything else raises."""
    try:
        return fn(*args, **kwargs), None
    except OK as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None, exc


# ------------------------------------------------------------------------------------------------ values

DTYPES = [np.float64, np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.int16, np.int32, np.int64, np.uint8,
          np.uint64, np.bool_, np.complex128, np.dtype("<U4"), np.dtype("datetime64[s]"), np.dtype(object)]


@st.composite
def arrays(draw, max_dims=3, max_side=4, min_dims=0):
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side))
    if dt.kind == "O":
        return np.array(draw(st.lists(st.one_of(st.none(), st.floats(), st.text(max_size=2)), min_size=1,
                                      max_size=4)), dtype=object)
    if dt == np.dtype(ml_dtypes.bfloat16):
        f = draw(hnp.arrays(np.float32, shape, elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
        return f.astype(dt)
    if dt.kind in "US":
        elems = st.text(alphabet="0123456789.-e", max_size=4)
    elif dt.kind == "f":
        elems = st.one_of(st.floats(width=8 * dt.itemsize), st.sampled_from([0.0, -0.0, 0.5, 1.5, 2.5, 255.0]))
    else:
        elems = None
    return draw(hnp.arrays(dt, shape, elements=elems))


FORMAT_NAMES = sorted(FORMATS) + ["int4", "uint3", "fixed8.3", "ufixed6.6", "fixed12.-2", "e5m6", "e2m1", "e8m0",
                                  "int1", "int33", "fixed4.9", "e12m3", "bogus", ""]
ROUNDINGS = ["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic", "half_up", "bogus", None, 3]
OVERFLOWS = [None, "saturate", "wrap", "ieee", "bogus"]


# ------------------------------------------------------------------------------------------------ parse_format


@settings(max_examples=3000, **SETTINGS)
@given(st.one_of(
    st.from_regex(r"(u?int|u?fixed|e|mx|float|fp)?-?[0-9]{0,3}(\.|m|_e)?-?[0-9]{0,3}(m[0-9]{1,2})?", fullmatch=True),
    st.sampled_from(FORMAT_NAMES), st.text(max_size=12), st.integers(), st.floats(), st.none(),
    st.lists(st.integers(), max_size=2), st.booleans()))
def test_parse_format(name):
    fmt, err = attempt(parse_format, name)
    if err is None:
        assert parse_format(fmt.name) == fmt  # the format's own name gives it back
        assert parse_format(fmt) == fmt
        assert fmt.max > 0 and (isinstance(fmt, MXFormat) or math.isfinite(fmt.max))


# ------------------------------------------------------------------------------------------------ quantize


def _exact(x):
    """The exact values of an integer / float array as (float64 value, float64 residual), or None."""
    if x.dtype.kind in "iu" and x.dtype.itemsize == 8:
        hi = x.astype(np.float64)
        lo = np.array([float(int(v) - int(h)) if abs(h) > 2**53 else 0.0
                       for v, h in zip(x.ravel().tolist(), hi.ravel().tolist())]).reshape(x.shape)
        return hi, lo
    return x.astype(np.float64), np.zeros(x.shape)


@settings(max_examples=2800, **SETTINGS)
@given(x=arrays(), fmt=st.sampled_from(FORMAT_NAMES), rounding=st.sampled_from(ROUNDINGS),
       overflow=st.sampled_from(OVERFLOWS), seed=st.sampled_from([0, 7, 2**64 - 1, 2**64, -1, 1.5, "1"]),
       rand_bits=st.sampled_from([None, 1, 8, 32, 0, 33]), axis=st.sampled_from([None, None, 0, -1, 3]))
def test_quantize(x, fmt, rounding, overflow, seed, rand_bits, axis):
    got, err = attempt(kernels.quantize, x, fmt, rounding=rounding, overflow=overflow, seed=seed,
                       rand_bits=rand_bits, axis=axis)
    if err is not None:
        return
    assert x.dtype.kind in "fiub" or x.dtype == np.dtype(ml_dtypes.bfloat16), f"accepted dtype {x.dtype}"
    assert got.shape == x.shape and got.dtype in (np.float32, np.float64)
    f = parse_format(fmt)
    if isinstance(f, MXFormat):
        return  # block formats: held to their oracles in test_quantize_mx.py
    assert axis is None, "an axis for a format without blocks must be refused"
    from kernels.rng import make_key

    hi, lo = _exact(np.asarray(x).astype(np.float64) if x.dtype.kind not in "iu" else x)
    mode_stoch = rounding == "stochastic"
    key = make_key(seed) if mode_stoch else np.uint64(0)
    want, _ = _round_array(hi, lo, f, rounding, overflow, key, rand_bits,
                           np.arange(x.size, dtype=np.uint64).reshape(x.shape))
    assert same_values(got, want).all(), (x, got, want)


# ------------------------------------------------------------------------------------------------ MacSpec

SPEC_FORMATS = ["fp32", "fp16", "bf16", "fp8_e4m3", "int8", "int32", "fixed16.6", "mxfp8_e4m3", "e5m6", "e11m52",
                "int2", "bogus", None]


@settings(max_examples=2000, **SETTINGS)
@given(a=st.sampled_from(SPEC_FORMATS + ["fp8_e4m3_fp16", "int8_int32", "bogus_preset"]),
       accum=st.sampled_from(SPEC_FORMATS), b=st.sampled_from(SPEC_FORMATS), product=st.sampled_from(SPEC_FORMATS),
       out=st.sampled_from(SPEC_FORMATS), rounding=st.sampled_from(ROUNDINGS[:-1]),
       overflow=st.sampled_from(OVERFLOWS), fma=st.booleans(),
       order=st.sampled_from(["sequential", "pairwise", "chunked", "bogus"]),
       chunk=st.sampled_from([None, 1, 4, 0, -2, 2.5, True]), rand_bits=st.sampled_from([None, 1, 32, 0, 40]))
def test_macspec(a, accum, b, product, out, rounding, overflow, fma, order, chunk, rand_bits):
    spec, err = attempt(MacSpec, a, accum, b=b, product=product, out=out, rounding=rounding or "nearest",
                        overflow=overflow, fma=fma, order=order, chunk=chunk, rand_bits=rand_bits)
    if err is None:
        again = MacSpec(spec.a, spec.accum, b=spec.b, product=spec.product, out=spec.out, rounding=spec.rounding,
                        product_rounding=spec.product_rounding, accum_rounding=spec.accum_rounding,
                        overflow=spec.overflow, fma=spec.fma, order=spec.order, chunk=spec.chunk,
                        rand_bits=spec.rand_bits)
        assert again == spec


# ------------------------------------------------------------------------------------------------ MAC ops

# a few specs (each spec compiles its kernel paths once), covering the float32 lanes, the float64 lanes,
# the generic loop (product rounding, pairwise order) and the exact integer path
OP_SPECS = [MacSpec("fp8_e4m3", "fp16", fma=True), MacSpec("bf16", "fp16", rounding="stochastic"),
            MacSpec("fp16", "fp16", product="fp16", order="pairwise"), MacSpec("int8", "int32", overflow="wrap"),
            MacSpec("fp32", "fp32", fma=True)]


def _check_op(fast, ref, args, kwargs):
    got, err = attempt(fast, *args, **kwargs)
    if err is not None:
        return
    for a in args[:2]:
        assert np.asarray(a).dtype.kind in "fiub" or np.asarray(a).dtype == np.dtype(ml_dtypes.bfloat16)
    want = ref(*args, **kwargs)
    assert got.shape == want.shape and same_values(got, want).all(), (args, got, want)


@settings(max_examples=1100, **SETTINGS)
@given(a=arrays(max_dims=3, max_side=5), b=arrays(max_dims=3, max_side=5), spec=st.sampled_from(OP_SPECS),
       seed=st.sampled_from([0, 5, -1]), offset=st.sampled_from([0, 3, -1, 1.0]))
def test_matmul(a, b, spec, seed, offset):
    _check_op(kernels.matmul, R.ref_matmul, (a, b, spec), dict(seed=seed, offset=offset))


@settings(max_examples=600, **SETTINGS)
@given(x=arrays(max_dims=4, max_side=4, min_dims=3), w=arrays(max_dims=4, max_side=3, min_dims=3),
       spec=st.sampled_from(OP_SPECS), stride=st.sampled_from([1, 2, (1, 2), 0, (1,), "1"]),
       padding=st.sampled_from(["valid", "same", "bogus"]), depthwise=st.booleans())
def test_convolutions(x, w, spec, stride, padding, depthwise):
    fast, ref = (kernels.depthwise_conv2d, R.ref_depthwise_conv2d) if depthwise else (kernels.conv2d, R.ref_conv2d)
    _check_op(fast, ref, (x, w, spec), dict(stride=stride, padding=padding, seed=1))


# ------------------------------------------------------------------------------------------------ networks


@pytest.fixture(scope="module")
def tiny():
    return hwsim.load_model(str(TINY))


@st.composite
def images(draw):
    dt = np.dtype(draw(st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.complex64, np.dtype("<U2")])))
    n = draw(st.integers(0, 3))
    shape = draw(st.sampled_from([(n, 32, 32, 3), (n, 32, 32), (n, 3, 32, 32), (n, 32, 32, 3, 1), ()]))
    if dt.kind == "f":
        elems = st.one_of(st.floats(0, 255, width=32), st.sampled_from([np.nan, np.inf, 0.5]))
    elif dt.kind in "iu":
        elems = st.integers(0, 255)
    else:
        elems = None
    return draw(hnp.arrays(dt, shape, elements=elems))


@settings(max_examples=300, **SETTINGS)
@given(x=images(), mac=st.sampled_from(["fp32", "fp8_e4m3_fp16", "int8_int32", "bogus"]),
       batch=st.sampled_from([1, 2, 250, 0, -1]), seed=st.sampled_from([None, 3, 2**64]))
def test_run(tiny, x, mac, batch, seed):
    if tiny.input_shape != (32, 32, 3):
        pytest.fail(f"the fuzz images assume tiny_cnn's 32x32x3 input, not {tiny.input_shape}")
    got, err = attempt(hwsim.run, tiny, x, mac=mac, batch_size=batch, seed=seed)
    if err is not None:
        return
    assert x.dtype.kind in "fiu" and x.ndim == 4 and np.isfinite(x.astype(np.float64)).all()
    assert mac in ("fp32", "fp8_e4m3_fp16") and batch >= 1
    one = np.concatenate([hwsim.run(tiny, x[i:i + 1], mac=mac, seed=seed) for i in range(len(x))]) if len(x) else got
    assert got.shape == (len(x), 10) and same_values(got, one).all()


@settings(max_examples=300, **SETTINGS)
@given(x=images(), labels=arrays(max_dims=2, max_side=4, min_dims=0))
def test_accuracy(tiny, x, labels):
    got, err = attempt(hwsim.accuracy, tiny, x, labels, progress=False)
    if err is not None:
        return
    lab = np.asarray(labels)
    assert lab.ndim == 1 and lab.dtype.kind in "iu" and len(lab) == len(x) > 0 and ((lab >= 0) & (lab < 10)).all()
    top1 = hwsim.run(tiny, x).argmax(1)
    assert got == Fraction(int((top1 == lab).sum()), len(lab))
