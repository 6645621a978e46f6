"""ONNX models from PyTorch (torch.onnx.export) against onnxruntime and torch itself: float import, NCHW in
and out, MAC counts, any MAC spec, the sweep, and bad input. Tolerance: max |delta| <= 1e-4 of the
largest logit with ``mac="fp32"``, top-1 agreement 100 %."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _torchnets import FlattenNet, MobileNetV2Like, MobileNetV3Like, ResNetLike, export, randomize

import hwsim
import onnxruntime as ort
from hwsim.frontends.onnx import CONVERTERS

NETS = {"resnet": ResNetLike, "mobilenet_v2": MobileNetV2Like, "mobilenet_v3": MobileNetV3Like, "flatten": FlattenNet}


def _x(n, hw, seed=1):
    return torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(seed))


# FlattenNet's Linear is sized for 32; 224 x 224 is the size torchvision's networks are trained at
CASES = [(n, 32) for n in NETS] + [(n, hw) for hw in (64, 224) for n in NETS if n != "flatten"]


@pytest.mark.parametrize("name,hw", CASES, ids=[f"{n}-{hw}" for n, hw in CASES])
def test_float_models_match_onnxruntime_and_torch(tmp_path, name, hw):
    model = randomize(NETS[name]())
    path = export(model, tmp_path / f"{name}.onnx", hw)
    net = hwsim.load_model(path)
    x = _x(8 if hw < 224 else 2, hw)
    y = hwsim.run(net, x.numpy(), mac="fp32")  # NCHW in, as torch takes it
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        tor = model(x).numpy()
    for other in (ref, tor):
        assert y.shape == other.shape
        assert np.abs(y - other).max() <= 1e-4 * np.abs(other).max()
        assert (y.argmax(1) == other.argmax(1)).all()
    # the cost model sees the torch model's MACs: per conv, output elements x (input channels / groups) x kernel
    macs = []
    hooks = [m.register_forward_hook(lambda m, i, o: macs.append(
        o[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, torch.nn.Conv2d)
        else m.in_features * m.out_features)) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    assert hwsim.cost(net, "int8_int32").macs == sum(macs)


def test_image_outputs_come_back_nchw(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(5, 4, 1)).eval()
    path = export(model, tmp_path / "fcn.onnx")
    net = hwsim.load_model(path)
    x = _x(2, 32)
    y = hwsim.run(net, x.numpy(), mac="fp32")
    with torch.no_grad():
        want = model(x).numpy()
    assert y.shape == want.shape == (2, 4, 16, 16)
    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max()


def test_any_mac_spec_runs(tmp_path):
    path = export(randomize(MobileNetV2Like()), tmp_path / "m.onnx")
    net = hwsim.load_model(path)
    x = _x(4, 32).numpy()
    y32, y16 = hwsim.run(net, x, mac="fp32"), hwsim.run(net, x, mac="bf16_fp32")
    err = np.abs(y16 - y32).max() / np.abs(y32).max()
    assert 1e-6 < err < 0.05  # bf16 operands move the logits a little


def test_sweep_takes_an_onnx_model(tmp_path):
    """The sweep feeds CIFAR-10 NCHW to an NCHW model: its float32 point equals hwsim.accuracy on the same
    images transposed by hand."""
    from hwsim import sweep_exec as X

    path = export(randomize(ResNetLike()), tmp_path / "r.onnx")
    st = X.make_settings(model=str(path), formats="fp32,int8", accum="fp32,int32", rounding="nearest", seeds=1,
                         limit=20, calibration=20)
    rows = {r["label"]: r for r in X.run_sweep(st, tmp_path / "s", serial=True, progress=False, figures=False).results}
    images, labels = X.load_test_images(None, 20)
    net = hwsim.load_model(path)
    want = hwsim.accuracy(net, images.transpose(0, 3, 1, 2).astype(np.float32), labels, mac="fp32")
    assert rows["fp32, acc fp32, nearest"]["accuracy_mean"] == want
    assert "int8, acc int32, nearest" in rows


def test_bad_files_and_unsupported_nodes(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        hwsim.load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="bad.onnx.*corrupt or invalid ONNX"):
        hwsim.load_model(bad)
    path = export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.PixelShuffle(2)).eval(), tmp_path / "l.onnx")
    with pytest.raises(ValueError) as exc:
        hwsim.load_model(path)
    msg = str(exc.value)
    assert "DepthToSpace" in msg and "domain ai.onnx" in msg and "Conv" in msg and "node" in msg
    assert "DepthToSpace" not in CONVERTERS
    pool = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AvgPool2d(2, 2, ceil_mode=True)).eval()
    with pytest.raises(ValueError, match="ceil_mode=1 with count_include_pad=1"):
        hwsim.load_model(export(pool, tmp_path / "p.onnx", hw=31))


# ------------------------------------------------------------------------------------------ QDQ
def _single_node(tmp_path, op, scale, zp, n):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), numpy_helper.from_array(np.asarray(zp), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("zp", [np.int8(3), np.uint8(128)], ids=["int8", "uint8"])
def test_quantize_linear_ties_and_saturation(tmp_path, zp):
    """Ties round half to even; values beyond the code range saturate (int8 and uint8), as onnxruntime."""
    scale = np.float32(0.5)
    ties = np.arange(-300, 300, dtype=np.float32) * scale / 2  # every half-step: half of them exact ties
    rng = np.random.default_rng(0)
    x = np.concatenate([ties, rng.normal(0, 80, 4000).astype(np.float32), [1e9, -1e9, 0.0, -0.0]]).astype(np.float32)
    path = _single_node(tmp_path, "qdq", scale, zp, x.size)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x[None]})[0]
    y = hwsim.run(hwsim.load_model(path), x[None], mac="fp32")
    np.testing.assert_array_equal(y, ref)
    info = np.iinfo(np.asarray(zp).dtype)
    assert y.max() == (info.max - int(zp)) * scale and y.min() == (info.min - int(zp)) * scale  # saturated
    assert y[0, ties.size // 2 + 1] == 0.0  # 0.25 / 0.5 = 0.5 rounds to 0 (even)


@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_qdq_model_matches_onnxruntime_without_optimizations(tmp_path, activations):
    """onnxruntime's quantize_static QDQ model (per-channel int8 weights), calibrated on CIFAR-10 training
    images: >= 95 % of 500 test images give bit-identical logits against onnxruntime with
    ORT_DISABLE_ALL (the graph's own semantics; its float convolutions sum in another order than the
    emulated fp32 MAC, so a requantization can flip by one code), >= 99 % the same top-1."""
    from _torchnets import quantize_onnx
    from onnxruntime.quantization import QuantType

    from hwsim import sweep_exec as X

    path = export(randomize(ResNetLike()), tmp_path / "r.onnx")
    qpath = quantize_onnx(path, tmp_path / "r_qdq.onnx", "QDQ", per_channel=True,
                          activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
                          weight_type=QuantType.QInt8)
    images, _ = X.load_test_images(None, 500)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(qpath), so).run(None, {"x": x})[0]
    net = hwsim.load_model(qpath)
    assert {"quantize_linear", "dequantize_linear"} <= {l.kind for l in net.layers}
    y = hwsim.run(net, x)
    assert (y == ref).all(axis=1).mean() >= 0.95
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.99


# ------------------------------------------------------------------------------------------ PyTorch
def test_torch_module_torchscript_and_exported_program(tmp_path, monkeypatch):
    """A torch.nn.Module (with example_input), a TorchScript .pt and a torch.export .pt2 import through ONNX
    in memory (nothing written), equal to the module's own output."""
    model = randomize(MobileNetV3Like())
    x = _x(4, 32)
    with torch.no_grad():
        want = model(x).numpy()
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    nets = [hwsim.load_model(model, example_input=x)]
    assert list(scratch.iterdir()) == []  # no file left behind
    torch.jit.trace(model, (x[:1],)).save(tmp_path / "m.pt")
    nets.append(hwsim.load_model(tmp_path / "m.pt", example_input=np.zeros((1, 3, 32, 32), np.float32)))
    torch.export.save(torch.export.export(model, (x[:1],)), tmp_path / "m.pt2")
    nets.append(hwsim.load_model(tmp_path / "m.pt2"))
    assert list(scratch.iterdir()) == []
    for net in nets:
        y = hwsim.run(net, x.numpy(), mac="fp32")
        assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max()
    assert model.training is False


def test_torch_bad_input(tmp_path):
    model = randomize(ResNetLike())
    with pytest.raises(ValueError, match="example_input="):
        hwsim.load_model(model)
    with pytest.raises(ValueError, match="float32 tensor with a batch axis"):
        hwsim.load_model(model, example_input=np.zeros((3, 32, 32), np.int64))
    with pytest.raises(ValueError, match="take no option 'example_input'"):
        hwsim.load_model("cifar_cnn", example_input=np.zeros((1, 32, 32, 3), np.float32))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt: corrupt or not a TorchScript file"):
        hwsim.load_model(bad, example_input=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(FileNotFoundError, match="missing.pt2"):
        hwsim.load_model(tmp_path / "missing.pt2")
