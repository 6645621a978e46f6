"""PyTorch models in hwsim, through ONNX: a ``torch.nn.Module``, a TorchScript ``.pt`` file or a
``torch.export`` ``.pt2`` file is exported to ONNX in memory (no file is written) and imported by
:mod:`hwsim.frontends.onnx`; the network takes and returns NCHW tensors as the module does.

* a module or a TorchScript file: ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``) traced
  with ``example_input`` (a tensor or array of the module's input shape; any batch size), the batch
  axis dynamic;
* a ``.pt2`` ExportedProgram: ``torch.onnx.export(program, dynamo=True)`` (needs ``onnxscript``: the
  ``torch`` extra), with the program's own example inputs.

The module is exported in eval mode (batch norms use their running statistics, dropout is off).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from hwsim.graph import ir


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch models need torch: pip install 'hwsim[torch]'") from None
    return torch


def _example(example_input, what):
    torch = _torch()
    if example_input is None:
        raise ValueError(f"{what}: give example_input= (a tensor or array shaped like the model's input, e.g. "
                         "(1, 3, 32, 32)) to export it")
    x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(np.asarray(example_input))
    if x.dtype != torch.float32 or x.ndim < 2:
        raise ValueError(f"{what}: example_input must be a float32 tensor with a batch axis first, got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    return x[:1]


def _from_module(module, example_input, what) -> ir.Network:
    import onnx

    from .onnx import load_onnx

    torch = _torch()
    x = _example(example_input, what)
    was_training = getattr(module, "training", False)
    if was_training and not isinstance(module, torch.jit.ScriptModule):
        module.eval()
    buf = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:
        raise ValueError(f"{what}: torch.onnx.export failed ({type(exc).__name__}: {str(exc).strip()[:300]})") from None
    finally:
        if was_training and not isinstance(module, torch.jit.ScriptModule):
            module.train()
    return load_onnx(onnx.load_from_string(buf.getvalue()), name=what)


def _from_program(path) -> ir.Network:
    from .onnx import load_onnx

    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: corrupt or not a torch.export program ({type(exc).__name__}: {exc})") from None
    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError:
        raise ImportError(f"{path}: exporting a .pt2 program needs onnxscript: pip install 'hwsim[torch]'") from None
    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
    except Exception as exc:
        raise ValueError(f"{path}: torch.onnx.export failed ({type(exc).__name__}: {str(exc).strip()[:300]})") from None
    return load_onnx(onnx_program.model_proto, name=str(path))


class _quiet:
    """Silence torch.onnx's progress prints and warnings on stdout / stderr while exporting."""

    def __enter__(self):
        import contextlib
        import logging
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        self._log = logging.getLogger("torch.onnx")
        self._level = self._log.level
        self._log.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        self._log.setLevel(self._level)
        self._stack.close()


def load(source, example_input=None, **options) -> ir.Network:
    """The frontend entry point (:mod:`hwsim.frontends`): a module, a ``.pt`` or a ``.pt2`` (module docstring)."""
    from . import check_options

    check_options(options, "PyTorch", ("example_input",))
    torch = _torch()
    if isinstance(source, torch.nn.Module):
        return _from_module(source, example_input, type(source).__name__)
    p = Path(os.fspath(source))
    if not p.is_file():
        raise FileNotFoundError(f"PyTorch model not found: {p}")
    if p.suffix == ".pt2":
        return _from_program(p)
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ValueError(f"{p}: corrupt or not a TorchScript file ({type(exc).__name__}: {str(exc).strip()[:200]})") from None
    return _from_module(module, example_input, str(p))
