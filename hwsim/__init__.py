"""hwsim: run networks on an emulated low-precision MAC array and report accuracy, cycles and energy.

Layering: ``kernels`` (arithmetic) <- ``hwsim.graph`` (IR, ops, execution) <- ``quant`` (mapping networks
onto formats) <- ``hwsim.frontends``, the cost model, the sweep, the CLI (checked by import-linter: the
contract is in pyproject.toml). The public names below are imported lazily so ``import hwsim`` stays cheap
(TensorFlow is only loaded by the parts that need it).
"""

import os as _os

_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see kernels/__init__.py: set before numpy loads

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Network": "hwsim.graph.ir",
    "load_model": "hwsim.frontends",
    "run": "hwsim.graph.runner",
    "accuracy": "hwsim.graph.runner",
    "load_cifar10": "hwsim.data",
    "ArrayConfig": "hwsim.array",
    "EnergyTable": "hwsim.energy",
    "cost": "hwsim.cost",
    "pe_area_um2": "hwsim.pe",
    "AreaTable": "hwsim.area",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwsim' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
