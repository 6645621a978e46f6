"""Numba's on-disk cache for a whole package: an edit to any of its modules invalidates every cached kernel.

Numba's cache (``@njit(cache=True)``) stamps each compiled function with the SHA-256 of the one file that
defines it (``numba.core.caching._SourceFileBackedLocatorMixin.get_source_stamp``, numba 0.68) and reloads
the machine code while that file is unchanged. The kernels of :mod:`kernels.ops` and :mod:`kernels.quantize`
inline the njit helpers of :mod:`kernels._half`, :mod:`kernels.rng` and :mod:`kernels._core` and the LLVM IR
of :mod:`kernels._vec`: after an edit to only one of those, the cached kernels kept the old arithmetic and
gave the old results, silently (a new rounding helper, a new generator), until ``__pycache__`` or
``NUMBA_CACHE_DIR`` was cleared by hand.

:func:`track_package` gives the functions defined directly in a package directory the stamp of the whole
directory instead: the SHA-256 over the names and contents of all its ``.py`` files, read once when the
package is imported. Any edit then recompiles the package's kernels on their next first call (and rewrites
their cache entries); an unchanged package loads them as before. The pure-Python modules count too: njit
code freezes the module-level constants it reads (format tables, codes) at compile time. The price: after
any edit to ``kernels/``, the test suite compiles its kernels again (about two minutes here). It does so with Numba's own extension
point, cache locator classes (the ones Numba tries in turn, ``numba.core.caching.CacheImpl._locator_classes``):
one subclass of each of Numba's file-backed locators (``NUMBA_CACHE_DIR``, the in-tree ``__pycache__``, the
user-wide directory), tried first and declining every file outside the tracked directories, so other
packages' caches are untouched. A user who sets ``NUMBA_CACHE_LOCATOR_CLASSES`` replaces that list and
with it this tracking.
"""

from __future__ import annotations

import hashlib
import os

from numba.core import caching

#: tracked package directory (absolute, normalised) -> its stamp
_TRACKED: dict[str, str] = {}


def package_stamp(directory: str) -> str:
    """SHA-256 (hex) over the sorted names and the contents of the ``.py`` files directly in ``directory``:
    regular files (or links to them) whose names do not start with a dot, so an editor's lock file (Emacs's
    ``.#ops.py``, a dangling link) neither breaks ``import kernels`` nor changes the stamp."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".py") and not name.startswith(".") and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _directory(py_file: str) -> str:
    return os.path.normcase(os.path.dirname(os.path.realpath(py_file)))


class _PackageStamped:
    """Mixin before a Numba file-backed locator: only files of tracked directories, stamped per directory."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if _directory(py_file) not in _TRACKED:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return _TRACKED[_directory(self._py_file)]


LOCATORS = tuple(type(f"Package{base.__name__}", (_PackageStamped, base), {"__module__": __name__})
                 for base in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator,
                              caching.UserWideCacheLocator))


def track_package(directory: str) -> str:
    """Stamp the cached Numba functions defined in ``directory``'s modules with :func:`package_stamp` (see the
    module docstring). Call it before those modules are imported: Numba picks a function's locator when the
    ``cache=True`` decorator runs. Returns the stamp."""
    key = os.path.normcase(os.path.realpath(directory))
    _TRACKED[key] = package_stamp(key)
    classes = caching.CacheImpl._locator_classes
    if classes[:len(LOCATORS)] != list(LOCATORS):
        classes[:0] = LOCATORS
    return _TRACKED[key]
