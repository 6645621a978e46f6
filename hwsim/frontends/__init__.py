"""Model frontends: one module per model format, each turning its files (or live objects) into a
:class:`hwsim.graph.ir.Network`; :func:`load_model` picks one through :data:`FRONTENDS`.

=================  ==========================================  ======================================
frontend           accepts                                     module
=================  ==========================================  ======================================
``keras``          ``.keras`` / ``.h5`` files, a zoo name,      :mod:`hwsim.frontends.keras`
                   a ``keras.Model``
``tflite``         ``.tflite`` files (int8, float)              :mod:`hwsim.frontends.tflite`
``onnx``           float ``.onnx`` files                        :mod:`hwsim.frontends.onnx`
=================  ==========================================  ======================================

A frontend module provides ``load(source) -> Network``. Graph rewrites every frontend can use (batch
norm folding, activation fusion) are in :mod:`hwsim.graph.passes`.
"""

from __future__ import annotations

import os
from importlib import import_module
from pathlib import Path

#: file suffix -> frontend module (under hwsim.frontends)
FRONTENDS = {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx"}
SUFFIXES = tuple(FRONTENDS)


def frontend_for(source) -> str:
    """The name of the frontend that reads ``source`` (a path, a zoo name or a model object); ``ValueError``
    names the source and lists what is accepted."""
    from hwsim import zoo

    if not isinstance(source, (str, os.PathLike)):
        if type(source).__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return "keras"
        raise ValueError(f"cannot load a model from a {type(source).__name__}; give a path ({', '.join(SUFFIXES)}), "
                         f"a zoo name ({', '.join(zoo.NAMES)}) or a keras.Model")
    s = os.fspath(source)
    if s in zoo.NAMES:
        return "keras"
    suffix = Path(s).suffix.lower()
    if suffix not in FRONTENDS:
        raise ValueError(f"model {s!r} is neither a zoo name ({', '.join(zoo.NAMES)}) nor a file of a supported kind "
                         f"({', '.join(SUFFIXES)})")
    return FRONTENDS[suffix]


def load_model(source):
    """The IR of ``source``: a zoo name (``cifar_cnn``, ``mobilenet``), a model file of any kind in
    :data:`FRONTENDS`, or a ``keras.Model``. A missing file raises ``FileNotFoundError`` with the path,
    a corrupt one ``ValueError`` naming it."""
    name = frontend_for(source)
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) not in _zoo_names():
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"model file {p} does not exist")
    return import_module(f"hwsim.frontends.{name}").load(source)


def _zoo_names():
    from hwsim import zoo

    return zoo.NAMES
