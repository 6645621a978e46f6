"""MacSpec validation, presets, and bad input to the MAC kernels: clear ``ValueError``s that name the
offending shapes / values (checked on the reference and on the fast kernels)."""

import re

import numpy as np
import pytest

from kernels.formats import FixedFormat, FloatFormat
from kernels.mac import PRESETS, MacSpec, as_spec, precision_bits



def raises(*fragments):
    """pytest.raises(ValueError) whose message contains every fragment (literally)."""
    return pytest.raises(ValueError, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ------------------------------------------------------------------------------------------------
# MacSpec
# ------------------------------------------------------------------------------------------------

def test_spec_defaults_and_resolution():
    s = MacSpec("fp8_e4m3", "fp16", rounding="stochastic")
    assert s.b is s.a and isinstance(s.a, FloatFormat) and s.a.name == "float8_e4m3fn"
    assert (s.product_rounding, s.accum_rounding) == ("stochastic", "stochastic")
    assert s.out_format is s.accum and s.is_stochastic
    t = MacSpec("int8", "int32", product_rounding="up", accum_rounding="nearest")
    assert t.rounding == "nearest" and not t.is_stochastic and isinstance(t.accum, FixedFormat)
    assert MacSpec("fp16", "fp32", out="bf16").out_format.name == "bf16"
    # overflow per stage: the spec's mode where it applies, else the format's default
    w = MacSpec("int8", "int16", product="fp16", overflow="wrap")
    assert w.overflow_for(w.accum) == "wrap" and w.overflow_for(w.product) == "ieee"
    i = MacSpec("fp16", "fp16", product="int8", overflow="ieee")
    assert i.overflow_for(i.product) == "saturate" and i.overflow_for(i.accum) == "ieee"
    assert MacSpec("fp16", "bf16").overflow_for(FloatFormat(2, 3, specials="none")) == "saturate"


def test_spec_equality_and_with():
    assert MacSpec("fp16", "fp32") == MacSpec("float16", "float32")
    s = MacSpec("fp16", "fp32").with_(order="chunked", chunk=8)
    assert (s.order, s.chunk) == ("chunked", 8) and "chunked(8)" in s.name
    with raises("chunk"):
        s.with_(order="pairwise")  # the chunk stays: re-validated


def test_presets():
    for name, spec in PRESETS.items():
        assert as_spec(name) is spec and MacSpec.preset(name) is spec and spec.name == name
        assert precision_bits(spec.a) + precision_bits(spec.b) <= 53
    assert PRESETS["int8_int32"].overflow == "wrap" and PRESETS["int8_int32"].accum.bits == 32
    assert PRESETS["fp32"].product.name == "fp32" and PRESETS["fp32_fma"].fma
    assert PRESETS["bf16_fp32"].fma and PRESETS["fp16_fp16"].product.name == "fp16"


@pytest.mark.parametrize("kwargs,fragments", [
    (dict(a="fp16", accum="fp32", fma=True, product="bf16"), ["fma=True", "bf16"]),
    (dict(a="fp16", accum="fp32", chunk=4), ["chunk=4", "order='chunked'", "'sequential'"]),
    (dict(a="fp16", accum="fp32", order="pairwise", chunk=2), ["chunk=2", "'pairwise'"]),
    (dict(a="fp16", accum="fp32", order="chunked"), ["order='chunked'", "positive int", "None"]),
    (dict(a="fp16", accum="fp32", order="chunked", chunk=0), ["positive int", "0"]),
    (dict(a="fp16", accum="fp32", order="chunked", chunk=2.0), ["positive int", "2.0"]),
    (dict(a="fp16", accum="fp32", order="chunked", chunk=True), ["positive int", "True"]),
    (dict(a="fp16", accum="fp32", order="tree"), ["'tree'", "sequential", "pairwise", "chunked"]),
    (dict(a="fp64", accum="fp64"), ["fp64", "53 + 53 = 106", "exact"]),
    (dict(a="fp32", b="fp64", accum="fp64"), ["fp32", "fp64", "24 + 53 = 77"]),
    (dict(a="int32", b="fp32", accum="fp64"), ["int32", "31 + 24 = 55"]),
    (dict(a="fp16", accum="fp16", overflow="wrap"), ["overflow='wrap'", "fp16"]),
    (dict(a="int8", accum="int32", overflow="ieee"), ["overflow='ieee'", "int32"]),
    (dict(a="int8", accum="int32", overflow="clip"), ["'clip'", "saturate", "wrap", "ieee"]),
    (dict(a="fp16", accum="fp32", rounding="even"), ["'even'", "nearest", "stochastic"]),
    (dict(a="fp16", accum="fp32", product_rounding="ties"), ["'ties'", "nearest"]),
    (dict(a="fp16", accum="fp32", accum_rounding="rtz"), ["'rtz'", "toward_zero"]),
    (dict(a="fp16", accum="fp32", rand_bits=0), ["rand_bits", "0", "1..32"]),
    (dict(a="fp16", accum="fp32", rand_bits=33), ["rand_bits", "33"]),
    (dict(a="fp16", accum="fp32", rand_bits=True), ["rand_bits", "True"]),
    (dict(a="fp16", accum="mxfp8_e4m3"), ["accum=mxfp8_e4m3", "operand formats only"]),
    (dict(a="fp16", accum="fp32", product="mxint8"), ["product=mxint8"]),
    (dict(a="fp16", accum="fp32", out="mxfp4_e2m1"), ["out=mxfp4_e2m1"]),
    (dict(a="fp7", accum="fp32"), ["unknown format 'fp7'", "int<N>", "e<E>m<M>"]),
    (dict(a="fp16", accum="int40"), ["int40", "2..32"]),
    (dict(a="fp16", accum="e12m3"), ["e12m3", "exponent bits"]),
    (dict(a=3.5, accum="fp32"), ["3.5", "format"]),
])
def test_spec_errors(kwargs, fragments):
    with raises(*fragments):
        MacSpec(**kwargs)


def test_preset_errors(impl):
    with raises("unknown MAC preset 'int9_int32'", "int8_int32", "fp32"):
        MacSpec.preset("int9_int32")
    with raises("'bf16_bf16'", "valid", "int8_int32"):
        impl[0](np.ones((2, 2)), np.ones((2, 2)), "bf16_bf16")
    with raises("42", "MacSpec", "preset"):
        impl[1](np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1)), 42)
    with raises("'fp16'", "preset"):  # a format name is not a MAC unit
        impl[2](np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 1)), "fp16")


