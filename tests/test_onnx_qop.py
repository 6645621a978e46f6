"""onnxruntime QOperator models (QLinearConv, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm) against
onnxruntime with ``session.x64quantprecision = 1``: logits and every intermediate tensor bit-identical
on 500 CIFAR-10 test images; QLinearAdd on 800k random elements per type."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from _torchnets import MobileNetV2Like, MobileNetV3Like, ResNetLike, export, randomize
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

import hwsim
import onnxruntime as ort
from hwsim.frontends.onnx import load_onnx


def _session(model_or_path):
    so = ort.SessionOptions()
    so.add_session_config_entry("session.x64quantprecision", "1")
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _all_values(net, x):
    """Every IR layer's output for ``x`` (as hwsim.run computes it, one batch, no seed)."""
    from hwsim.graph.runner import resolve_specs

    specs = resolve_specs(net, "fp32")
    vals = {"input": x}
    for layer in net.layers:
        ins = [vals[s] for s in layer.inputs]
        vals[layer.name] = (layer.quant.run(layer, ins) if layer.quant is not None
                            else layer.run(ins, specs.get(layer.name)))
    return vals


@pytest.mark.parametrize("cls", [ResNetLike, MobileNetV2Like, MobileNetV3Like],
                         ids=["resnet", "mobilenet_v2", "mobilenet_v3"])
def test_qoperator_model_is_bit_identical(tmp_path, cls):
    from _torchnets import quantize_onnx
    from onnxruntime.quantization import QuantType

    from hwsim import sweep_exec as X

    path = export(randomize(cls()), tmp_path / "m.onnx")
    qpath = quantize_onnx(path, tmp_path / "m_qop.onnx", "QOperator", per_channel=False,
                          activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    images, _ = X.load_test_images(None, 500)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    net = hwsim.load_model(qpath)
    assert {"quantize_linear", "dequantize_linear"} <= {l.kind for l in net.layers}
    np.testing.assert_array_equal(hwsim.run(net, x), _session(qpath).run(None, {"x": x})[0])
    # every integer tensor of the QLinear nodes, on 50 images: expose them as outputs of the ORT graph
    model = onnx.load(qpath)
    qnodes = [n for n in model.graph.node if n.op_type.startswith(("QLinear", "QGemm"))]
    for n in qnodes:
        model.graph.output.append(oh.make_tensor_value_info(n.output[0], TP.UINT8, None))
    outs = _session(model).run([n.output[0] for n in qnodes], {"x": x[:50]})
    vals = _all_values(net, x[:50])
    for n, ref in zip(qnodes, outs):
        mine = vals[n.name]
        if mine.ndim == 4:
            mine = mine.transpose(0, 3, 1, 2)  # the IR holds NHWC
        np.testing.assert_array_equal(mine.reshape(ref.shape), ref.astype(np.float32), err_msg=n.name)


@pytest.mark.parametrize("cls", [ResNetLike, MobileNetV2Like, MobileNetV3Like],
                         ids=["resnet", "mobilenet_v2", "mobilenet_v3"])
def test_qoperator_model_on_x86_without_vnni(tmp_path, cls):
    """``ort_cpu="avx2"``: onnxruntime's default session (no ``x64quantprecision``) on an x86 CPU without VNNI,
    500 images bit-identical. Its GEMM saturates product pairs to int16, its depthwise kernel is exact (the
    mobilenets' depthwise layers tell the two apart). Where this CPU has VNNI the oracle runs with it hidden
    (``_cpumask``)."""
    import _cpumask
    from _torchnets import quantize_onnx
    from onnxruntime.quantization import QuantType

    from hwsim import sweep_exec as X

    path = export(randomize(cls()), tmp_path / "m.onnx")
    qpath = quantize_onnx(path, tmp_path / "m_qop.onnx", "QOperator", per_channel=False,
                          activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    images, _ = X.load_test_images(None, 500)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    ref = _cpumask.ort_default_session_without_vnni(tmp_path, qpath, x)
    exact = hwsim.run(hwsim.load_model(qpath), x)
    assert np.sum(exact != ref) > 100  # the saturation shows in the logits: the comparison below can fail
    np.testing.assert_array_equal(hwsim.run(hwsim.load_model(qpath, ort_cpu="avx2"), x), ref)


def _qconv(cin, cout, group, rng, pads=0):
    w = (rng.integers(60, 128, (cout, cin // group, 3, 3)) * rng.choice([-1, 1], (cout, cin // group, 3, 3))
         ).astype(np.int8)
    inits = [nh.from_array(np.array(v), k) for k, v in (("xs", np.float32(0.02)), ("xz", np.uint8(0)),
                                                         ("ws", np.float32(0.01)), ("wz", np.int8(0)),
                                                         ("ys", np.float32(0.5)), ("yz", np.uint8(128)))]
    inits.append(nh.from_array(w, "w"))
    node = oh.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], group=group,
                        kernel_shape=[3, 3], pads=[pads] * 4)
    out = 6 - 2 + 2 * pads
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TP.UINT8, [None, cin, 6, 6])],
                      [oh.make_tensor_value_info("y", TP.UINT8, [None, cout, out, out])], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("cin,cout,group,pads", [(1, 4, 1, 0), (1, 1, 1, 1), (3, 8, 1, 1), (5, 4, 1, 0),
                                                 (4, 4, 4, 1)])
