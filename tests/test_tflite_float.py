"""Float TF-Lite models (float32, and float16 weights) against tf.lite.Interpreter: imported into plain IR
layers, they match the interpreter to float32 tolerance with ``mac="fp32"`` (max |delta| / max |logit|
<= 1e-4) and run with any MAC spec; ``hwsim sweep`` takes them, and refuses an int8 model clearly."""

from __future__ import annotations

import numpy as np
import pytest
from _tflite_util import interpreter_outputs

import keras

import hwsim
from hwsim import zoo
from hwsim.frontends import tflite
from hwsim.frontends.tflite_float import CONVERTERS

L = keras.layers


def _compare(model, x, tmp_path, float16, mac="fp32"):
    path = tflite.convert_keras_float(model, tmp_path / f"{model.name}_{int(float16)}.tflite", float16=float16)
    net = hwsim.load_model(path)
    assert net.meta["format"] == "tflite-float"
    ref = interpreter_outputs(path.read_bytes(), "xnnpack", x)
    y = hwsim.run(net, x, mac=mac)
    return net, float(np.abs(y - ref).max() / np.abs(ref).max()), float((y.argmax(-1) == ref.argmax(-1)).mean())


@pytest.mark.parametrize("float16", [False, True], ids=["float32", "float16_weights"])
@pytest.mark.parametrize("name", ["cifar_cnn", "mobilenet"])
def test_zoo_models(tmp_path, name, float16):
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    net, err, agree = _compare(zoo.load_keras(name), x, tmp_path, float16)
    assert err <= 1e-4 and agree == 1.0
    assert len(net.mac_layers) == len(hwsim.load_model(name).mac_layers)


def test_edge_ops_and_any_mac_spec(tmp_path):
    """A model with the ops float edge models use (hard-swish, sigmoid gate, concatenation, padding,
    average pooling, a 49x10x1 spectrogram input, dense on a flattened tensor), converted both ways."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((49, 10, 1))
    x = L.Conv2D(8, (10, 4), strides=(2, 2), padding="same", activation="relu")(inp)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.Activation("hard_swish")(x)
    g = L.Conv2D(8, 1, activation="sigmoid")(L.GlobalAveragePooling2D(keepdims=True)(x))
    x = L.Multiply()([x, g])
    x = L.Concatenate()([x, L.Conv2D(4, 1, activation="tanh")(x)])
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = L.AveragePooling2D(2)(x)
    out = L.Dense(12, activation="softmax")(L.Flatten()(x))
    model = keras.Model(inp, out, name="kws")
    x = np.random.default_rng(1).normal(size=(6, 49, 10, 1)).astype(np.float32)
    for float16 in (False, True):
        net, err, agree = _compare(model, x, tmp_path, float16)
        assert err <= 1e-4 and agree == 1.0
    kinds = {l.kind for l in net.layers}
    assert {"mul", "concat", "zero_pad", "pool"} <= kinds
    # another MAC spec runs on the same network: bf16 operands move the logits, but not by much
    _, err, agree = _compare(model, x, tmp_path, False, mac="bf16_fp32")
    assert 1e-6 < err < 0.05


def test_unsupported_float_op_is_named(tmp_path):
    inp = keras.Input((6,))
    out = keras.ops.maximum(L.Dense(3)(inp), 0.5)
    path = tflite.convert_keras_float(keras.Model(inp, out), tmp_path / "m.tflite")
    with pytest.raises(ValueError) as exc:
        hwsim.load_model(path)
    msg = str(exc.value)
    assert "MAXIMUM" in msg and "operator #" in msg and "CONV_2D" in msg
    assert "MAXIMUM" not in CONVERTERS


def test_sweep_takes_a_float_tflite_and_refuses_an_int8_one(tmp_path):
    from hwsim import sweep_exec as X

    model = zoo.load_keras("cifar_cnn")
    fpath = tflite.convert_keras_float(model, tmp_path / "f.tflite")
    st = X.make_settings(model=str(fpath), formats="fp32,int8", accum="fp32,int32", rounding="nearest", seeds=1,
                         limit=20, calibration=20)
    out = tmp_path / "sweep"
    rows = X.run_sweep(st, out, serial=True, progress=False, figures=False).results
    ref = X.run_sweep(X.make_settings(model="cifar_cnn", formats="fp32,int8", accum="fp32,int32", rounding="nearest",
                                      seeds=1, limit=20, calibration=20), tmp_path / "keras", serial=True,
                      progress=False, figures=False).results
    # the same network through either file: the same accuracies
    assert len(rows) == 2 and [r["accuracy_mean"] for r in rows] == [r["accuracy_mean"] for r in ref]
    qpath = tflite.convert_keras(model, np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 3)), tmp_path / "q.tflite")
    with pytest.raises(ValueError, match="integer-quantized TF-Lite model"):
        X.make_settings(model=str(qpath), formats="fp32", accum="fp32", rounding="nearest", limit=20)
