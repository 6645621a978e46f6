"""Two-level accumulation (``MacSpec(order="chunked", inner=...)``): partial sums of ``chunk`` products in a
narrower ``inner`` accumulator with its own rounding and overflow. The fast kernels equal the literal
reference; the reference equals a hand computation; the ``ort_u8s8_pairs`` preset equals onnxruntime's
default session on a CPU without AVX-VNNI (where its u8s8 GEMM saturates product pairs to int16)."""

from __future__ import annotations

import numpy as np
import pytest

import hwsim
import kernels
from kernels import reference as R
from kernels.mac import MacSpec, as_spec

SPECS = {
    "ort_u8s8_pairs": as_spec("ort_u8s8_pairs"),
    "int8_pairs_int12_wrap": MacSpec("int8", "int32", order="chunked", chunk=4, inner="int12", inner_overflow="wrap",
                                     overflow="wrap"),
    "fp8_fp16_inner_fp32": MacSpec("fp8_e4m3", "fp32", order="chunked", chunk=8, inner="fp16"),
    "fp8_stochastic_inner": MacSpec("fp8_e4m3", "fp32", order="chunked", chunk=4, inner="bf16",
                                    inner_rounding="stochastic"),
    "fixed_inner_saturate": MacSpec("fixed8.4", "fixed24.8", order="chunked", chunk=3, inner="fixed12.8",
                                    inner_overflow="saturate"),
}


def _operands(spec, rng, shape):
    if spec.a.name == "uint8":
        return rng.integers(0, 256, shape).astype(np.float32)
    if spec.a.name == "int8":
        return rng.integers(-128, 128, shape).astype(np.float32)
    return (rng.normal(size=shape) * 3).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_fast_kernels_equal_reference(name):
    spec = SPECS[name]
    rng = np.random.default_rng(0)
    a, w = _operands(spec, rng, (33, 47)), _operands(spec.with_(a=spec.b), rng, (47, 6))
    np.testing.assert_array_equal(kernels.matmul(a, w, spec, seed=5), R.ref_matmul(a, w, spec, seed=5))
    x, k = _operands(spec, rng, (2, 7, 6, 5)), _operands(spec.with_(a=spec.b), rng, (3, 3, 5, 4))
    np.testing.assert_array_equal(kernels.conv2d(x, k, spec, seed=5, padding="same"),
                                  R.ref_conv2d(x, k, spec, seed=5, padding="same"))
    kd = _operands(spec.with_(a=spec.b), rng, (3, 3, 5, 2))
    np.testing.assert_array_equal(kernels.depthwise_conv2d(x, kd, spec, seed=5),
                                  R.ref_depthwise_conv2d(x, kd, spec, seed=5))


def test_reference_is_the_two_level_sum():
    """u8 x s8 pairs saturated to int16, then an exact int32 sum (an odd K leaves a pair of one term)."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (50, 41)).astype(np.float32)
    w = rng.integers(-128, 128, (41, 7)).astype(np.float32)
    p = a[:, :, None].astype(np.int64) * w[None].astype(np.int64)
    p = np.concatenate([p, np.zeros_like(p[:, :1])], axis=1)
    pairs = p[:, 0::2] + p[:, 1::2]
    want = np.clip(pairs, -32768, 32767).sum(axis=1)
    assert np.sum(want != pairs.sum(axis=1)) > 50  # the data saturates many pairs
    np.testing.assert_array_equal(R.ref_matmul(a, w, SPECS["ort_u8s8_pairs"]), want)


def test_inner_spec_validation():
    with pytest.raises(ValueError, match="inner=int16 is the accumulator of the partial sums of order='chunked'"):
        MacSpec("int8", "int32", inner="int16")
    with pytest.raises(ValueError, match="inner_rounding / inner_overflow need an inner format"):
        MacSpec("int8", "int32", order="chunked", chunk=2, inner_overflow="saturate")
    with pytest.raises(ValueError, match="inner_overflow='wrap' needs an integer/fixed inner format, not fp16"):
        MacSpec("fp8_e4m3", "fp32", order="chunked", chunk=2, inner="fp16", inner_overflow="wrap")
    with pytest.raises(ValueError, match="unknown inner_overflow 'clamp'"):
        MacSpec("int8", "int32", order="chunked", chunk=2, inner="int16", inner_overflow="clamp")
    assert as_spec("ort_u8s8_pairs").name == "ort_u8s8_pairs"
    assert "inner=int16 saturate" in MacSpec("uint8", "int32", b="int8", order="chunked", chunk=2, inner="int16",
                                             inner_overflow="saturate").name


def test_ort_pair_preset_equals_onnxruntime_default_session(tmp_path):
    """A QLinearMatMul (u8 activations x s8 weights) whose products saturate pairs: onnxruntime's default
    session (no ``session.x64quantprecision``) saturates them to int16 on x86 without VNNI (MLAS's
    ``vpmaddubsw`` kernels), which the ``ort_u8s8_pairs`` preset states, and ``ort_cpu="avx2"`` (the preset on
    the GEMM layers) and ``mac="ort_u8s8_pairs"`` reproduce. On a CPU with VNNI, the oracle runs in a
    subprocess whose CPUID hides the VNNI (``_cpumask``); the default session here must add exact products."""
    import _cpumask
    import onnxruntime as ort
    from onnx import TensorProto as TP
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    from hwsim.frontends.onnx import load_onnx

    rng = np.random.default_rng(2)
    K, N = 96, 16
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    inits = [nh.from_array(v, k) for k, v in (("sa", np.float32(0.02)), ("za", np.uint8(0)), ("w", w),
                                             ("sw", np.float32(0.01)), ("zw", np.int8(0)), ("sy", np.float32(2.0)),
                                             ("zy", np.uint8(128)))]
    node = oh.make_node("QLinearMatMul", ["a", "sa", "za", "w", "sw", "zw", "sy", "zy"], ["y"])
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("a", TP.UINT8, [None, K])],
                      [oh.make_tensor_value_info("y", TP.UINT8, [None, N])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "qmm.onnx"
    path.write_bytes(m.SerializeToString())
    a = rng.integers(0, 256, (400, K)).astype(np.uint8)
    x = a.astype(np.float32)
    exact = hwsim.run(load_onnx(m, name="qmm"), x)
    pairs = hwsim.run(load_onnx(m, name="qmm", ort_cpu="avx2"), x)
    assert np.sum(exact != pairs) > 100  # the pair saturation changes many outputs of this layer
    np.testing.assert_array_equal(hwsim.run(load_onnx(m, name="qmm", mac="ort_u8s8_pairs"), x), pairs)
    if _cpumask.vnni():
        here = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
        np.testing.assert_array_equal(exact, here.astype(np.float32))
    ref = _cpumask.ort_default_session_without_vnni(tmp_path, path, a)
    np.testing.assert_array_equal(pairs, ref.astype(np.float32))
