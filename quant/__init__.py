"""quant: maps trained networks onto number formats (scales, calibration) and imports TF-Lite int8 models."""

from .ptq import quantize_model  # noqa: E402,F401
from .tflite import load_tflite  # noqa: E402,F401
