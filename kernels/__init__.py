"""kernels: the arithmetic core of hwsim.

* :mod:`kernels.formats`: number formats (integer, fixed point, floating point, OCP MX) and
  :func:`parse_format`;
* :mod:`kernels.quantize`: :func:`quantize`, rounding into a format with every rounding mode;
* :mod:`kernels.rng`: the counter-based generator behind stochastic rounding.
"""

from .formats import E8M0, FAMILIES, FORMATS, FixedFormat, FloatFormat, MXFormat, parse_format
from .quantize import OVERFLOW_MODES, ROUNDING_MODES, quantize

__all__ = ["parse_format", "FixedFormat", "FloatFormat", "MXFormat", "E8M0", "FORMATS", "FAMILIES",
           "quantize", "ROUNDING_MODES", "OVERFLOW_MODES"]
