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
import torch
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


# ------------------------------------------------------- ops torch writes, against onnxruntime and torch
class _Up(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.conv, self.kw = torch.nn.Conv2d(3, 4, 3, padding=1), kw

    def forward(self, x):
        return torch.nn.functional.interpolate(self.conv(x), **self.kw)


TORCH_CASES = {
    "conv_transpose_s2_p1_op1": lambda: torch.nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1),
    "conv_transpose_k4_s2": lambda: torch.nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1),
    "conv_transpose_k2_s3_p0": lambda: torch.nn.ConvTranspose2d(3, 2, (2, 3), stride=(3, 2)),
    "upsample_nearest_x2": lambda: _Up(scale_factor=2, mode="nearest"),
    # 8 -> 14 and 8 -> 11: sizes where dividing by onnxruntime's float32 factor and multiplying by in/out
    # (TensorFlow's rule) pick different source pixels
    "resize_nearest_odd_sizes": lambda: _Up(size=(14, 11), mode="nearest"),
    "resize_bilinear_odd_sizes": lambda: _Up(size=(14, 11), mode="bilinear", align_corners=False),
    "upsample_bilinear_x2": lambda: _Up(scale_factor=2, mode="bilinear", align_corners=False),
    "resize_bilinear_align_corners": lambda: _Up(size=(11, 5), mode="bilinear", align_corners=True),
    "resize_bilinear_down": lambda: _Up(size=(4, 3), mode="bilinear", align_corners=False),
    "leaky_relu": lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LeakyReLU(0.2)),
    "max_pool_ceil": lambda: torch.nn.MaxPool2d(3, 2, ceil_mode=True),  # 8 -> 4 (floor: 3)
    "max_pool_ceil_padded": lambda: torch.nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),  # 8 -> 5 (floor: 4)
    # 6 -> 2: ceil would give 3, but the third window would start in the trailing padding (floor: 2 too)
    "max_pool_ceil_last_window_dropped": lambda: torch.nn.MaxPool2d(3, 4, padding=1, ceil_mode=True),
    "avg_pool_ceil": lambda: torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
}
SIZE = {"max_pool_ceil_last_window_dropped": 6}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_torch_ops_match_onnxruntime_and_torch(tmp_path, case):
    from _torchnets import randomize

    model = randomize(TORCH_CASES[case]())
    hw = SIZE.get(case, 8)
    x = np.random.default_rng(5).normal(size=(2, 3, hw, hw)).astype(np.float32)
    path = tmp_path / f"{case}.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    want_op = {"conv": "ConvTranspose", "upsa": "Resize", "resi": "Resize", "leak": "LeakyRelu", "max_": "MaxPool",
               "avg_": "AveragePool"}[case[:4]]
    assert want_op in ops
    net = load_onnx(str(path))
    y = forward(net, x, resolve_specs(net, "fp32"))
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        tor = model(torch.from_numpy(x)).numpy()
    for other in (ref, tor):
        assert y.shape == other.shape
        np.testing.assert_allclose(y, other, rtol=1e-5, atol=1e-5)


def test_resize_nearest_14_to_16_from_sizes():
    node = oh.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode="floor")
    x = np.random.default_rng(9).normal(size=(1, 2, 14, 14)).astype(np.float32)
    _check(_model([node], [None, 2, 14, 14], 4, inits=[("sz", np.array([1, 2, 16, 16], np.int64))]), x)


def test_conv_transpose_output_padding_not_below_stride_is_refused():
    w = np.ones((3, 2, 3, 3), np.float32)
    node = oh.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_padding=[2, 0])
    with pytest.raises(ValueError, match=r"output_padding=\[2, 0\] \(each must be >= 0 and < its stride \[2, 2\]\)"):
        load_onnx(_model([node], [None, 3, 7, 7], 4, inits=[("w", w)]), name="t")


def test_resize_modes_outside_the_supported_set_are_named():
    node = oh.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")
    m = _model([node], [None, 3, 7, 7], 4, inits=[("s", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(ValueError, match="mode='cubic'.*supported: linear"):
        load_onnx(m, name="t")


@pytest.mark.parametrize("attrs", [dict(auto_pad="SAME_UPPER"), dict(auto_pad="SAME_LOWER"),
                                   dict(output_shape=[14, 13]), dict(pads=[1, 0, 2, 1], output_padding=[1, 0])])
def test_conv_transpose_padding_attributes(attrs):
    w = np.random.default_rng(6).normal(size=(3, 2, 3, 3)).astype(np.float32)
    node = oh.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], **attrs)
    _check(_model([node], [None, 3, 7, 7], 4, inits=[("w", w)]), X)
