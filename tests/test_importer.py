"""Keras importer + runner: float32 fidelity against Keras itself, graph rewriting, errors."""

import numpy as np
import pytest

import keras

import hwsim
from kernels import MacSpec
from hwsim.graph import ir, runner
from hwsim.graph.runner import resolve_specs


def _random_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            w = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, w[0].shape), rng.normal(0, 0.1, w[1].shape),
                               rng.normal(0, 0.1, w[2].shape), rng.uniform(0.5, 1.5, w[3].shape)])


@pytest.fixture(scope="module")
def branchy():
    """A functional model using every supported layer kind, with non-trivial batch-norm statistics."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(x)  # named: Keras numbers
    # unnamed layers with a process-wide counter, so the default name depends on the tests run before
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(8, 1)(y)
    z = keras.layers.MaxPooling2D()(x)
    z = keras.layers.Add()([y, z])
    z = keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(z)
    z = keras.layers.AveragePooling2D(3, strides=2, padding="same")(z)
    f = keras.layers.Flatten()(z)
    f = keras.layers.Dropout(0.3)(f)
    f = keras.layers.Dense(12, activation="relu")(f)
    f = keras.layers.Reshape((3, 4))(f)
    f = keras.layers.Flatten()(f)
    out = keras.layers.Dense(5)(f)
    out = keras.layers.Activation("softmax")(out)
    m = keras.Model(inp, out, name="branchy")
    _random_bn(m, np.random.default_rng(1))
    return m


def test_graph_rewrites(branchy):
    net = hwsim.load_model(branchy)
    kinds = [l.kind for l in net.layers]
    assert "affine" in kinds and kinds.count("affine") == 1  # only the Rescaling is left; both BNs folded
    conv = net["stem_conv"]
    assert conv.activation == "relu6" and conv.bias is not None  # BN folded (bias created), ReLU6 fused
    assert net["dw"].activation == "relu"
    assert net[net.output].kind == "dense" and net[net.output].activation == "softmax"
    assert not any(l.name.startswith("dropout") for l in net.layers)
    assert net.shapes[net.output] == (5,)


def test_fp32_matches_keras_predict(branchy):
    net = hwsim.load_model(branchy)
    imgs = np.random.default_rng(2).integers(0, 256, (9, 16, 16, 3)).astype(np.uint8)
    ref = branchy.predict(imgs.astype(np.float32), verbose=0)
    got = hwsim.run(net, imgs, mac="fp32", batch_size=4)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_narrow_spec_changes_outputs_but_stays_close(branchy):
    net = hwsim.load_model(branchy)
    imgs = np.random.default_rng(3).integers(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    f32 = hwsim.run(net, imgs, mac="fp32")
    f8 = hwsim.run(net, imgs, mac="fp8_e4m3_fp16")
    assert not np.array_equal(f8, f32)  # the format is really applied
    assert np.abs(f8 - f32).max() < 0.1  # ... and is a faithful low-precision version (probabilities)


def test_stochastic_results_independent_of_batch_size(branchy):
    net = hwsim.load_model(branchy)
    imgs = np.random.default_rng(4).integers(0, 256, (7, 16, 16, 3)).astype(np.uint8)
    spec = MacSpec("fp8_e4m3", "e5m6", rounding="stochastic")
    a = hwsim.run(net, imgs, mac=spec, batch_size=7, seed=11)
    b = hwsim.run(net, imgs, mac=spec, batch_size=2, seed=11)
    c = hwsim.run(net, imgs, mac=spec, batch_size=7, seed=12)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_large_batches_run_in_slices_with_the_same_results(branchy, monkeypatch):
    """A batch whose layer outputs exceed ``runner.SLICE_ELEMENTS`` runs in slices of whole images, each with
    its own counter offset: the stochastic results equal the unsliced batch's."""
    net = hwsim.load_model(branchy)
    imgs = np.random.default_rng(4).integers(0, 256, (7, 16, 16, 3)).astype(np.uint8)
    spec = MacSpec("fp8_e4m3", "e5m6", rounding="stochastic")
    whole = hwsim.run(net, imgs, mac=spec, batch_size=7, seed=11)
    largest = max(int(np.prod(s)) for s in net.shapes.values())
    monkeypatch.setattr(runner, "SLICE_ELEMENTS", 2 * largest + 1)  # two images per slice
    sizes, one_slice = [], runner._forward
    monkeypatch.setattr(runner, "_forward", lambda n, x, *a: sizes.append(len(x)) or one_slice(n, x, *a))
    sliced = hwsim.run(net, imgs, mac=spec, batch_size=7, seed=11)
    assert sizes == [2, 2, 2, 1]
    assert np.array_equal(sliced, whole)


