"""The graph layer and the frontends: the op registry, the model-format registry, the Keras models that
failed before (batch norm on any axis, nested models), and the import layering (import-linter).

Every Keras comparison is against Keras' own ``predict`` (max |delta| / max |logit| <= 1e-4 with
``mac="fp32"``), on models with random weights and non-trivial batch-norm statistics.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

import hwsim
from hwsim import frontends
from hwsim.cycles import layer_gemm
from hwsim.graph import ir, passes

ROOT = Path(__file__).resolve().parents[1]


def _random_bn(layers, rng):
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            w = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, w[0].shape), rng.normal(0, 0.3, w[1].shape),
                               rng.normal(0, 0.3, w[2].shape), rng.uniform(0.5, 2.0, w[3].shape)])


def _rel_err(net, model, x):
    y = hwsim.run(net, x, mac="fp32")
    ref = model.predict(x, verbose=0)
    assert y.shape == ref.shape
    return float(np.abs(y - ref).max() / np.abs(ref).max())


# ------------------------------------------------------------------------------------------ registry
def test_every_op_states_its_rules():
    assert set(ir.OPS) == {"conv2d", "depthwise", "dense", "pool", "global_avg_pool", "reshape", "zero_pad",
                           "affine", "activation", "add", "mul", "concat", "upsample", "layer_norm", "transpose", "clip",
                           "quantize_linear", "dequantize_linear", "binary", "leaky_relu", "mean", "resize",
                           "conv2d_transpose", "int_quant", "trunc_quant"}
    for kind, cls in ir.OPS.items():
        assert cls.kind == kind
        assert callable(cls.run) and callable(cls.output_shape)
        if cls.is_mac:
            assert cls.quant_rule == "mac" and callable(cls.gemm_dims) and callable(cls.mac)
    # the quantizer's rule follows the op: max pooling keeps its input's scale, average pooling does not
    assert ir.Pool2D("p", ("input",), op="max").quant_rule == "same"
    assert ir.Pool2D("p", ("input",), op="avg").quant_rule == "float"
    assert ir.Reshape("r", ("input",)).quant_rule == "same" and ir.Add("a", ("input", "input")).quant_rule == "float"


def test_pool_with_explicit_pads():
    """ONNX pooling: explicit pads; padded cells never win a max; average over the input cells, or with
    count_pad over the padded window too."""
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1) - 20  # all negative
    pads = ((1, 0), (1, 0))
    mx = ir.Pool2D("m", ("input",), op="max", pool_size=2, strides=2, padding=pads).run([x])
    np.testing.assert_array_equal(mx[0, :, :, 0], [[-19, -17], [-13, -11]])
    avg = ir.Pool2D("a", ("input",), op="avg", pool_size=2, strides=2, padding=pads).run([x])
    cnt = ir.Pool2D("c", ("input",), op="avg", pool_size=2, strides=2, padding=pads, count_pad=True).run([x])
    assert avg[0, 0, 0, 0] == -19 and cnt[0, 0, 0, 0] == -19 / 4
    assert avg[0, 1, 1, 0] == cnt[0, 1, 1, 0] == np.mean([-15, -14, -12, -11])
    with pytest.raises(ValueError, match="explicit padding"):
        ir.Pool2D("b", ("input",), padding=((1,), (0, 0)))


def test_non_mac_layers_have_no_gemm():
    net = ir.Network("n", (4, 4, 2), [ir.Pool2D("p", ("input",))])
    with pytest.raises(ValueError, match="'pool' does not run on the MAC array; MAC layers: conv2d, depthwise, dense, conv2d_transpose"):
        layer_gemm(net, "p")


def test_passes_fold_and_fuse():
    k = np.arange(12, dtype=np.float32).reshape(3, 4)
    layers = [ir.Dense("d", ("input",), kernel=k, bias=np.ones(4, np.float32)),
              ir.Affine("bn", ("d",), scale=np.full(4, 2.0), offset=np.full(4, 0.5)),
              ir.Activation("act", ("bn",), activation="relu")]
    folded, out = passes.fold_batch_norms(layers, "act")
    assert [l.name for l in folded] == ["d", "act"] and out == "act"
    np.testing.assert_array_equal(folded[0].kernel, 2 * k)
    np.testing.assert_array_equal(folded[0].bias, np.full(4, 2.5, np.float32))
    fused, out = passes.fuse_activations(folded, out)
    assert [(l.name, l.activation) for l in fused] == [("d", "relu")] and out == "d"
    # an affine on another axis is not a per-output-channel batch norm: it stays
    other = [layers[0], ir.Affine("bn", ("d",), scale=np.full(4, 2.0), offset=0.0, axis=0)]
    assert len(passes.fold_batch_norms(other, "bn")[0]) == 2


# ------------------------------------------------------------------------------------------ frontends
def test_frontend_registry_errors(tmp_path):
    with pytest.raises(ValueError) as exc:
        hwsim.load_model(tmp_path / "model.mlmodel")
    assert "model.mlmodel" in str(exc.value) and ".keras, .h5, .tflite, .onnx, .pt, .pt2" in str(exc.value)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        hwsim.load_model(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="cannot load a model from a dict"):
        hwsim.load_model({})
    assert frontends.frontend_for("cifar_cnn") == "keras" and frontends.frontend_for("m.TFLITE") == "tflite"


def test_batch_norm_on_the_last_axis_of_a_dense_autoencoder():
    """A dense autoencoder on (N, 640) inputs: axis=1 is the last axis (it was refused)."""
    rng = np.random.default_rng(0)
    inp = keras.Input((640,))
    x = inp
    for width in (128, 128, 8, 128, 128):
        x = keras.layers.Dense(width)(x)
        x = keras.layers.BatchNormalization(axis=1)(x)
        x = keras.layers.ReLU()(x)
    out = keras.layers.Dense(640)(x)
    model = keras.Model(inp, out)
    _random_bn(model.layers, rng)
    net = hwsim.load_model(model)
    assert [l.kind for l in net.layers] == ["dense"] * 6  # every batch norm folded, every ReLU fused
    assert _rel_err(net, model, rng.normal(size=(32, 640)).astype(np.float32)) <= 1e-4


def test_batch_norm_on_any_axis():
    rng = np.random.default_rng(1)
    inp = keras.Input((8, 6, 4))
    x = keras.layers.BatchNormalization(axis=1)(inp)  # over the rows
    x = keras.layers.Conv2D(3, 3)(x)
    x = keras.layers.BatchNormalization(axis=-2)(x)  # over the columns
    out = keras.layers.Flatten()(x)
    model = keras.Model(inp, out)
    _random_bn(model.layers, rng)
    net = hwsim.load_model(model)
    assert [(l.kind, getattr(l, "axis", None)) for l in net.layers] == [
        ("affine", 0), ("conv2d", None), ("affine", 1), ("reshape", None)]
    assert _rel_err(net, model, rng.normal(size=(6, 8, 6, 4)).astype(np.float32)) <= 1e-4


def test_nested_keras_application_with_rescaling():
    """keras.applications.MobileNet used the transfer-learning way: nested in a model that adds a
    Rescaling layer and a new head (it was refused as a layer of type Functional)."""
    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(2)
    base = keras.applications.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.25, include_top=False)
    _random_bn(base.layers, rng)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10)(x)
    model = keras.Model(inp, out)
    net = hwsim.load_model(model)
    assert net.layers[1].name == "conv1" and net.output == model.layers[-1].name
    assert len(net.mac_layers) == 1 + 2 * 13 + 1
    assert _rel_err(net, model, rng.uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)) <= 1e-4


def test_nested_sequential_names_stay_unique():
    rng = np.random.default_rng(3)
    inner = keras.Sequential([keras.layers.Dense(5, name="d"), keras.layers.Dense(3, name="e")], name="inner")
    inp = keras.Input((7,))
    x = keras.layers.Dense(5, name="d")(inp)
    out = inner(x)
    model = keras.Model(inp, out)
    net = hwsim.load_model(model)
    assert [l.name for l in net.layers] == ["d", "inner/d", "e"]
    assert _rel_err(net, model, rng.normal(size=(4, 7)).astype(np.float32)) <= 1e-4


# ------------------------------------------------------------------------------------------ layering
def test_import_layering_holds():
    """kernels <- hwsim.graph <- quant <- frontends, cost, sweep, CLI: import-linter's contract in
    pyproject.toml (the same check .ci/run runs)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is not installed (it is in the dev extra): pip install import-linter"
    res = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


