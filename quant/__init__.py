"""quant: maps trained networks onto number formats: scales, calibration, requantization.

It works on the graph layer's IR (:mod:`hwsim.graph`) and is used by the frontends (the TF-Lite
importer, :mod:`hwsim.frontends.tflite`, builds its quantized layers from :mod:`quant.requant`)."""

from .ptq import quantize_model  # noqa: E402,F401