def test_grouped_convolution_stochastic_counters_do_not_depend_on_the_slice(monkeypatch):
    """Each group of a grouped Conv2D counts its own outputs, so its first counter for a slice starting at
    image i is i * OH * OW * (O / groups): sliced and whole batches agree (a review found a grouped conv
    shifted by the other groups' outputs)."""
    rng = np.random.default_rng(0)
    conv = ir.Conv2D(name="g", inputs=(ir.INPUT,), kernel=rng.standard_normal((3, 3, 2, 6)).astype(np.float32),
                     bias=None, padding="same", groups=2)
    net = ir.Network("grouped", (8, 8, 4), [conv])
    specs = {"g": MacSpec("bf16", "bf16", rounding="stochastic")}
    x = rng.standard_normal((6, 8, 8, 4)).astype(np.float32)
    whole = runner.forward(net, x, specs, seed=7)
    monkeypatch.setattr(runner, "SLICE_ELEMENTS", 8 * 8 * 6 * 2)  # two images per slice
    assert np.array_equal(runner.forward(net, x, specs, seed=7), whole)
    assert not np.array_equal(runner.forward(net, x, specs, seed=8), whole)


def test_per_layer_specs(branchy):
    net = hwsim.load_model(branchy)
    names = [l.name for l in net.mac_layers]
    specs = resolve_specs(net, {"*": "fp32", names[0]: "bf16_fp32"})
    assert specs[names[0]].name == "bf16_fp32" and specs[names[1]].name == "fp32"
    with pytest.raises(ValueError, match="unknown layers.*nope"):
        resolve_specs(net, {"nope": "fp32", "*": "fp32"})
    with pytest.raises(ValueError, match=f"no MAC spec for layer '{names[1]}'"):
        resolve_specs(net, {names[0]: "fp32"})
    with pytest.raises(ValueError, match="unknown MAC preset 'int3_int9'"):
        resolve_specs(net, "int3_int9")


def test_unsupported_layer_names_layer_type_and_list():
    inp = keras.Input((4, 4, 2))
    out = keras.layers.Cropping2D(1, name="crop")(inp)
    m = keras.Model(inp, out)
    with pytest.raises(ValueError, match=r"'crop' of type Cropping2D; supported types: .*Conv2D"):
        hwsim.load_model(m)


def test_bad_images_shape(branchy):
    net = hwsim.load_model(branchy)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8, 3\).*expects \(N, 16, 16, 3\)"):
        hwsim.run(net, np.zeros((2, 8, 8, 3), np.uint8))


def test_corrupt_and_missing_model_files(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="broken.keras.*corrupt"):
        hwsim.load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        hwsim.load_model(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="neither a zoo name"):
        hwsim.load_model("resnet9000")


def test_saved_file_roundtrip(branchy, tmp_path):
    path = tmp_path / "m.keras"
    branchy.save(path)
    net = hwsim.load_model(path)
    imgs = np.random.default_rng(5).integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    np.testing.assert_allclose(hwsim.run(net, imgs), branchy.predict(imgs.astype(np.float32), verbose=0),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["MobileNet", "MobileNetV2"])
def test_keras_applications_fp32_fidelity(arch):
    """keras.applications MobileNet / MobileNetV2, random weights, 224x224: same argmax, float32-close logits."""
    keras.utils.set_random_seed(7)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(224, 224, 3), classes=10,
                                              classifier_activation=None)
    _random_bn(model, np.random.default_rng(8))
    net = hwsim.load_model(model)
    assert all(l.kind != "affine" for l in net.layers)  # every BN folded
    x = np.random.default_rng(9).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    got = hwsim.run(net, x, mac="fp32")
    assert (got.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_layers_called_again_outside_the_model_still_import():
    """Keras keeps a node per call of a layer; calls outside the model's own graph must not count as sharing."""
    seq = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(4)])
    seq(keras.Input((6, 6, 2)))  # a second call site for every layer
    net = hwsim.load_model(seq)
    assert [l.kind for l in net.layers] == ["conv2d", "reshape", "dense"]
    x = np.random.default_rng(6).normal(size=(3, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(hwsim.run(net, x), seq.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    inp = keras.Input((4,))
    d = keras.layers.Dense(4, name="twice")
    shared = keras.Model(inp, d(d(inp)))
    with pytest.raises(ValueError, match="'twice' is shared"):
        hwsim.load_model(shared)
