"""The trained zoo models through TF-Lite: converted with full-integer quantization (calibrated on
100 CIFAR-10 train images), the emulator equals tf.lite.Interpreter on CIFAR-10 test images --
100 images with the interpreter's default arithmetic (XNNPACK), 32 with its reference kernels.
Skipped until ``hwsim/models/{name}.keras`` exist; bench/tflite_exactness.py runs the full 1,000."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import hwsim  # noqa: E402
from hwsim import zoo  # noqa: E402
from hwsim.frontends import tflite  # noqa: E402
from hwsim.frontends.tflite import load_tflite  # noqa: E402
from tests._tflite_util import interpreter_outputs  # noqa: E402


@pytest.fixture(scope="module")
def cifar():
    from hwsim.data import load_cifar10

    return load_cifar10("test")[0], load_cifar10("train")[0]


@pytest.mark.parametrize("name", ["cifar_cnn", "mobilenet"])
def test_zoo_model_equals_interpreter(name, cifar, tmp_path):
    if not zoo.model_path(name).is_file():
        pytest.skip(f"trained {name} not present ({zoo.model_path(name)})")
    test_x, train_x = cifar
    path = tflite.convert_keras(zoo.load_keras(name), train_x[:100], tmp_path / f"{name}.tflite")
    for kernels, n in (("xnnpack", 100), ("reference", 32)):
        x = test_x[:n]
        got = hwsim.run(load_tflite(path, kernels=kernels), x)
        want = interpreter_outputs(path.read_bytes(), kernels, x.astype(np.float32))
        assert got.shape == want.shape == (n, 10)
        equal = float((got == want).mean())
        assert equal >= 0.999, f"{name} {kernels}: {equal:.4%} of output values equal"
        assert np.array_equal(got.argmax(1), want.argmax(1)), f"{name} {kernels}: top-1 differs"
