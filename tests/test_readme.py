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
