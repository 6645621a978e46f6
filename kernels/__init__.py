"""kernels: the arithmetic core of hwsim.

* :mod:`kernels.formats`: number formats (integer, fixed point, floating point, OCP MX) and
  :func:`parse_format`;
* :mod:`kernels.quantize`: :func:`quantize`, rounding into a format with every rounding mode;
* :mod:`kernels.rng`: the counter-based generator behind stochastic rounding;
* :mod:`kernels.mac`: :class:`MacSpec`, one MAC unit, and the exact MAC semantics;
* :mod:`kernels.ops`: the fast kernels :func:`matmul`, :func:`conv2d`, :func:`depthwise_conv2d`;
* :mod:`kernels.reference`: the slow literal reference the tests hold the fast kernels to.
"""

import os as _os

# OpenBLAS's worker threads busy-wait for a while after every BLAS call (OPENBLAS_THREAD_TIMEOUT,
# about 2**28 cycles by default). The Numba kernels often run right after one (the exact integer
# path and numpy work between layers) and lost about a third of their throughput to the spinning
# threads (bench: 2.9 -> 1.9 GMAC/s on 2 cores). Unless the user chose a value, let them sleep at once.
# OpenBLAS reads the variable when it loads, so this only acts if numpy was not imported before.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _keep_heap() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    A network run allocates and frees the same few tensor sizes (1-16 MB) layer after layer. glibc
    serves blocks above its mmap threshold (dynamic, at most 32 MiB) with fresh mappings and trims the
    heap top above 2x that threshold, so the memory went back to the kernel, and each reuse cost a page
    fault per 4 KiB page. mobilenet bf16_fp32, 1000 images (2-core AMD EPYC VM, --avx2): 120,000 minor
    faults and 598 img/s per run; with ``M_MMAP_THRESHOLD`` = 32 MiB and ``M_TRIM_THRESHOLD`` = 256 MiB
    (``mallopt(3)``) 0 faults and 734 img/s. The cost: up to 256 MiB of freed heap stays mapped.

    Skipped when ``HWSIM_KEEP_HEAP=0``, when ``GLIBC_TUNABLES`` already sets a ``glibc.malloc`` tunable,
    and on a C library without ``mallopt`` (then nothing changes but the speed). Returns whether both
    settings took."""
    if _os.environ.get("HWSIM_KEEP_HEAP", "1") == "0" or "glibc.malloc." in _os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


#: whether :func:`_keep_heap` changed malloc's thresholds in this process
KEEP_HEAP = _keep_heap()

from ._cache import track_package as _track_package

#: Numba's cached kernels are recompiled when any module of this package changes, not only their own
#: (:mod:`kernels._cache`); before the modules with ``cache=True`` functions load
SOURCE_STAMP = _track_package(_os.path.dirname(_os.path.abspath(__file__)))

from .formats import E8M0, FAMILIES, FORMATS, FixedFormat, FloatFormat, MXFormat, parse_format
from .mac import PRESETS, MacSpec
from .ops import MacStats, conv2d, depthwise_conv2d, matmul
from .quantize import OVERFLOW_MODES, ROUNDING_MODES, quantize

__all__ = ["parse_format", "FixedFormat", "FloatFormat", "MXFormat", "E8M0", "FORMATS", "FAMILIES",
           "quantize", "ROUNDING_MODES", "OVERFLOW_MODES", "MacSpec", "PRESETS", "MacStats",
           "matmul", "conv2d", "depthwise_conv2d"]
