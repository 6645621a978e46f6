"""The one way hwsim loads TensorFlow and Keras: lazily, and without TensorFlow's start-up noise.

On a CPU-only machine, loading TensorFlow (2.21) writes to the process's stderr from C++: absl's
"All log messages before absl::InitializeLog() is called are written to STDERR", oneDNN and CPU-feature
notices, and its CUDA probing ("Could not find cuda drivers", "failed call to cuInit: ... UNKNOWN
ERROR (303)"). A new user reads these as failures. ``TF_CPP_MIN_LOG_LEVEL=3`` does not stop them in
TensorFlow 2.21 (measured: the same six lines with it set in the shell), because they are written
before absl's logging is initialised.

:func:`tensorflow` and :func:`keras` therefore import the module, and initialise TensorFlow's devices
(where the CUDA probe runs), with file descriptor 2 redirected to a temporary file; afterwards every
captured line is written back to stderr except the notices above (:func:`is_tf_noise`). Python warnings
raised meanwhile, TensorFlow's errors and anything else pass through, so what a user should act on
still appears. Nothing is done when TensorFlow is already loaded. Modules that need TensorFlow import it
through here, only where a model file or the TF-Lite interpreter needs it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

__all__ = ["tensorflow", "keras", "is_tf_noise", "filtered_stderr"]

_ABSL_PRELUDE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# glog / absl format: severity letter, MMDD, time, thread id, file:line]
_GLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w./+-]+:\d+\] ")
_CUDA = re.compile(r"cuda|cuInit|CUDA|GPU will not be used|TensorRT", re.IGNORECASE)
_CPU_HINT = re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler "
                       r"flags\.$")
# TF-Lite's notice when the default interpreter applies its XNNPACK delegate (hwsim opens one to check the
# delegate's partition of every .tflite model it loads)
_XNNPACK_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def is_tf_noise(line: str) -> bool:
    """True for TensorFlow's start-up notices: absl's prelude line, its info / warning log lines, the
    CPU-instructions hint, error lines of the CUDA probe, and TF-Lite's XNNPACK-delegate notice. Fatal lines
    and other errors are kept."""
    s = line.rstrip("\n")
    if s in (_ABSL_PRELUDE, _XNNPACK_NOTICE) or _CPU_HINT.match(s):
        return True
    m = _GLOG.match(s)
    if not m:
        return False
    return m.group(1) in "IW" or (m.group(1) == "E" and bool(_CUDA.search(s)))


@contextmanager
def filtered_stderr():
    """Redirect file descriptor 2 (where TensorFlow's C++ code writes) to a temporary file for the block,
    then write back every captured line that :func:`is_tf_noise` does not drop (in order, to
    ``sys.stderr``, which normally is descriptor 2 too: Python warnings raised in the block come back)."""
    fd = 2
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):  # no usable sys.stderr
        pass
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not is_tf_noise(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def tensorflow():
    """``import tensorflow``, quietly (module docstring); returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe runs here, inside the filter
    return tf


def keras():
    """``import keras`` (Keras 3 on TensorFlow), quietly; returns the module."""
    tensorflow()
    import keras as k

    return k
