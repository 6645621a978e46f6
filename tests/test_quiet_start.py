"""A quiet, honest first run: no TensorFlow / absl / CUDA start-up lines on stderr, kernels compiled before
a sweep fans out, and no ETA before a point has finished.

TensorFlow 2.21 writes its start-up notices from C++ before absl's logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` does not stop them; :mod:`quant.tfimport` filters file descriptor 2 while
TensorFlow loads. The CLI test runs the real command in a fresh process and reads its stderr.
"""

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hwsim import sweep as G
from hwsim import sweep_exec as X
from quant import tfimport

ROOT = Path(__file__).resolve().parents[1]

# what TensorFlow 2.21 printed on this project's CPU machine when imported and its model loaded
TF_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796558788.107311    4453 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796558788.107670    4453 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796558980.778646    3130 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796557978.151453    3130 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
NOISE_WORDS = ("absl", "cuInit", "cuda", "oneDNN", "cpu_feature_guard", "TensorFlow binary")


@pytest.mark.parametrize("line", TF_LINES)
def test_tensorflow_startup_lines_are_noise(line):
    assert tfimport.is_tf_noise(line)
    assert tfimport.is_tf_noise(line + "\n")


@pytest.mark.parametrize("line", [
    "/x/y.py:7: UserWarning: the model was saved with a newer Keras",
    "E0000 00:00:1796558980.778646    3130 graph.cc:52] Invalid argument: shape mismatch in node conv1",
    "F0000 00:00:1796558980.778646    3130 cuda_platform.cc:52] Check failed: cuda",   # fatal: always shown
    "Traceback (most recent call last):",
    "hwsim run: error: model file x.keras does not exist",
])
def test_what_a_user_must_see_is_kept(line):
    assert not tfimport.is_tf_noise(line)


def test_filtered_stderr_keeps_warnings_and_drops_noise(capfd):
    with tfimport.filtered_stderr():
        os.write(2, ("\n".join(TF_LINES) + "\n").encode())
        os.write(2, warnings.formatwarning("act on me", UserWarning, "model.py", 3).encode())  # as Python prints it
        os.write(2, b"E0000 00:00:1.2    1 graph.cc:5] real error\n")
    err = capfd.readouterr().err
    assert "act on me" in err and "real error" in err
    assert not any(w in err for w in NOISE_WORDS), err


def _quiet(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if any(w in l for w in NOISE_WORDS)]


