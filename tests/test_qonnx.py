"""QONNX models (Brevitas ``export_qonnx``) against qonnx's own executor (``execute_onnx``): with float scales,
every layer fed qonnx's own inputs (Quant / Trunc bit-identical, the rest within 1e-5 of the largest value);
with power-of-two scales, the whole network bit-identical end to end; single Quant / BipolarQuant / Trunc nodes
for every rounding mode, bit width, sign and narrow-range setting on values that include exact ties."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper as nh

import hwsim
from hwsim.frontends.onnx import load_onnx
from hwsim.graph import ir

import brevitas.nn as qnn  # the oracles (dev extra): a missing one fails the test
from brevitas.export import export_qonnx
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat,
                            Int8BiasPerTensorFixedPointInternalScaling, Int8WeightPerChannelFloat,
                            Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat, Int32Bias,
                            SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst,
                            Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

DOMAIN = "qonnx.custom_op.general"


class BrevitasCNN(torch.nn.Module):
    """2- to 8-bit weights and activations: per-channel 4-bit and per-tensor 2-bit convolutions, 4- and 3-bit
    unsigned ReLUs, a residual add through a shared 6-bit quantizer, TruncAvgPool2d, a 3-bit linear layer."""

    def __init__(self, fixed=False):
        """``fixed``: power-of-two scales everywhere (:class:`FixedPointCNN`)."""
        super().__init__()
        act, uact = (Int8ActPerTensorFixedPoint, Uint8ActPerTensorFixedPoint) if fixed else (Int8ActPerTensorFloat,
                                                                                             Uint8ActPerTensorFloat)
        w_ch = Int8WeightPerTensorFixedPoint if fixed else Int8WeightPerChannelFloat
        w_t = Int8WeightPerTensorFixedPoint if fixed else Int8WeightPerTensorFloat
        fc_bias = dict(bias_quant=Int8BiasPerTensorFixedPointInternalScaling) if fixed else {}
        self.inp = qnn.QuantIdentity(act_quant=act, bit_width=8, return_quant_tensor=True)
        self.c1 = qnn.QuantConv2d(3, 8, 3, padding=1, weight_quant=w_ch, weight_bit_width=4,
                                  bias=True, bias_quant=Int32Bias, return_quant_tensor=True)
        self.r1 = qnn.QuantReLU(act_quant=uact, bit_width=4, return_quant_tensor=True)
        self.c2 = qnn.QuantConv2d(8, 8, 3, padding=1, weight_quant=w_t, weight_bit_width=2,
                                  bias=False, return_quant_tensor=True)
        self.r2 = qnn.QuantReLU(act_quant=uact, bit_width=3, return_quant_tensor=True)
        self.shared = qnn.QuantIdentity(act_quant=act, bit_width=6, return_quant_tensor=True)
        self.pool = qnn.TruncAvgPool2d(kernel_size=2, stride=2, bit_width=8, return_quant_tensor=True)
        self.qid = qnn.QuantIdentity(act_quant=act, bit_width=5, return_quant_tensor=False)
        self.fc = qnn.QuantLinear(8 * 2 * 2, 10, weight_quant=w_ch, weight_bit_width=3,
                                  bias=True, return_quant_tensor=False, **fc_bias)

    def forward(self, x):
        x = self.inp(x)
        a = self.r1(self.c1(x))
        b = self.r2(self.c2(a))
        s = self.qid(self.pool(self.shared(a) + self.shared(b)))
        return self.fc(torch.flatten(torch.nn.functional.avg_pool2d(s, 2), 1))


class BinaryCNN(torch.nn.Module):
    """Binary weights and activations (BipolarQuant), a 5-bit convolution, a 4-bit ReLU."""

    def __init__(self):
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, bit_width=8, return_quant_tensor=True)
        self.c1 = qnn.QuantConv2d(3, 6, 3, padding=1, weight_quant=SignedBinaryWeightPerTensorConst, bias=False,
                                  return_quant_tensor=True)
        self.a1 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
        self.c2 = qnn.QuantConv2d(6, 6, 3, padding=1, weight_quant=Int8WeightPerTensorFloat, weight_bit_width=5,
                                  bias=False, return_quant_tensor=True)
        self.a2 = qnn.QuantReLU(bit_width=4, return_quant_tensor=False)

    def forward(self, x):
        return self.a2(self.c2(self.a1(self.c1(self.inp(x)))))


def _trained(net, shape, seed):
    """Activation scales calibrated in train mode on a few batches, then eval."""
    torch.manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(8, *shape))
    return net.eval()


def _exported(tmp_path, cls, shape, seed=0):
    torch.manual_seed(seed)  # the weights' initialisation
    net = _trained(cls(), shape, seed)
    path = tmp_path / f"{cls.__name__}.onnx"
    export_qonnx(net, input_t=torch.randn(1, *shape), export_path=str(path))
    return net, path


def _qonnx_values(path, x):
    """qonnx's execution context (every tensor) for ``x``, one image at a time (the export has batch 1)."""
    m = ModelWrapper(str(path))
    runs = [execute_onnx(m, {m.graph.input[0].name: x[i:i + 1]}, return_full_exec_context=True) for i in range(len(x))]
    return m, {k: np.concatenate([r[k] for r in runs]) for k in runs[0] if np.ndim(runs[0][k]) and
               np.shape(runs[0][k])[0] == 1 and k not in {i.name for i in m.graph.initializer}}


