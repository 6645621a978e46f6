"""TensorFlow access for the TF-Lite frontend: the interpreter (the oracle and the file reader) and the
flatbuffer schema, with TensorFlow's import-time noise filtered (:mod:`quant.tfimport`)."""

from __future__ import annotations

from pathlib import Path


def quiet_tf():
    """The ``tensorflow`` module, imported quietly; the interpreter's deprecation warning filtered."""
    import warnings

    from quant.tfimport import tensorflow

    tf = tensorflow()
    warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated.*")
    return tf


def schema():
    """TF-Lite's flatbuffer schema module (``schema_py_generated``)."""
    quiet_tf()
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def interpreter(model, kernels: str = "xnnpack", preserve_all_tensors: bool = False):
    """A ``tf.lite.Interpreter`` (tensors allocated) for ``model`` (a path or the bytes) running the
    arithmetic ``kernels`` names: "xnnpack" = the default interpreter, "reference" = ``BUILTIN_REF``,
    "builtin" = ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``. The oracle the tests compare against."""
    tf = quiet_tf()
    R = tf.lite.experimental.OpResolverType
    kind = {"xnnpack": R.AUTO, "reference": R.BUILTIN_REF, "builtin": R.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if kernels not in kind:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(kind)}")
    from quant.tfimport import filtered_stderr

    content = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    with filtered_stderr():  # TF-Lite's "Created ... XNNPACK delegate" notice; its errors still come through
        it = tf.lite.Interpreter(model_content=bytes(content), experimental_op_resolver_type=kind[kernels],
                                 experimental_preserve_all_tensors=preserve_all_tensors)
        it.allocate_tensors()
    return it
