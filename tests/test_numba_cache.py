"""Numba's on-disk cache of the kernels follows every module of :mod:`kernels`, not only the one that defines
a kernel (:mod:`kernels._cache`): an edit to an inlined helper must not leave the old machine code cached."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import kernels
from kernels import _cache, ops

INIT = """\
import os
if os.environ.get("TRACK") == "1":
    from kernels._cache import track_package
    track_package(os.path.dirname(os.path.abspath(__file__)))
"""
HELPER = "from numba import njit\n\n\n@njit(cache=True)\ndef helper(x):\n    return x + {}\n"
KERNEL = "from numba import njit\n\nfrom .b import helper\n\n\n@njit(cache=True)\ndef kernel(x):\n    return helper(x) * 2\n"
RUN = textwrap.dedent("""\
    import pkg.a
    v = pkg.a.kernel(1)
    print(v, sum(pkg.a.kernel.stats.cache_hits.values()))
""")


def _run(root, cache, track=True):
    env = dict(os.environ, PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(cache), TRACK="1" if track else "0")
    res = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    value, hits = res.stdout.split()
    return int(value), int(hits)


def _package(root, add):
    pkg = root / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(INIT)
    (pkg / "a.py").write_text(KERNEL)
    (pkg / "b.py").write_text(HELPER.format(add))


def test_an_edit_to_a_helper_module_recompiles_the_cached_kernel(tmp_path):
    """a.py's cached kernel inlines b.py's helper; only b.py changes. Tracked, the kernel gives the new
    value; an unchanged package is loaded from the cache (a hit, no recompilation)."""
    _package(tmp_path, 1)
    assert _run(tmp_path, tmp_path / "cache") == (4, 0)  # compiled and cached
    assert _run(tmp_path, tmp_path / "cache") == (4, 1)  # unchanged: loaded from the cache
    (tmp_path / "pkg" / "b.py").write_text(HELPER.format(2))
    assert _run(tmp_path, tmp_path / "cache") == (6, 0)  # b.py changed: recompiled, not the stale 4
    assert _run(tmp_path, tmp_path / "cache") == (6, 1)


def test_untracked_packages_keep_numbas_own_locators(tmp_path):
    """Files outside a tracked directory get Numba's locators and stamps (other packages are untouched)."""
    _package(tmp_path, 1)
    assert _run(tmp_path, tmp_path / "cache", track=False) == (4, 0)
    assert _run(tmp_path, tmp_path / "cache", track=False) == (4, 1)
    for loc in _cache.LOCATORS:
        assert loc.from_function(_run, str(tmp_path / "pkg" / "a.py")) is None


def test_the_kernels_package_is_tracked():
    """The real kernels carry the whole package's stamp, of every .py file in kernels/."""
    here = os.path.dirname(os.path.abspath(kernels.__file__))
    assert kernels.SOURCE_STAMP == _cache.package_stamp(here)
    names = sorted(n for n in os.listdir(here) if n.endswith(".py"))
    assert {"ops.py", "_half.py", "_vec.py", "rng.py", "_core.py", "quantize.py"} <= set(names)
    locator = ops._abs_range_kernel32._cache._impl._locator
    assert isinstance(locator, _cache.LOCATORS)
    assert locator.get_source_stamp() == kernels.SOURCE_STAMP


def test_editor_files_neither_break_nor_change_the_stamp(tmp_path):
    """An Emacs lock file (a dangling link named ``.#a.py``), a dot file and a directory named ``*.py`` are not
    sources: ``import kernels`` must not fail on them while someone edits, and the stamp ignores them."""
    _package(tmp_path, 1)
    pkg = tmp_path / "pkg"
    before = _cache.package_stamp(str(pkg))
    os.symlink("user@host.1234:1700000000", pkg / ".#a.py")
    (pkg / ".hidden.py").write_text("x = 1\n")
    (pkg / "data.py").mkdir()
    assert _cache.package_stamp(str(pkg)) == before
    (pkg / "b.py").write_text(HELPER.format(3))
    assert _cache.package_stamp(str(pkg)) != before