def test_single_convolutions_on_x86_without_vnni(tmp_path, cin, cout, group, pads):
    """``ort_cpu="avx2"`` on single QLinearConvs whose pairs saturate (large same-signed products): one input
    channel, odd channel counts (pairs across kernel taps), padding; a 1x1-channel convolution and a depthwise
    one, which onnxruntime sends to its exact depthwise kernel (a review found the 1-channel case pair-saturated
    here)."""
    import _cpumask

    rng = np.random.default_rng(cin * 100 + cout * 10 + group)
    m = _qconv(cin, cout, group, rng, pads)
    path = tmp_path / "c.onnx"
    path.write_bytes(m.SerializeToString())
    x = rng.integers(200, 256, (6, cin, 6, 6)).astype(np.uint8)
    ref = _cpumask.ort_default_session_without_vnni(tmp_path, path, x).astype(np.float32)
    got = hwsim.run(load_onnx(m, name="c", ort_cpu="avx2"), x.astype(np.float32))
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    exact = hwsim.run(load_onnx(m, name="c"), x.astype(np.float32))
    assert (np.sum(exact != got) > 0) == (cin // group > 1 or cout // group > 1)  # saturation shows where it applies


def test_depthwise_multiplier_is_refused_on_x86_without_vnni():
    m = _qconv(2, 4, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="ort_cpu='avx2' on a depthwise QLinearConv with channel multiplier 2"):
        load_onnx(m, name="c", ort_cpu="avx2")
    load_onnx(m, name="c")  # the exact arithmetic takes it


def test_qoperator_mac_options_are_checked(tmp_path):
    """``mac`` / ``ort_cpu``: an unknown value, both at once, a model without QOperator MAC layers, a spec whose
    integer operands cannot hold the codes, and int8 activations under ``ort_cpu="avx2"`` are refused by name."""
    from kernels.mac import MacSpec

    def qmatmul(xtype, zero):
        inits = [nh.from_array(np.array(v), k) for k, v in (("s", np.float32(0.1)), ("z", zero),
                                                             ("zw", np.int8(0)))]
        inits.append(nh.from_array(np.ones((4, 3), np.int8), "w"))
        node = oh.make_node("QLinearMatMul", ["x", "s", "z", "w", "s", "zw", "s", "z"], ["y"])
        g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", xtype, [None, 4])],
                          [oh.make_tensor_value_info("y", xtype, [None, 3])], inits)
        return oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])

    u8, s8 = qmatmul(TP.UINT8, np.uint8(128)), qmatmul(TP.INT8, np.int8(0))
    with pytest.raises(ValueError, match="ort_cpu='sse'.*'exact', 'avx2'"):
        load_onnx(u8, name="t", ort_cpu="sse")
    with pytest.raises(ValueError, match="give one"):
        load_onnx(u8, name="t", mac="int8_int32", ort_cpu="avx2")
    with pytest.raises(ValueError, match="ort_cpu='avx2' with int8 activations"):
        load_onnx(s8, name="t", ort_cpu="avx2")
    with pytest.raises(ValueError, match="activations format int8 cannot hold this layer's uint8 codes"):
        load_onnx(u8, name="t", mac="int8_int32")
    with pytest.raises(ValueError, match="activations format uint8 cannot hold this layer's int8 codes"):
        load_onnx(s8, name="t", mac="ort_u8s8_pairs")
    with pytest.raises(ValueError, match="weights format uint8 cannot hold this layer's int8 codes"):
        load_onnx(u8, name="t", mac=MacSpec("uint8", "int32"))
    # a wider integer spec holds the codes and runs: the sums are exact, so the result is unchanged
    x = np.arange(8, dtype=np.float32).reshape(2, 4) * 30
    np.testing.assert_array_equal(hwsim.run(load_onnx(u8, name="t", mac=MacSpec("int16", "int32", b="int16")), x),
                                  hwsim.run(load_onnx(u8, name="t"), x))
    float_model = oh.make_model(oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g",
                                              [oh.make_tensor_value_info("x", TP.FLOAT, [None, 4])],
                                              [oh.make_tensor_value_info("y", TP.FLOAT, [None, 4])]),
                                opset_imports=[oh.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="mac= applies to QOperator.*has none.*hwsim.run"):
        load_onnx(float_model, name="t", mac="int8_int32")
    with pytest.raises(ValueError, match="ort_cpu= applies"):
        load_onnx(float_model, name="t", ort_cpu="avx2")


