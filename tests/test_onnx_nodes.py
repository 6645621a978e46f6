"""Single ONNX nodes and small graphs built with onnx.helper, against onnxruntime (graph optimizations off):
the cases a review found wrong or unguarded -- pooling with auto_pad, Shape with start, Softmax before
opset 13, a (1, N) Gemm bias, batch norm on (N, C, L), unequal-rank broadcasting, symbolic sizes,
duplicate node names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

import onnxruntime as ort
from hwsim.frontends.onnx import load_onnx
from hwsim.graph.runner import forward, resolve_specs


def _model(nodes, in_shape, out_rank, inits=(), opset=17):
    arrs = [nh.from_array(np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v), k)
            for k, v in inits]
    out_shape = [f"d{i}" for i in range(out_rank)]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TP.FLOAT, in_shape)],
                      [oh.make_tensor_value_info("y", TP.FLOAT, out_shape)], arrs)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _check(m, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    net = load_onnx(m, name="t")
    y = forward(net, x, resolve_specs(net, "fp32"))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    return net


X = np.random.default_rng(0).normal(size=(2, 3, 7, 7)).astype(np.float32)


@pytest.mark.parametrize("op,kernel,stride", [("MaxPool", 3, 2), ("AveragePool", 2, 1)])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_auto_pad(op, kernel, stride, auto_pad):
    node = oh.make_node(op, ["x"], ["y"], kernel_shape=[kernel, kernel], strides=[stride, stride], auto_pad=auto_pad)
    _check(_model([node], [None, 3, 7, 7], 4), X)


def test_shape_with_start_feeds_a_reshape():
    nodes = [oh.make_node("Shape", ["x"], ["s"], start=2), oh.make_node("Concat", ["one", "c", "s"], ["t"], axis=0),
             oh.make_node("Reshape", ["x", "t"], ["y"])]
    m = _model(nodes, [1, 3, 7, 7], 3, inits=[("one", np.array([1], np.int64)), ("c", np.array([3], np.int64))])
    _check(m, X[:1])


def test_softmax_before_opset_13():
    x = np.random.default_rng(1).normal(size=(2, 5)).astype(np.float32)
    _check(_model([oh.make_node("Softmax", ["x"], ["y"])], [None, 5], 2, opset=11), x)  # axis 1 = last
    m = _model([oh.make_node("Softmax", ["x"], ["y"], axis=1)], [None, 4, 7, 7], 4, opset=11)
    with pytest.raises(ValueError, match="flattened axes"):  # one softmax over C*H*W: not supported
        load_onnx(m, name="t")


def test_gemm_bias_of_shape_1_n():
    w = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
    node = oh.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)
    m = _model([node], [None, 5], 2, inits=[("w", w), ("c", np.arange(4, dtype=np.float32).reshape(1, 4))])
    _check(m, np.random.default_rng(3).normal(size=(3, 5)).astype(np.float32))


def test_batch_norm_on_n_c_l():
    rng = np.random.default_rng(4)
    node = oh.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])
    inits = [("s", rng.uniform(0.5, 2, 5)), ("b", rng.normal(size=5)), ("m", rng.normal(size=5)), ("v", rng.uniform(0.5, 2, 5))]
    _check(_model([node], [None, 5, 6], 3, inits=inits), rng.normal(size=(2, 5, 6)).astype(np.float32))


def test_unequal_ranks_and_unguarded_inputs_get_clear_errors():
    nodes = [oh.make_node("ReduceMean", ["x"], ["r"], axes=[2, 3], keepdims=0), oh.make_node("Mul", ["x", "r"], ["y"])]
    with pytest.raises(ValueError, match="ranks 4 and 2"):
        load_onnx(_model(nodes, [1, 7, 7, 7], 4), name="t")
    with pytest.raises(ValueError, match="ReduceMean over all axes"):
        load_onnx(_model([oh.make_node("ReduceMean", ["x"], ["y"])], [1, 3, 7, 7], 4, opset=18), name="t")
    conv = oh.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    m = _model([conv], ["N", 3, "H", "W"], 4, inits=[("w", np.ones((4, 3, 3, 3)))])
    with pytest.raises(ValueError, match=r"symbolic size\(s\) on axes \[2, 3\]"):
        load_onnx(m, name="t")


def test_duplicate_and_reserved_node_names():
    nodes = [oh.make_node("Relu", ["x"], ["a"], name="input"), oh.make_node("Relu", ["a"], ["b"], name="r"),
             oh.make_node("Sigmoid", ["b"], ["y"], name="r")]
    net = load_onnx(_model(nodes, [None, 3, 7, 7], 4), name="t")  # onnxruntime refuses duplicate names
    assert len({l.name for l in net.layers}) == len(net.layers)
    np.testing.assert_allclose(forward(net, X, resolve_specs(net, "fp32")), 1 / (1 + np.exp(-np.maximum(X, 0))),
                               rtol=1e-6)


def test_constant_along_height_is_refused_by_tflite_float(tmp_path):
    import keras

    from hwsim.frontends import tflite

    inp = keras.Input((4, 4, 4))
    k = keras.ops.reshape(keras.ops.arange(4, dtype="float32"), (1, 4, 1, 1))
    out = inp * k + 1.0
    path = tflite.convert_keras_float(keras.Model(inp, out), tmp_path / "h.tflite")
    with pytest.raises(ValueError, match="vectors along the last axis only"):
        tflite.load_tflite(path)
