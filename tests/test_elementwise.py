"""The MAC layers' output stage (:mod:`kernels.elementwise`) and the process setting that keeps its buffers.

``bias_activate`` fuses the bias add and the activation into one pass for linear / relu / relu6; its twin is
numpy's ``activate(y + bias)``, and the two must agree bit for bit, NaN and signed zeros included."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kernels.elementwise import ACTIVATIONS, activate, bias_activate

_SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, 6.0, -6.0, 5.999999, 6.000001, 1e-45, -1e-45, 3e38, -3e38, 1.0, -1.0]


def _case(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    y = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = y.reshape(-1)
    flat[: len(_SPECIAL)] = np.array(_SPECIAL, dtype=dtype)[: flat.size]
    bias = (rng.standard_normal(shape[-1]) * 2).astype(np.float32)
    bias[:3] = np.array([0.0, -0.0, 6.0], dtype=np.float32)[: bias.size]
    return y, bias


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 4, 16), (2, 1)])
def test_bias_activate_equals_numpy(dtype, activation, shape):
    y, bias = _case(dtype, shape, 1)
    with np.errstate(all="ignore"):
        want = activate(y + bias.astype(dtype), activation)
        got = bias_activate(y.copy(), bias, activation)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("activation", ["linear", "relu", "relu6"])
def test_fused_pass_overwrites_y_and_signed_zeros(activation):
    """The fused pass works in place, and keeps numpy's signed zeros: relu turns -0 into +0 (np.maximum),
    relu6 keeps it (np.clip)."""
    y = np.array([[-0.0, -2.0, 0.5, np.nan]], dtype=np.float32)
    out = bias_activate(y, np.full(4, -0.0, dtype=np.float32), activation)  # -0 + -0 = -0
    assert out is y
    assert np.signbit(out[0, 0]) == (activation != "relu")
    assert np.isnan(out[0, 3])
    assert out[0, 1] == (-2.0 if activation == "linear" else 0.0)


def test_non_contiguous_and_no_bias():
    """A strided y takes the numpy fallback, a missing bias is the activation alone: both equal numpy."""
    y, bias = _case(np.float32, (6, 8), 2)
    view = y[:, ::2]
    assert not view.flags.c_contiguous
    want = activate(view + bias[:4], "relu")
    np.testing.assert_array_equal(_bits(np.ascontiguousarray(bias_activate(view, bias[:4], "relu"))),
                                  _bits(np.ascontiguousarray(want)))
    np.testing.assert_array_equal(_bits(bias_activate(y.copy(), None, "relu6")), _bits(activate(y.copy(), "relu6")))


def _faults(keep: str) -> int:
    """Minor page faults of 20 rounds of three 8 MiB buffers, written and freed (as a layer's tensors)."""
    code = ("import resource, numpy as np, kernels\n"
            "def round_():\n"
            "    xs = [np.empty(2 << 20, dtype=np.float32) for _ in range(3)]\n"
            "    for x in xs:\n"
            "        x[:] = 1\n"
            "round_()\n"
            "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20):\n"
            "    round_()\n"
            "print(kernels.KEEP_HEAP, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["HWSIM_KEEP_HEAP"] = keep
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    kept, faults = out.split()
    assert kept == ("True" if keep == "1" else "False")
    return int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_heap_reuses_freed_buffers():
    """With the setting malloc reuses the freed pages; without it (HWSIM_KEEP_HEAP=0) the 24 MiB freed at the
    heap's top is trimmed (above twice the 8 MiB dynamic mmap threshold) and rounds fault their pages in
    again (30260 faults measured here, with 4 KiB pages; huge pages make fewer, larger faults)."""
    kept, returned = _faults("1"), _faults("0")
    assert returned >= 100
    assert kept <= returned // 10


def test_bias_that_broadcasts_past_y_gives_numpys_shape():
    """A bias whose broadcast is larger than y cannot be added in place: the result is numpy's y + bias."""
    y = np.arange(2, dtype=np.float32).reshape(2, 1)
    bias = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(bias_activate(y.copy(), bias, "tanh"), activate(y + bias, "tanh"))