@pytest.mark.parametrize("dtype,tp", [(np.uint8, TP.UINT8), (np.int8, TP.INT8)], ids=["uint8", "int8"])
def test_qlinear_add_800k(dtype, tp):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    n = 800_000
    for trial in range(3):
        sa, sb, sc = (np.float32(v) for v in rng.uniform(0.01, 0.2, 3))
        za, zb, zc = (dtype(v) for v in rng.integers(info.min, info.max, 3))
        node = oh.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain="com.microsoft")
        inits = [nh.from_array(np.array(v), k) for k, v in
                 (("sa", sa), ("za", za), ("sb", sb), ("zb", zb), ("sc", sc), ("zc", zc))]
        g = oh.make_graph([node], "g", [oh.make_tensor_value_info("a", tp, [None, n]), oh.make_tensor_value_info("b", tp, [None, n])],
                          [oh.make_tensor_value_info("c", tp, [None, n])], inits)
        # a two-input graph: hwsim's networks take one input, so the record the converter builds runs directly
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
        m.ir_version = 8
        a = rng.integers(info.min, info.max + 1, (1, n)).astype(dtype)
        b = rng.integers(info.min, info.max + 1, (1, n)).astype(dtype)
        ref = _session(m).run(None, {"a": a, "b": b})[0]
        from hwsim.frontends.onnx_qop import QLinearAddRecord

        rec = QLinearAddRecord.from_scales(sa, int(za), sb, int(zb), sc, int(zc), info.min, info.max)
        got = rec.run(None, [a.astype(np.float32), b.astype(np.float32)])
        np.testing.assert_array_equal(got, ref.astype(np.float32))


def test_unsupported_qoperator_node_is_named(tmp_path):
    node = oh.make_node("QLinearSoftmax", ["x", "s", "z", "s", "z"], ["y"], domain="com.microsoft")
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TP.UINT8, [None, 4])],
                      [oh.make_tensor_value_info("y", TP.UINT8, [None, 4])],
                      [nh.from_array(np.array(np.float32(0.1)), "s"), nh.from_array(np.array(np.uint8(128)), "z")])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ValueError, match="QLinearSoftmax.*com.microsoft.*QLinearAdd"):
        load_onnx(m, name="t")


@pytest.mark.parametrize("dtype,tp", [(np.uint8, TP.UINT8), (np.int8, TP.INT8)], ids=["uint8", "int8"])
@pytest.mark.parametrize("b_shape", [(1, 16, 50, 50), (1, 16, 1, 1)], ids=["same", "gate"])
def test_qlinear_mul_random(dtype, tp, b_shape):
    """QLinearMul on 40k elements per trial, same shapes and a broadcast gate, against onnxruntime."""
    from hwsim.frontends.onnx_qop import QLinearMulRecord

    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    a_shape = (1, 16, 50, 50)
    for trial in range(3):
        sa, sb = (np.float32(v) for v in rng.uniform(0.005, 0.2, 2))
        sc = np.float32(sa * sb * rng.uniform(40, 70))  # outputs span the range, the ends saturate
        mid = (int(info.min) + int(info.max)) // 2
        za, zb, zc = (dtype(mid + v) for v in rng.integers(-30, 30, 3))
        node = oh.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain="com.microsoft")
        inits = [nh.from_array(np.array(v), k) for k, v in
                 (("sa", sa), ("za", za), ("sb", sb), ("zb", zb), ("sc", sc), ("zc", zc))]
        g = oh.make_graph([node], "g", [oh.make_tensor_value_info("a", tp, a_shape), oh.make_tensor_value_info("b", tp, b_shape)],
                          [oh.make_tensor_value_info("c", tp, a_shape)], inits)
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
        m.ir_version = 8
        a = rng.integers(info.min, info.max + 1, a_shape).astype(dtype)
        b = rng.integers(info.min, info.max + 1, b_shape).astype(dtype)
        ref = _session(m).run(None, {"a": a, "b": b})[0]
        ratio = float(np.float32(np.float32(sa * sb) / sc))
        rec = QLinearMulRecord(ratio, int(za), int(zb), int(zc), info.min, info.max)
        got = rec.run(None, [a.astype(np.float32), b.astype(np.float32)])
        assert 0 < np.mean(got == info.max) + np.mean(got == info.min) < 0.5  # saturation is exercised, not dominant
        np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("op", ["QLinearSigmoid", "QLinearLeakyRelu"])
