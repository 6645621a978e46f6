"""The README's Python kernel example runs as written, and its numbers are the ones the text claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_kernel_api_example_runs_and_matches_comments(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    ns = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)  # noqa: S102 - our own documentation
    q = ns["kernels"].quantize(ns["x"], "fp8_e4m3")
    assert q[2] == 288.0  # the comment in the example: 300 -> 288
    y, stats = ns["y"], ns["stats"]
    assert y.shape == (64, 32) and stats.overflowed == 0


def test_onnx_example_runs_and_matches_torch(tmp_path, monkeypatch):
    """The README's PyTorch / ONNX example, run in a scratch folder: its claims hold."""
    import numpy as np
    import onnxruntime as ort
    import torch

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = [b for b in blocks if "torch.onnx.export" in b]
    assert len(example) == 1
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(example[0], "README.md", "exec"), ns)  # noqa: S102 - our own documentation
    y, x = ns["y"], ns["x"]
    with torch.no_grad():
        want = ns["model"](torch.from_numpy(x)).numpy()
    ref = ort.InferenceSession("tiny.onnx").run(None, {"x": x})[0]
    for other in (want, ref):
        assert np.abs(y - other).max() <= 1e-4 * np.abs(other).max()
    kinds = [l.kind for l in ns["net"].layers]
    assert kinds[0] == "transpose" and "conv2d" in kinds and "affine" not in kinds  # NCHW in; batch norm folded
    assert not np.array_equal(ns["y_fp8"], y) and "TOTAL" in ns["report"]


def test_readme_names_both_commands():
    text = README.read_text()
    assert "pip install --require-hashes -r requirements-dev.lock" in text and "python -m pytest -q" in text
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "--require-hashes -r requirements-dev.lock" in ci


def test_lock_pins_every_package_with_hashes():
    """Every requirement of the dev lock is pinned (==) and carries at least one hash, and the oracles and
    the runtime packages the results depend on are in it."""
    lock = (Path(__file__).resolve().parents[1] / "requirements-dev.lock").read_text()
    reqs = re.findall(r"^([A-Za-z0-9_.-]+)(\S*) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", lock, re.M)
    names = {n.lower().replace("_", "-") for n, _, _ in reqs}
    assert all(spec.startswith("==") for _, spec, _ in reqs)
    heads = [l for l in lock.splitlines() if l and not l[0].isspace() and not l.startswith("#")]
    assert len(heads) == len(reqs), "a requirement without hashes"
    for need in ("numpy", "numba", "tensorflow", "keras", "ml-dtypes", "torch", "qtorch", "apytypes", "gfloat",
                 "hypothesis", "pytest", "dask", "distributed", "scipy", "matplotlib", "pillow"):
        assert need in names, need