def test_hwsim_run_prints_nothing_from_tensorflow(tmp_path):
    """The real command in a fresh process (the model file is loaded through Keras: TensorFlow loads)."""
    env = dict(os.environ, HWSIM_CACHE=str(tmp_path / "cache"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", "--model", "cifar_cnn", "--limit", "10"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "top-1 accuracy" in res.stdout
    assert _quiet(res.stderr) == [], res.stderr


def test_sweep_compiles_before_fanning_out(monkeypatch, tmp_path):
    """run_sweep warms every distinct configuration once, in the calling process, before any point is
    evaluated (so Dask workers load kernels from Numba's cache instead of compiling them together)."""
    calls = []
    monkeypatch.setattr(X, "warm_up", lambda settings, todo, **kw: calls.append(("warm", len(todo))))
    monkeypatch.setattr(X, "_run_serial", lambda *a: calls.append(("points",)))
    settings = X.make_settings(model=str(ROOT / "tests" / "golden" / "tiny_cnn.keras"), formats="fp32,fp8_e4m3",
                               accum="fp32", rounding="nearest,stochastic", seeds=2, limit=4)
    X.run_sweep(settings, tmp_path / "s", serial=True, progress=False, render=False)
    assert calls == [("warm", 6), ("points",)]


def test_warm_up_runs_each_configuration_once(monkeypatch):
    seen = []

    class Ctx:
        images = __import__("numpy").zeros((20, 32, 32, 3), "uint8")

        def network_for(self, w, a, spec):
            seen.append((w, a, spec.accum.name, spec.rounding))
            return "net"

        def cost(self, spec):
            return None

    monkeypatch.setattr(X, "context", lambda settings: Ctx())
    import hwsim.graph.runner as R
    runs = []
    monkeypatch.setattr(R, "forward", lambda net, x, specs, seed=None, offset=0: runs.append(len(x)))
    monkeypatch.setattr(R, "resolve_specs", lambda net, spec: {})
    todo = [G.Point("fp8_e4m3", "fp8_e4m3", "fp16", r, s) for r in ("nearest", "stochastic") for s in (0, 1)]
    labels = []
    n = X.warm_up({}, todo, on_config=lambda i, k, label: labels.append((i, k)))
    assert n == 2 and len(seen) == 2 and runs == [X.WARM_IMAGES] * 2
    assert labels == [(0, 2), (1, 2)]


def test_progress_says_compiling_and_gives_no_eta_before_a_point(monkeypatch):
    stream = io.StringIO()
    bar = X.Progress(4, 100, stream=stream)
    bar.warming(0, 3, "fp8, acc fp16, nearest")
    bar.start()
    bar.images(("p",), 50)
    bar._render(True)  # a forced render before any point finished
    bar.point(("p",), "p")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("compiling kernels: configuration 1/3")
    assert lines[1].endswith("ETA --")
    assert "ETA --" not in lines[2] and "ETA " in lines[2]


def test_sweep_records_the_versions_it_ran_with(tmp_path):
    settings = X.make_settings(model=str(ROOT / "tests" / "golden" / "tiny_cnn.keras"), formats="fp32",
                               accum="fp32", rounding="nearest", seeds=1, limit=4)
    X.run_sweep(settings, tmp_path / "s", serial=True, progress=False, figures=False)
    import json
    from importlib import metadata

    envs = json.loads((tmp_path / "s" / X.VERSIONS_FILE).read_text())["environments"]
    assert len(envs) == 1 and envs[0]["points"] == 1
    v = envs[0]["versions"]
    assert v["numpy"] == metadata.version("numpy") and v["numba"] == metadata.version("numba")
    assert v["tensorflow"] == metadata.version("tensorflow") and v["keras"] == metadata.version("keras")
    assert v["hwsim"] == metadata.version("hwsim")
    assert json.loads((tmp_path / "s" / X.RESULTS_JSON).read_text())["versions"] == envs
    X.run_sweep(settings, tmp_path / "s", serial=True, progress=False, figures=False)  # nothing new: unchanged
    assert json.loads((tmp_path / "s" / X.VERSIONS_FILE).read_text())["environments"] == envs


def test_warm_groups_split_whole_kernel_groups():
    """The default sweep's configurations split over two workers: every configuration once, each kernel
    group on one worker only (so no kernel compiles twice), both workers busy."""
    configs = [p.config for p in X.grid_of(X.make_settings(limit=4)).points]
    bins = X.warm_groups(configs, 2)
    assert len(bins) == 2 and all(bins)
    assert sorted(c for b in bins for c in b) == sorted(set(configs))
    groups = [{X.kernel_group(c) for c in b} for b in bins]
    assert not groups[0] & groups[1]
    assert X.kernel_group(("int8", "int8", "int32", "nearest")) == "exact"
    assert X.kernel_group(("fp8_e4m3", "fp8_e4m3", "fp16", "nearest")) in ("HALF_F16", "NEAREST")
    one = X.warm_groups(configs, 1)
    assert len(one) == 1 and sorted(one[0]) == sorted(set(configs))


def test_hwsim_run_of_a_tflite_model_is_quiet(tmp_path):
    """An int8 .tflite model: loading it opens the default interpreter (to check XNNPACK's partition), whose
    delegate notice is filtered like TensorFlow's start-up lines."""
    from hwsim.frontends.tflite import convert_keras
    from quant.tfimport import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((32, 32, 3)), k.layers.Conv2D(4, 3, activation="relu"),
                          k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)])
    import numpy as np

    path = convert_keras(model, np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 3)), tmp_path / "m.tflite")
    env = dict(os.environ, HWSIM_CACHE=str(tmp_path / "cache"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    res = subprocess.run([sys.executable, "-m", "hwsim.cli", "run", "--model", str(path), "--limit", "10"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "top-1 accuracy" in res.stdout
    assert "XNNPACK" not in res.stderr and _quiet(res.stderr) == [], res.stderr