@pytest.mark.parametrize("dtype,tp", [(np.uint8, TP.UINT8), (np.int8, TP.INT8)], ids=["uint8", "int8"])
def test_qlinear_lookup_ops_every_code(op, dtype, tp):
    """Every input code, for random and edge quantizations (tiny and large scales, zero points at the ends)."""
    from hwsim.frontends.onnx_qop import QLinearLookupRecord

    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    codes = np.arange(info.min, info.max + 1).astype(dtype)[None]
    cases = [(rng.uniform(0.001, 0.2), rng.integers(info.min, info.max + 1), rng.uniform(0.001, 0.02),
              rng.integers(info.min, info.max + 1)) for _ in range(20)]
    cases += [(1e-4, info.min, 1 / 256, info.min), (0.5, info.max, 0.004, 0), (0.07, 0, 1e-3, info.max)]
    for sx, zx, sy, zy in cases:
        attrs = {"alpha": 0.1} if op == "QLinearLeakyRelu" else {}
        node = oh.make_node(op, ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft", **attrs)
        inits = [nh.from_array(np.array(v), k) for k, v in (("sx", np.float32(sx)), ("zx", dtype(zx)),
                                                            ("sy", np.float32(sy)), ("zy", dtype(zy)))]
        g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", tp, [None, codes.size])],
                          [oh.make_tensor_value_info("y", tp, [None, codes.size])], inits)
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.microsoft", 1)])
        m.ir_version = 8
        ref = _session(m).run(None, {"x": codes})[0]
        net = load_onnx(m, name="t")
        (layer,) = [la for la in net.layers if isinstance(la.quant, QLinearLookupRecord)]
        got = layer.quant.run(layer, [codes.astype(np.float32)])
        np.testing.assert_array_equal(got, ref.astype(np.float32), err_msg=f"{op} {sx} {zx} {sy} {zy}")


class _SigmoidSE(torch.nn.Module):
    """Convolutions with a sigmoid squeeze-and-excite gate and a leaky ReLU (QLinearSigmoid, QLinearMul,
    QLinearLeakyRelu in the QOperator model)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc1, self.fc2 = torch.nn.Conv2d(8, 4, 1), torch.nn.Conv2d(4, 8, 1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.c1(x), 0.1)
        y = self.c2(x)
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(torch.nn.functional.adaptive_avg_pool2d(y, 1)))))
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y * g, 1), 1))


def test_qoperator_sigmoid_gate_model(tmp_path):
    from _torchnets import quantize_onnx
    from onnxruntime.quantization import QuantType

    from hwsim import sweep_exec as X

    path = export(randomize(_SigmoidSE()), tmp_path / "se.onnx")
    qpath = quantize_onnx(path, tmp_path / "se_qop.onnx", "QOperator", per_channel=False,
                          activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(qpath).graph.node}
    assert {"QLinearSigmoid", "QLinearLeakyRelu", "QLinearMul"} <= ops
    images, _ = X.load_test_images(None, 300)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_array_equal(hwsim.run(hwsim.load_model(qpath), x), _session(qpath).run(None, {"x": x})[0])


@pytest.mark.parametrize("out", [None, "fp16"])
def test_an_overflowed_float_accumulator_gives_the_top_output_code(out):
    """QLinearMac on an emulated fp16 accumulator (mac=): 16 taps of 127 * 127 = 258064 overflow fp16 to
    +inf, which reaches the requantizer as int32's maximum, so the output is the top code 127 (numpy's cast
    had made it int64's minimum: -128); -inf gives the bottom code."""
    from hwsim.frontends.onnx_qop import QLinearMac
    from hwsim.graph import ir
    from kernels import MacSpec

    k = np.full((16, 2), 127.0, dtype=np.float32)
    layer = ir.Dense("d", ("input",), kernel=k)
    spec = MacSpec("int8", "fp16") if out is None else MacSpec("int8", "int32", out=out)  # or an fp16 output
    rec = QLinearMac(x_zp=0, colsum=k.astype(np.int64).sum(0), bias=np.zeros(2, np.int64),
                     scale=np.full(2, 1e-4, np.float32), y_zp=0, lo=-128, hi=127, mac=spec)
    x = np.full((1, 16), 127.0, dtype=np.float32)
    assert np.all(np.isinf(layer.mac(x, k, spec)))
    np.testing.assert_array_equal(rec.run(layer, [x]), [[127.0, 127.0]])
    np.testing.assert_array_equal(rec.run(layer, [-x]), [[-128.0, -128.0]])