# ------------------------------------------------------------------------------------------------
# bad input to the kernels
# ------------------------------------------------------------------------------------------------

def test_matmul_shape_errors(impl):
    matmul = impl[0]
    with raises("(3, 4)", "(5, 2)"):
        matmul(np.ones((3, 4)), np.ones((5, 2)), "fp32")
    with raises("(3,)", "2-D"):
        matmul(np.ones(3), np.ones((3, 2)), "fp32")
    with raises("(3, 2, 1)", "2-D"):
        matmul(np.ones((4, 3)), np.ones((3, 2, 1)), "fp32")
    with raises("()", "2-D"):
        matmul(np.float32(2), np.ones((1, 1)), "fp32")
    with raises("(0, 3)", "(2, 0)"):
        matmul(np.ones((0, 3)), np.ones((2, 0)), "fp32")


@pytest.mark.parametrize("which", [1, 2], ids=["conv2d", "depthwise"])
def test_conv_shape_errors(impl, which):
    conv = impl[which]
    x, w = np.ones((1, 5, 5, 3)), np.ones((3, 3, 3, 2))
    with raises("(5, 5, 3)", "4-D"):
        conv(np.ones((5, 5, 3)), w, "fp32")
    with raises("(3, 3, 3)", "4-D"):
        conv(x, np.ones((3, 3, 3)), "fp32")
    with raises("(1, 5, 5, 3)", "(3, 3, 4, 2)", "3", "4"):
        conv(x, np.ones((3, 3, 4, 2)), "fp32")


@pytest.mark.parametrize("which", [1, 2], ids=["conv2d", "depthwise"])
@pytest.mark.parametrize("stride", [0, -1, (1,), (1, 2, 3), 1.5, (2, 0), True, "2", "22", (1.5, 1), None],
                         ids=repr)
def test_bad_stride(impl, which, stride):
    with raises("stride", repr(stride)):
        impl[which](np.ones((1, 5, 5, 2)), np.ones((2, 2, 2, 1)), "fp32", stride=stride)


@pytest.mark.parametrize("which", [1, 2], ids=["conv2d", "depthwise"])
@pytest.mark.parametrize("padding", ["full", "SAME", "", None, 1], ids=repr)
def test_bad_padding(impl, which, padding):
    with raises("padding", repr(padding), "'valid'", "'same'"):
        impl[which](np.ones((1, 5, 5, 2)), np.ones((2, 2, 2, 1)), "fp32", padding=padding)


def test_good_strides_are_equivalent(impl):
    """stride=2 == (2, 2); a list or numpy pair is a pair."""
    x = np.arange(2 * 7 * 6 * 2, dtype=np.float32).reshape(2, 7, 6, 2) / 50
    w = np.linspace(-1, 1, 2 * 3 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 3)
    r = impl[1](x, w, "fp32", stride=2, padding="same")
    for s in [(2, 2), [2, 2], np.array([2, 2]), (np.int64(2), np.int64(2))]:
        assert np.array_equal(impl[1](x, w, "fp32", stride=s, padding="same"), r)


@pytest.mark.parametrize("offset", [-1, 1.0, "3", True, None], ids=repr)
def test_bad_offset(impl, offset):
    with raises("offset", repr(offset)):
        impl[0](np.ones((2, 2)), np.ones((2, 2)), MacSpec("fp16", "fp16", rounding="stochastic"), seed=1,
                offset=offset)


def test_bad_seed(impl):
    with raises("seed", "1.5"):
        impl[0](np.ones((2, 2)), np.ones((2, 2)), MacSpec("fp16", "fp16", rounding="stochastic"), seed=1.5)


def test_nan_into_integer_operands(impl):
    a = np.ones((2, 3))
    a[1, 2] = np.nan
    with raises("nan", "int8"):
        impl[0](a, np.ones((3, 2)), "int8_int32")


def test_valid_window_larger_than_input_is_refused(impl):
    """'valid' with a kernel larger than the input has no output positions: a clear error (as TensorFlow
    refuses it), not an empty array; 'same' pads and gives the input's size."""
    with pytest.raises(ValueError, match=r"3x3 kernel is larger than the 2x3 input with padding='valid'"):
        impl[1](np.ones((2, 2, 3, 1)), np.ones((3, 3, 1, 4)), "fp32")
    with pytest.raises(ValueError, match=r"3x3 kernel is larger than the 3x2 input with padding='valid'"):
        impl[2](np.ones((2, 3, 2, 2)), np.ones((3, 3, 2, 2)), "int8_int32", padding="valid")
    assert impl[1](np.ones((2, 2, 3, 1)), np.ones((3, 3, 1, 4)), "fp32", padding="same").shape == (2, 2, 3, 4)
