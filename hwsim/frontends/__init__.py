"""Model frontends: one module per model format, each turning its files (or live objects) into a
:class:`hwsim.graph.ir.Network`; :func:`load_model` picks one through :data:`FRONTENDS`.

=================  ==========================================  ======================================
frontend           accepts                                     module
=================  ==========================================  ======================================
``keras``          ``.keras`` / ``.h5`` files, a zoo name,      :mod:`hwsim.frontends.keras`
                   a ``keras.Model``
``tflite``         ``.tflite`` files (int8, float)              :mod:`hwsim.frontends.tflite`
``onnx``           ``.onnx`` files (float, QDQ)                 :mod:`hwsim.frontends.onnx`
``torch``          a ``torch.nn.Module``, TorchScript ``.pt``,  :mod:`hwsim.frontends.torch`
                   ``torch.export`` ``.pt2`` (through ONNX)
=================  ==========================================  ======================================

A frontend module provides ``load(source, **options) -> Network`` (``hwsim.load_model(m, example_input=x)``
passes ``example_input`` to the torch frontend). Graph rewrites every frontend can use (batch
norm folding, activation fusion) are in :mod:`hwsim.graph.passes`.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

#: file suffix -> frontend module (under hwsim.frontends)
FRONTENDS = {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx", ".pt": "torch", ".pt2": "torch"}
SUFFIXES = tuple(FRONTENDS)


def frontend_for(source) -> str:
    """The name of the frontend that reads ``source`` (a path, a zoo name or a model object); ``ValueError``
    names the source and lists what is accepted."""
    from hwsim import zoo

    if not isinstance(source, (str, os.PathLike)):
        if type(source).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return "keras"
        if any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(source).__mro__):
            return "torch"
        raise ValueError(f"cannot load a model from a {type(source).__name__}; give a path ({', '.join(SUFFIXES)}), "
                         f"a zoo name ({', '.join(zoo.NAMES)}), a keras.Model or a torch.nn.Module")
    s = os.fspath(source)
    if s in zoo.NAMES:
        return "keras"
    suffix = Path(s).suffix.lower()
    if suffix not in FRONTENDS:
        raise ValueError(f"model {s!r} is neither a zoo name ({', '.join(zoo.NAMES)}) nor a file of a supported kind "
                         f"({', '.join(SUFFIXES)})")
    return FRONTENDS[suffix]


def load_model(source, **options):
    """The IR of ``source``: a zoo name (``cifar_cnn``, ``mobilenet``), a model file of any kind in
    :data:`FRONTENDS`, a ``keras.Model`` or a ``torch.nn.Module`` (with ``example_input=``). A missing
    file raises ``FileNotFoundError`` with the path, a corrupt one ``ValueError`` naming it."""
    name = frontend_for(source)
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) not in _zoo_names():
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"model file {p} does not exist")
    return import_module(f"hwsim.frontends.{name}").load(source, **options)


def check_options(options: dict, what: str, allowed=()) -> None:
    """``ValueError`` naming any option a frontend does not take."""
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"{what} models take no option {', '.join(map(repr, bad))}"
                         + (f"; valid: {', '.join(allowed)}" if allowed else ""))


def _zoo_names():
    from hwsim import zoo

    return zoo.NAMES
