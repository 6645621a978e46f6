"""hwsim.frontends.tflite: TF-Lite int8 models run by hwsim equal the real tf.lite.Interpreter bit for bit.

The oracle is the interpreter itself, run in the test: its default arithmetic (XNNPACK delegate)
against ``kernels="xnnpack"`` and its reference kernels (``BUILTIN_REF``) against
``kernels="reference"``. The models are small random Keras models with every supported op,
converted in the test with full-integer quantization. The trained zoo models: tests/test_tflite_zoo.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import hwsim  # noqa: E402
from hwsim.frontends.tflite import load_tflite  # noqa: E402
from hwsim.frontends import tflite  # noqa: E402
from tests._tflite_util import convert, edit, interpreter_outputs, set_quant  # noqa: E402

KERNELS = ("xnnpack", "reference")


def _randomize_bn(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            g, b, mu, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.3, b.shape),
                               rng.normal(0, 0.3, mu.shape), rng.uniform(0.5, 1.5, var.shape)])


def _residual_model():
    """Every op kind: conv + BN + ReLU6, depthwise (multiplier 1 and 2), 1x1 projection, residual add,
    zero padding, strided valid conv, average and max pooling, global average pooling, dense."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = layers.Rescaling(1.0 / 255)(inp)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU(6.0)(y)
    y = layers.Conv2D(8, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    x = layers.Add()([x, y])
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(12, 3, strides=2, activation="relu")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10)(x)
    model = keras.Model(inp, x)
    _randomize_bn(model, 2)
    return model


def _cnn_model():
    """cifar_cnn's structure in small: conv/conv/maxpool, Flatten (a dynamic-batch RESHAPE), dense."""
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.Conv2D(8, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(24, activation="relu"),
        layers.Dense(10),
    ])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite")
    rng = np.random.default_rng(7)
    res = tflite.convert_keras(_residual_model(), rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8),
                               d / "residual.tflite")
    cnn = tflite.convert_keras(_cnn_model(), rng.integers(0, 256, (200, 12, 12, 3), dtype=np.uint8),
                               d / "cnn.tflite", per_channel_dense=False)
    return {"residual": res, "cnn": cnn}


def _images(shape, n=32, seed=11):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("which", ["residual", "cnn"])
def test_random_models_equal_interpreter(models, which, kernels):
    path = models[which]
    net = load_tflite(path, kernels=kernels)
    x = _images(net.input_shape)
    got = hwsim.run(net, x, batch_size=13)
    want = interpreter_outputs(path.read_bytes(), kernels, x.astype(np.float32))
    assert got.dtype == np.float32 and want.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_the_two_interpreter_arithmetics_differ(models):
    """The tests above can tell the variants apart: on these models XNNPACK and the reference kernels
    disagree, and each emulator variant matches only its own."""
    data = models["residual"].read_bytes()
    x = _images((16, 16, 3), n=32).astype(np.float32)
    xnn, ref = interpreter_outputs(data, "xnnpack", x), interpreter_outputs(data, "reference", x)
    assert not np.array_equal(xnn, ref)
    emu = hwsim.run(load_tflite(models["residual"], kernels="reference"), x)
    assert not np.array_equal(emu, xnn)


def test_every_tensor_equals_reference_interpreter(models):
    """Op by op: the emulator's value of every tensor equals the reference interpreter's
    (``experimental_preserve_all_tensors``), each op fed the emulator's own previous values."""
    for which in ("residual", "cnn"):
        path = models[which]
        net = load_tflite(path, kernels="reference")
        it = tflite.interpreter(path, "reference", preserve_all_tensors=True)
        inp = it.get_input_details()[0]["index"]
        checked = 0
        for img in _images(net.input_shape, n=4, seed=5).astype(np.float32):
            it.set_tensor(inp, img[None])
            it.invoke()
            vals = {"input": img[None]}
            for layer in net.layers:
                ins = [vals[s] for s in layer.inputs]
                if layer.quant is None:  # the Flatten the importer inserts before a dense layer
                    vals[layer.name] = ins[0].reshape(1, *layer.target)
                    continue
                vals[layer.name] = layer.quant.run(layer, ins)
                want = it.get_tensor(layer.quant.output.index)
                np.testing.assert_array_equal(vals[layer.name], want.astype(np.float32),
                                              err_msg=f"{which}: {layer.quant.describe()}")
                checked += 1
        assert checked >= 4 * 6