def _ours(net, x):
    """Every IR layer's output (NCHW where the IR holds NHWC)."""
    from hwsim.graph.runner import resolve_specs

    specs = resolve_specs(net, "fp32")
    vals = {"input": x}
    for layer in net.layers:
        vals[layer.name] = layer.run([vals[s] for s in layer.inputs], specs.get(layer.name))
    return vals


# IR layers whose 4-D inputs and outputs are NHWC (ONNX holds NCHW)
_FORCED_KINDS = (ir.IntQuant, ir.TruncQuant, ir.Conv2D, ir.Add, ir.Pool2D, ir.Dense)


def _forced(hw, m, ctx):
    """Every IR layer that is an ONNX node of the same name, run on qonnx's own values of its inputs, with qonnx's
    value of its output: ``[(layer, ours, qonnx's)]``, NCHW.

    Fed qonnx's inputs, a layer's rounding cannot be moved by an earlier layer's float32 summation order: a
    convolution sums in another order than onnxruntime's MLAS (and MLAS's order changes with the CPU's vector
    width), so a value within float32 rounding of a quantizer's rounding boundary can land one step apart in a
    chained run. An IR input that is an ONNX node reads the tensor that node reads at the same position; where the
    IR has fused an op into a layer (Conv + Relu), the consumer's input is the fused op's output. A layer that no
    such node reads is compared with its own node's output."""
    from hwsim.graph.runner import resolve_specs

    nodes = {n.name: n for n in m.graph.node}
    ref = {}
    for layer in hw.layers:
        if layer.name in nodes:
            for src, t in zip(layer.inputs, nodes[layer.name].input):
                ref.setdefault(src, ctx[t])
    for layer in hw.layers:  # a layer no mapped node reads: the output of its own node
        if layer.name in nodes:
            ref.setdefault(layer.name, ctx[nodes[layer.name].output[0]])
    specs = resolve_specs(hw, "fp32")
    nhwc = lambda a: a.transpose(0, 2, 3, 1) if a.ndim == 4 else a  # noqa: E731
    nchw = lambda a: a.transpose(0, 3, 1, 2) if a.ndim == 4 else a  # noqa: E731
    out = []
    for layer in hw.layers:
        if (isinstance(layer, _FORCED_KINDS) and layer.name in nodes and layer.name in ref
                and all(s in ref for s in layer.inputs)):
            mine = layer.run([np.ascontiguousarray(nhwc(ref[s])) for s in layer.inputs], specs.get(layer.name))
            out.append((layer, nchw(mine), ref[layer.name]))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_brevitas_cnn_equals_qonnx_executor(tmp_path, seed):
    """Float scales: each layer fed qonnx's own inputs (:func:`_forced`); every Quant / Trunc bit-identical, every
    convolution, add, pool and linear layer within 1e-5 of its largest value."""
    net, path = _exported(tmp_path, BrevitasCNN, (3, 8, 8), seed)
    model = onnx.load(str(path))
    kinds = {n.op_type for n in model.graph.node if n.domain == DOMAIN}
    assert kinds == {"Quant", "Trunc"}
    x = np.random.default_rng(seed).normal(size=(16, 3, 8, 8)).astype(np.float32)
    m, ctx = _qonnx_values(path, x)
    hw = hwsim.load_model(path)
    assert hwsim.run(hw, x).shape == ctx[m.graph.output[0].name].shape
    checked = {}
    for layer, mine, ref in _forced(hw, m, ctx):
        assert mine.shape == ref.shape, layer.name
        kind = type(layer).__name__
        checked[kind] = checked.get(kind, 0) + 1
        if isinstance(layer, (ir.IntQuant, ir.TruncQuant)):
            np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32), err_msg=layer.name)
        else:
            assert np.abs(mine - ref).max() <= 1e-5 * np.abs(ref).max(), layer.name
    # the weight quantizers are folded at import; the six activation Quants and the Trunc are layers
    assert checked == {"IntQuant": 6, "TruncQuant": 1, "Conv2D": 2, "Add": 1, "Pool2D": 2, "Dense": 1}, checked


