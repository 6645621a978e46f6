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

from .formats import E8M0, FAMILIES, FORMATS, FixedFormat, FloatFormat, MXFormat, parse_format
from .mac import PRESETS, MacSpec
from .ops import MacStats, conv2d, depthwise_conv2d, matmul
from .quantize import OVERFLOW_MODES, ROUNDING_MODES, quantize

__all__ = ["parse_format", "FixedFormat", "FloatFormat", "MXFormat", "E8M0", "FORMATS", "FAMILIES",
           "quantize", "ROUNDING_MODES", "OVERFLOW_MODES", "MacSpec", "PRESETS", "MacStats",
           "matmul", "conv2d", "depthwise_conv2d"]
