"""Keras coverage: every layer and activation real edge models use, and the keras.applications models,
against Keras' own ``predict`` (max |delta| / max |logit| <= 1e-4 with ``mac="fp32"``), with random
weights and non-trivial batch-norm statistics; their MAC counts in the cost model; the quantizer on them.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras

import hwsim
import kernels
from hwsim.cycles import layer_gemm
from hwsim.graph import ir
from kernels.mac import as_spec

L = keras.layers


def _random_bn(layers, rng):
    for layer in layers:
        if isinstance(layer, L.BatchNormalization):
            w = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, w[0].shape), rng.normal(0, 0.3, w[1].shape),
                               rng.normal(0, 0.3, w[2].shape), rng.uniform(0.5, 2.0, w[3].shape)])
        if isinstance(layer, L.LayerNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape) if i == 0 else rng.normal(0, 0.3, w.shape)
                               for i, w in enumerate(layer.get_weights())])


def _check(model, x, tol=1e-4):
    net = hwsim.load_model(model)
    y = hwsim.run(net, x, mac="fp32")
    ref = model.predict(x, verbose=0)
    assert y.shape == ref.shape
    err = float(np.abs(y - ref).max() / np.abs(ref).max())
    assert err <= tol, err
    return net


@pytest.fixture
def rng():
    keras.utils.set_random_seed(0)
    return np.random.default_rng(0)


def test_squeeze_excite_concat_separable(rng):
    inp = keras.Input((16, 12, 8))
    x = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, activation="swish")(inp)
    se = L.GlobalAveragePooling2D(keepdims=True)(x)
    se = L.Conv2D(4, 1, activation="relu")(se)
    se = L.Conv2D(12, 1, activation="hard_sigmoid")(se)
    x = L.Multiply()([x, se])
    y = L.Conv2D(6, 1, activation="hard_swish")(inp)
    x = L.Concatenate()([x, y])
    x = L.Conv2D(5, 3, strides=2, activation="gelu")(x)
    out = L.Activation("sigmoid")(L.Flatten()(x))
    net = _check(keras.Model(inp, out), rng.normal(size=(4, 16, 12, 8)).astype(np.float32))
    assert {"mul", "concat"} <= {l.kind for l in net.layers}
    sep = [l for l in net.layers if l.kind == "depthwise"][0]
    assert sep.kernel.shape == (3, 3, 8, 2) and sep.bias is None  # the separable's depthwise half


def test_grouped_and_dilated_convolutions(rng):
    inp = keras.Input((15, 13, 8))
    x = L.Conv2D(12, 3, groups=4, padding="same", activation="relu")(inp)
    x = L.Conv2D(8, 3, dilation_rate=2, padding="valid")(x)
    x = L.DepthwiseConv2D(3, dilation_rate=(2, 1), padding="same", activation="tanh")(x)
    x = L.Conv2D(6, (2, 3), dilation_rate=(3, 2), padding="same")(x)
    out = L.Flatten()(x)
    model = keras.Model(inp, out)
    net = _check(model, rng.normal(size=(3, 15, 13, 8)).astype(np.float32))
    g = layer_gemm(net, net.layers[0].name)
    assert (g.repeats, g.window, g.filters) == (4, 3 * 3 * 2, 3)  # four groups of 2 channels -> 3 filters
    assert g.macs == 15 * 13 * 3 * 3 * 2 * 12  # each output sums its own group's 18 products
    d = layer_gemm(net, net.layers[1].name)
    assert d.window == 3 * 3 * 12 and d.macs == 11 * 9 * 3 * 3 * 12 * 8  # real taps only
    # emulated with another MAC: the grouped layer equals its groups run one by one
    spec = "fp8_e4m3_fp16"
    x = rng.normal(size=(2, 15, 13, 8)).astype(np.float32)
    conv = net.layers[0]
    got = conv.mac(x, conv.kernel, as_spec(spec))
    want = np.concatenate([kernels.conv2d(np.ascontiguousarray(x[..., 2 * i:2 * i + 2]),
                                          np.ascontiguousarray(conv.kernel[..., 3 * i:3 * i + 3]), spec, padding="same")
                           for i in range(4)], axis=-1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling(rng, interpolation):
    inp = keras.Input((5, 7, 3))
    x = L.Conv2D(4, 1)(inp)
    x = L.UpSampling2D((2, 3), interpolation=interpolation)(x)
    out = L.Conv2D(2, 3, padding="same")(x)
    net = _check(keras.Model(inp, out), rng.normal(size=(2, 5, 7, 3)).astype(np.float32))
    assert net.shapes[net.layers[1].name] == (10, 21, 4)


def test_layer_norm_and_dense_on_sequences(rng):
    """A keyword-spotting-like head: Dense applied per time step of a (49, 10) spectrogram."""
    inp = keras.Input((49, 10))
    x = L.Dense(16, activation="gelu")(inp)
    x = L.LayerNormalization()(x)
    x = L.Dense(8)(x)
    x = L.LayerNormalization(epsilon=1e-5, center=False)(x)
    out = L.Dense(4)(L.Flatten()(x))
    model = keras.Model(inp, out)
    _random_bn(model.layers, rng)
    net = _check(model, rng.normal(size=(5, 49, 10)).astype(np.float32))
    assert layer_gemm(net, net.layers[0].name).pixels == 49


APPS = [("MobileNet", dict(alpha=0.25)), ("MobileNetV2", dict(alpha=0.35)), ("MobileNetV3Small", {}),
        ("EfficientNetB0", {}), ("ResNet50", {})]


@pytest.mark.parametrize("app,kw", APPS, ids=[a for a, _ in APPS])
def test_keras_applications_nested_with_rescaling(rng, app, kw):
    base = getattr(keras.applications, app)(weights=None, input_shape=(64, 64, 3), include_top=False, **kw)
    _random_bn(base.layers, rng)
    inp = keras.Input((64, 64, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    x = base(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(10)(x)
    net = _check(keras.Model(inp, out), rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32))
    # every Keras MAC layer of the application is a MAC layer of the IR (a separable one would be two)
    n_mac = sum(isinstance(l, (L.Conv2D, L.DepthwiseConv2D, L.Dense)) for l in base.layers) + 1
    assert len(net.mac_layers) == n_mac


def test_quantizer_runs_the_new_ops(rng):
    """int8 post-training quantization of a model with Mul, Concat, UpSample2D and LayerNorm: every new op
    is computed on dequantized values, so the int8 network stays close to float32."""
    inp = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    g = L.Conv2D(8, 1, activation="sigmoid")(L.GlobalAveragePooling2D(keepdims=True)(x))
    x = L.Multiply()([x, g])
    x = L.Concatenate()([x, L.UpSampling2D()(L.MaxPooling2D()(x))])
    x = L.LayerNormalization()(x)
    out = L.Dense(3)(L.Flatten()(x))
    model = keras.Model(inp, out)
    net = hwsim.load_model(model)
    from quant import quantize_model

    calib = rng.normal(size=(64, 8, 8, 4)).astype(np.float32)
    qnet = quantize_model(net, weights="int8", activations="int8", calibration=calib)
    x = rng.normal(size=(16, 8, 8, 4)).astype(np.float32)
    yf = hwsim.run(net, x, mac="fp32")
    yq = hwsim.run(qnet, x)
    assert np.abs(yq - yf).max() / np.abs(yf).max() < 0.05


def test_unsupported_keras_op_names_it():
    inp = keras.Input((4,))
    out = keras.ops.maximum(L.Dense(3)(inp), 0.5)
    with pytest.raises(ValueError) as exc:
        hwsim.load_model(keras.Model(inp, out))
    msg = str(exc.value)
    assert "Maximum" in msg and "keras.ops" in msg and "Multiply" in msg


def test_ops_registry_has_the_new_ops():
    assert {"mul", "concat", "upsample", "layer_norm"} <= set(ir.OPS)


def test_normalization_axis_and_rms_layer_norm(rng):
    """Normalization on axis 1 of a (4, 4) input normalizes rows, not columns; RMS layer norm is refused."""
    norm = L.Normalization(axis=1)
    data = rng.normal(size=(64, 4, 4)) * np.arange(1, 5)[None, :, None]
    norm.adapt(data)
    inp = keras.Input((4, 4))
    out = L.Flatten()(norm(inp))
    _check(keras.Model(inp, out), rng.normal(size=(5, 4, 4)).astype(np.float32))
    inp = keras.Input((6,))
    with pytest.raises(ValueError, match="rms_scaling"):
        hwsim.load_model(keras.Model(inp, L.LayerNormalization(rms_scaling=True)(inp)))