class FixedPointCNN(BrevitasCNN):
    """:class:`BrevitasCNN` with power-of-two scales everywhere and quantized biases: every product and every sum
    is exact in float32, so any summation order gives the same bits and the whole network is comparable end to
    end."""

    def __init__(self):
        super().__init__(fixed=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_point_cnn_bit_identical_end_to_end(tmp_path, seed):
    """Power-of-two scales: the chained run equals qonnx's executor and Brevitas in torch bit for bit, logits and
    every Quant / Trunc on the way."""
    net, path = _exported(tmp_path, FixedPointCNN, (3, 8, 8), seed)
    x = np.random.default_rng(seed).normal(size=(16, 3, 8, 8)).astype(np.float32)
    m, ctx = _qonnx_values(path, x)
    ref = ctx[m.graph.output[0].name]
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    scales = [inits[n.input[1]] for n in m.graph.node if n.op_type == "Quant"]
    assert len(scales) == 11 and all(np.all(np.frexp(s)[0] == 0.5) for s in scales)  # powers of two
    hw = hwsim.load_model(path)
    y = hwsim.run(hw, x)
    np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32))
    with torch.no_grad():
        np.testing.assert_array_equal(y, net(torch.from_numpy(x)).numpy())
    assert np.abs(ref).max() > 0 and len(np.unique(np.round(ref, 3))) > 20  # a network that computes something
    vals = _ours(hw, x)
    checked = 0
    for node in m.graph.node:
        if node.domain == DOMAIN and node.name in vals:
            mine = vals[node.name]
            mine = mine.transpose(0, 3, 1, 2) if mine.ndim == 4 else mine
            np.testing.assert_array_equal(mine.view(np.uint32), ctx[node.output[0]].view(np.uint32), err_msg=node.name)
            checked += 1
    assert checked == 7


def test_binary_cnn_bipolar_quant(tmp_path):
    """BipolarQuant on activations and weights; the sign of a convolution output that sits near 0 can differ
    between summation orders, so the bipolar tensor is compared where the convolution before it is not
    within float32 rounding of zero."""
    net, path = _exported(tmp_path, BinaryCNN, (3, 9, 9))
    assert "BipolarQuant" in {n.op_type for n in onnx.load(str(path)).graph.node}
    x = np.random.default_rng(3).normal(size=(8, 3, 9, 9)).astype(np.float32)
    m, ctx = _qonnx_values(path, x)
    hw = hwsim.load_model(path)
    vals = _ours(hw, x)
    (bip,) = [n for n in m.graph.node if n.op_type == "BipolarQuant" and n.input[0] not in
              {i.name for i in m.graph.initializer}]
    conv = ctx[bip.input[0]]
    safe = np.abs(conv) > 1e-5 * np.abs(conv).max()
    mine = vals[bip.name].transpose(0, 3, 1, 2)
    assert safe.mean() > 0.99
    np.testing.assert_array_equal(mine[safe], ctx[bip.output[0]][safe])