def _pow2_scales(model):
    """Every int8 scale -> the nearest power of two (bias scales follow), so that requantization
    ratios are powers of two and rounding ties are frequent in every op."""
    sg = model.subgraphs[0]
    for t in sg.tensors:
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) and t.type == 9:  # INT8
            q.scale = [float(2.0 ** np.round(np.log2(v))) for v in q.scale]
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) in (3, 4, 9) and len(op.inputs) > 2 and op.inputs[2] >= 0:
            x, w, b = (sg.tensors[i] for i in op.inputs[:3])  # CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED
            b.quantization.scale = [float(x.quantization.scale[0] * v) for v in w.quantization.scale]


@pytest.mark.parametrize("which", ["residual", "cnn"])
def test_power_of_two_scales_ties(models, which):
    """With power-of-two scales the tie rules of every op matter (XNNPACK's conv ties to even, its MEAN
    away from zero, TF-Lite's double rounding...): still bit-exact for both arithmetics."""
    content = edit(models[which].read_bytes(), _pow2_scales)
    path = _write(content, f"pow2_{which}.tflite")
    outs = {}
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        x = _images(net.input_shape, n=24, seed=13)
        outs[kernels] = interpreter_outputs(content, kernels, x.astype(np.float32))
        np.testing.assert_array_equal(hwsim.run(net, x), outs[kernels], err_msg=kernels)
    assert not np.array_equal(outs["xnnpack"], outs["reference"])


def test_int8_io_model_returns_int8_codes():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(6, 3, padding="same", activation="relu"),
                              layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(5)])
    rng = np.random.default_rng(0)
    content = convert(model, [rng.normal(0, 1, (100, 8, 8, 4))], int_io=True)
    path = _write(content, "int8io.tflite")
    x = rng.integers(-128, 128, (24, 8, 8, 4)).astype(np.int8)
    for kernels in KERNELS:
        net = load_tflite(path, kernels=kernels)
        assert net.meta["input_dtype"] == "int8" and net.meta["output_dtype"] == "int8"
        got = hwsim.run(net, x)
        want = interpreter_outputs(content, kernels, x)
        assert want.dtype == np.int8
        np.testing.assert_array_equal(got, want.astype(np.float32))