# ------------------------------------------------------------------------ ops checked against TensorFlow
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
@pytest.mark.parametrize("align_corners, half_pixel", [(False, False), (True, False), (False, True)])
def test_resize_equals_tensorflow(method, align_corners, half_pixel):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    fn = tf.compat.v1.image.resize_bilinear if method == "bilinear" else tf.compat.v1.image.resize_nearest_neighbor
    for h, w, H, W in ((4, 3, 7, 5), (7, 5, 11, 13), (9, 9, 4, 5), (3, 4, 1, 1), (6, 6, 12, 12)):
        x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
        layer = ir.Resize2D("r", ("input",), size=(H, W), method=method, align_corners=align_corners,
                            half_pixel_centers=half_pixel)
        want = fn(x, (H, W), align_corners=align_corners, half_pixel_centers=half_pixel).numpy()
        assert layer.output_shape([x.shape[1:]]) == want.shape[1:]
        np.testing.assert_allclose(layer.run([x]), want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("h, w, k, s, padding", [(5, 4, 3, 2, "same"), (5, 4, 3, 2, "valid"), (3, 5, 4, 3, "same"),
                                                 (3, 3, 1, 2, "same"), (6, 5, 3, 1, "same"), (4, 3, 5, 2, "valid")])
def test_conv2d_transpose_equals_keras(h, w, k, s, padding):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((h, w, 3))
    layer = keras.layers.Conv2DTranspose(4, k, strides=s, padding=padding)
    model = keras.Model(inp, layer(inp))
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, np.linspace(-1, 1, 4).astype(np.float32)])
    x = np.random.default_rng(1).normal(size=(2, h, w, 3)).astype(np.float32)
    ours = ir.Conv2DTranspose("t", ("input",), kernel=np.transpose(kernel, (0, 1, 3, 2)).copy(),
                              bias=np.linspace(-1, 1, 4), strides=s, padding=padding)
    want = model.predict(x, verbose=0)
    assert ours.output_shape([(h, w, 3)]) == want.shape[1:]
    np.testing.assert_allclose(ours.run([x], spec="fp32"), want, rtol=1e-5, atol=1e-5)


def test_mean_binary_leaky_relu():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    m = ir.Mean("m", ("input",), axes=(-1, 0), keepdims=True)
    assert m.output_shape([(3, 4, 5)]) == (1, 4, 1)
    np.testing.assert_allclose(m.run([x]), x.mean(axis=(1, 3), keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="axes .* invalid"):
        ir.Mean("m", ("input",), axes=(3,)).output_shape([(3, 4, 5)])
    b = x[:, :1, :1, :]
    assert ir.Binary("s", ("input", "g"), op="sub").output_shape([(3, 4, 5), (1, 1, 5)]) == (3, 4, 5)
    np.testing.assert_array_equal(ir.Binary("s", ("input", "g"), op="max").run([x, b]), np.maximum(x, b))
    with pytest.raises(ValueError, match="unknown binary op 'pow'; valid: sub, max, min"):
        ir.Binary("s", ("input", "g"), op="pow")
    with pytest.raises(ValueError, match="do not broadcast"):
        ir.Binary("s", ("input", "g")).output_shape([(3, 4, 5), (2, 5)])
    y = ir.LeakyRelu("l", ("input",), alpha=0.1).run([x])
    np.testing.assert_array_equal(y, np.where(x >= 0, x, x * np.float32(0.1)))
