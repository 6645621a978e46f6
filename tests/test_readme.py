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
    assert 'pip install -e ".[dev]"' in text and "python -m pytest -q" in text
    assert "python -m pytest -q" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