def _single(op, inputs, attrs, shape, opset=2):
    names = [f"i{k}" for k in range(len(inputs))]
    node = oh.make_node(op, ["x", *names], ["y"], domain=DOMAIN, **attrs)
    inits = [nh.from_array(np.asarray(v, np.float32), k) for k, v in zip(names, inputs)]
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", TP.FLOAT, shape)],
                      [oh.make_tensor_value_info("y", TP.FLOAT, shape)], inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(DOMAIN, opset)])
    m.ir_version = 8
    return m


def _both(m, x):
    ref = execute_onnx(ModelWrapper(m), {"x": x})["y"]
    net = load_onnx(m, name="t")
    return _ours(net, x)[net.output], ref  # the network's output is back in ONNX's NCHW


@pytest.mark.parametrize("rounding", ir.QUANT_ROUNDING)
def test_quant_node_every_rounding_mode(rounding):
    rng = np.random.default_rng(7)
    shape = [1, 3, 6, 7]
    for bits in (1, 2, 3, 4, 8, 16):
        for signed in (0, 1):
            for narrow in (0, 1):
                per_channel = bits % 2 == 0
                s = rng.uniform(0.02, 0.5, (1, 3, 1, 1) if per_channel else ()).astype(np.float32)
                z = np.float32(0 if signed else rng.integers(0, 2))
                x = (rng.normal(size=shape) * 4).astype(np.float32)
                x[0, :, 0, :] = (np.arange(7, dtype=np.float32) - 3.5) * (s.reshape(-1)[:1] if per_channel else s)
                m = _single("Quant", [s, z, np.float32(bits)], dict(signed=signed, narrow=narrow,
                                                                    rounding_mode=rounding), shape)
                mine, ref = _both(m, x)
                np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32),
                                              err_msg=f"{rounding} bits {bits} signed {signed} narrow {narrow}")


def test_bipolar_quant_and_trunc_nodes():
    rng = np.random.default_rng(8)
    shape = [1, 4, 5, 5]
    x = rng.normal(size=shape).astype(np.float32)
    x[0, 0, 0, :4] = [0.0, -0.0, -1e-45, -1e-40]  # negative subnormals: x / scale underflows to -0, x is < 0
    mine, ref = _both(_single("BipolarQuant", [np.float32(4.0)], {}, shape), x)
    np.testing.assert_array_equal(mine, ref)
    s = np.float32(0.0125)
    xq = (np.round(rng.normal(size=shape) * 40) * s).astype(np.float32)  # on the input's grid, as Trunc expects
    for mode in ("FLOOR", "ROUND", "CEIL"):
        m = _single("Trunc", [s, np.float32(0), np.float32(9), np.float32(0.05), np.float32(6)],
                    dict(rounding_mode=mode, signed=1, narrow=0), shape)
        mine, ref = _both(m, xq)
        np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32), err_msg=mode)


def test_qonnx_bad_nodes_are_named():
    shape = [1, 2, 3, 3]
    m = _single("Trunc", [np.float32(0.1), np.float32(0), np.float32(8), np.float32(4)], dict(rounding_mode="FLOOR"),
                shape, opset=1)
    with pytest.raises(ValueError, match="Trunc version 1 with 5 inputs"):
        load_onnx(m, name="t")
    m = _single("Quant", [np.float32(0.1), np.float32(0), np.float32(4)], dict(signed=1, narrow=0,
                                                                              rounding_mode="STOCHASTIC"), shape)
    with pytest.raises(ValueError, match="rounding 'STOCHASTIC' unknown; valid: ROUND"):
        load_onnx(m, name="t")
    m = _single("MultiThreshold", [np.zeros((2, 3), np.float32)], {}, shape)
    with pytest.raises(ValueError, match="MultiThreshold.*no converter.*BipolarQuant, Quant, Trunc"):
        load_onnx(m, name="t")