def test_mean_with_identical_quantization_reference(models):
    """MEAN whose output quantization equals its input's takes TF-Lite's integer-division branch."""

    def same(m):
        sg = m.subgraphs[0]
        for op in sg.operators:
            code = m.operatorCodes[op.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == 40:  # MEAN
                src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
                set_quant(dst, src.quantization.scale, src.quantization.zeroPoint)
                return
        raise AssertionError("no MEAN op")

    content = edit(models["residual"].read_bytes(), same)
    path = _write(content, "mean_same.tflite")
    x = _images((16, 16, 3), n=16)
    for kernels in KERNELS:
        got = hwsim.run(load_tflite(path, kernels=kernels), x)
        np.testing.assert_array_equal(got, interpreter_outputs(content, kernels, x.astype(np.float32)))


def test_batch_size_and_mac_spec(models):
    net = load_tflite(models["residual"])
    x = _images((16, 16, 3), n=20)
    a = hwsim.run(net, x, batch_size=20)
    np.testing.assert_array_equal(a, hwsim.run(net, x, batch_size=3))
    np.testing.assert_array_equal(a, hwsim.run(load_tflite(models["residual"], mac="int8_int32"), x))
    # a 4-bit multiplier (operands saturate to int4) is a different machine: the same graph runs, results change
    int4 = kernels_spec("int4")
    b = hwsim.run(load_tflite(models["residual"], mac=int4), x)
    assert b.shape == a.shape and not np.array_equal(a, b)


def test_stochastic_mac_independent_of_batch_size(models):
    """A stochastic-rounding MAC on the TF-Lite graph: results depend on the seed and on each output's
    position only (the runner's image offset is turned into the kernels' element offset)."""
    from kernels import MacSpec

    net = load_tflite(models["residual"], mac=MacSpec("int8", "fp16", rounding="stochastic"))
    x = _images((16, 16, 3), n=12)
    a = hwsim.run(net, x, batch_size=12, seed=5)
    np.testing.assert_array_equal(a, hwsim.run(net, x, batch_size=5, seed=5))
    assert not np.array_equal(a, hwsim.run(net, x, batch_size=12, seed=6))


class _Overflowing:
    """A MAC layer whose MAC results are all ``value`` (+-inf: an emulated accumulator that overflowed)."""

    def __init__(self, layer, value):
        self._layer, self._value = layer, value

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def mac(self, x, *args, **kw):
        return np.full(self._layer.mac(x, *args, **kw).shape, self._value)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("out", [None, "fp16"])
def test_an_overflowed_float_accumulator_gives_the_end_of_the_output_range(models, kernels, out):
    """An emulated float accumulator (or an int32 one with an fp16 output format) that overflows (mac=): +inf
    sums give the top output code, -inf the bottom one, in every kernel mode. numpy's float -> int64 cast had
    turned +inf into int64's minimum: the bottom code, or an int32 range error in the reference
    requantizers. NaN is an error naming the layer."""
    from kernels import MacSpec

    spec = MacSpec("int8", "fp16") if out is None else MacSpec("int8", "int32", out=out)
    net = load_tflite(models["residual"], kernels=kernels, mac=spec)
    layer = net.mac_layers[0]
    rec = layer.quant
    x = _images((16, 16, 3), n=2).astype(np.float32) - 128
    for value, code in ((np.inf, rec.hi), (-np.inf, rec.lo), (1e12, rec.hi), (-1e12, rec.lo)):
        assert np.all(rec.run(_Overflowing(layer, value), [x]) == code), (value, kernels)
    with pytest.raises(ValueError, match=rf"layer {layer.name!r} \({spec.name}\): the accumulator gave NaN in 1 "
                                         r"of 2 sums.*overflow='saturate'"):
        rec._sums(layer, np.array([1.0, np.nan]), rec.inputs[0].zp)


@pytest.mark.parametrize("op,kernels,bias_bits", [("fc", "reference", 64), ("conv", "reference", 64),
                                                   ("fc", "builtin", "none")])
def test_int16x8_overflowed_float_accumulator_gives_the_end_of_the_output_range(op, kernels, bias_bits):
    """The int16x8 requantizers wrap past int32 (conv / dw), turn it into int32's minimum (fc) or wrap the
    sum first (bias-less fc, builtin): an fp16 accumulator's +-inf must still give the top / bottom code."""
    from hwsim.frontends.tflite import records as R
    from hwsim.graph import ir
    from kernels import MacSpec

    K = 64
    k = np.full((K, 3), 100.0, dtype=np.float32)
    layer = ir.Dense("fc", ("input",), kernel=k)
    t = R.TensorQ(0, "x", "int16", (1, K), np.array([2.0 ** -7], np.float32), np.zeros(1, np.int64))
    o = R.TensorQ(1, "y", "int16", (1, 3), np.ones(1, np.float32), np.zeros(1, np.int64))
    rec = R.Mac16Op(op="FULLY_CONNECTED", index=0, inputs=(t,), output=o, kernels=kernels,
                    mac=MacSpec("int16", "fp16", b="int8"), colsum=np.full(3, 100 * K), bias=np.zeros(3, np.int64),
                    layer_op=op, w_scales=np.full(3, 2.0 ** -7, np.float32), bias_bits=bias_bits, lo=-32768, hi=32767)
    x = np.full((1, K), 30000.0, dtype=np.float32)
    assert np.all(np.isinf(layer.mac(x, k, rec.mac)))  # 64 * 30000 * 100 overflows fp16
    np.testing.assert_array_equal(rec.run(layer, [x]), [[32767] * 3])
    np.testing.assert_array_equal(rec.run(layer, [-x]), [[-32768] * 3])


def test_int16x8_sums_past_int32_stay_exact():
    """The int16x8 ops' accumulator is int64 (TF-Lite's too): a sum past 2**31 reaches the requantizer
    exactly (a Dense of 1024 taps, inputs 32767, weights 127: 32767 * 127 * 1024 = 4261282816)."""
    from hwsim.frontends.tflite import INT16_MAC, records as R
    from hwsim.graph import ir

    K = 1024
    k = np.full((K, 1), 127.0, dtype=np.float32)
    layer = ir.Dense("fc", ("input",), kernel=k)
    t = R.TensorQ(0, "x", "int16", (1, K), np.ones(1, np.float32), np.zeros(1, np.int64))
    o = R.TensorQ(1, "y", "int16", (1, 1), np.ones(1, np.float32), np.zeros(1, np.int64))
    rec = R.Mac16Op(op="FULLY_CONNECTED", index=0, inputs=(t,), output=o, kernels="reference", mac=INT16_MAC,
                    colsum=np.array([127 * K]), bias=np.array([0], np.int64))
    assert rec.accumulate(layer, np.full((1, K), 32767.0, dtype=np.float32)).ravel()[0] == 32767 * 127 * K


def kernels_spec(fmt):
    from kernels import MacSpec

    return MacSpec(fmt, "int32", overflow="wrap")


def test_network_structure(models):
    net = load_tflite(models["residual"])
    kinds = [l.kind for l in net.layers]
    assert kinds[0] == "affine" and kinds[-1] == "affine"
    assert {"conv2d", "depthwise", "dense", "add", "pool", "zero_pad", "global_avg_pool"} <= set(kinds)
    conv = net.mac_layers[0]
    assert conv.kernel.shape[:2] == (3, 3) and np.all(conv.kernel == np.round(conv.kernel))
    assert np.abs(conv.kernel).max() <= 127
    assert net.meta["kernels"] == "xnnpack" and net.meta["input_dtype"] == "float32"
    # only AVERAGE_POOL_2D runs outside the XNNPACK delegate
    assert {l.quant.op for l in net.layers if l.quant is not None and l.quant.kernels == "builtin"} == {"AVERAGE_POOL_2D"}


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------

_TMP = {}


def _write(content: bytes, name: str):
    import tempfile
    from pathlib import Path

    d = _TMP.setdefault("dir", Path(tempfile.mkdtemp(prefix="hwsim_tflite_")))
    p = d / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize("op, fn", [("REDUCE_MAX", lambda x: keras.ops.max(x, axis=-1, keepdims=True)),
                                    ("ABS", keras.ops.abs)])
def test_unsupported_op_named(op, fn):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    model = keras.Model(inp, layers.Dense(3)(fn(layers.Dense(4)(inp))))
    content = convert(model, [np.random.default_rng(0).normal(0, 1, (50, 6))])
    path = _write(content, f"{op}.tflite")
    with pytest.raises(ValueError, match=rf"TF-Lite op {op} \(operator #\d+\) is not supported; supported ops: QUANTIZE"):
        load_tflite(path)


def test_corrupt_files(models, tmp_path):
    good = models["cnn"].read_bytes()
    cases = {
        "random.tflite": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "empty.tflite": b"",
        "truncated.tflite": good[: len(good) // 2],
        "badroot.tflite": b"\xff\xff\xff\x7f" + good[4:],
    }
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
    before = sorted(os.listdir(tmp_path))
    for name in cases:
        with pytest.raises(ValueError, match=r"not a TF-Lite model|corrupt or unreadable") as e:
            load_tflite(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_tflite(tmp_path / "missing.tflite")
    assert sorted(os.listdir(tmp_path)) == before  # reading writes nothing


def test_convert_keras_failure_writes_nothing(tmp_path):
    model = _cnn_model()
    target = tmp_path / "out.tflite"
    with pytest.raises(Exception):
        tflite.convert_keras(model, np.zeros((4, 5, 5, 3), np.uint8), target)  # wrong image shape
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="representative_images"):
        tflite.convert_keras(model, np.zeros((0, 12, 12, 3)), target)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(models):
    with pytest.raises(ValueError, match="unknown kernels"):
        load_tflite(models["cnn"], kernels="builtin")
    with pytest.raises(ValueError, match="preset"):
        load_tflite(models["cnn"], mac="no_such_mac")
