"""kernels: the arithmetic core of hwsim.

* :mod:`kernels.formats`: number formats (integer, fixed point, floating point, OCP MX) and
  :func:`parse_format`;
* :mod:`kernels.quantize`: :func:`quantize`, rounding into a format with every rounding mode;
* :mod:`kernels.rng`: the counter-based generator behind stochastic rounding;
* :mod:`kernels.mac`: :class:`MacSpec`, one MAC unit, and the exact MAC semantics;
* :mod:`kernels.ops`: the fast kernels :func:`matmul`, :func:`conv2d`, :func:`depthwise_conv2d`;
* :mod:`kernels.reference`: the slow literal reference the tests hold the fast kernels to.
"""

from .formats import E8M0, FAMILIES, FORMATS, FixedFormat, FloatFormat, MXFormat, parse_format
from .mac import PRESETS, MacSpec
from .ops import MacStats, conv2d, depthwise_conv2d, matmul
from .quantize import OVERFLOW_MODES, ROUNDING_MODES, quantize

__all__ = ["parse_format", "FixedFormat", "FloatFormat", "MXFormat", "E8M0", "FORMATS", "FAMILIES",
           "quantize", "ROUNDING_MODES", "OVERFLOW_MODES", "MacSpec", "PRESETS", "MacStats",
           "matmul", "conv2d", "depthwise_conv2d"]
