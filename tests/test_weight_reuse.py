"""kernels._memo.reuse_weights: inside the block each weight operand is rounded, range-scanned and laid out
once; every result equals the one computed without the block, the reuse really happens, and an entry never
outlives its weight array or the block."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import hwsim
import kernels
from kernels import MacSpec, _memo, ops

SPECS = ["fp32", "bf16_fp32", "fp8_e4m3_fp16", "int8_int32", "fp16_fp16",
         MacSpec("fp8_e4m3", "fp16", fma=True, rounding="stochastic"),  # STOCH32
         MacSpec("fp32", "fp16"),  # general float64 path (the float64 weight copy)
         MacSpec("mxfp8_e4m3", "fp32")]


def _calls(x, w, dw, b, spec):
    return [kernels.conv2d(x, w, spec, padding="same", seed=5),
            kernels.depthwise_conv2d(x, dw, spec, stride=2, padding="same", seed=5),
            kernels.matmul(x.reshape(-1, x.shape[-1]), b, spec, seed=5, offset=7)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: getattr(s, "name", s))
def test_results_inside_the_block_equal_those_outside(spec):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 9, 9, 32)).astype(np.float32)
    w = rng.normal(size=(3, 3, 32, 40)).astype(np.float32)
    dw = rng.normal(size=(3, 3, 32, 1)).astype(np.float32)
    b = rng.normal(size=(32, 24))
    ref = _calls(x, w, dw, b, spec)
    with _memo.reuse_weights():
        first = _calls(x, w, dw, b, spec)
        second = _calls(x * 0.5, w, dw, b, spec)  # new activations, the prepared weights
    again = _calls(x * 0.5, w, dw, b, spec)
    for r, f, s, a in zip(ref, first, second, again):
        np.testing.assert_array_equal(f, r)
        np.testing.assert_array_equal(s, a)


def test_one_weight_array_under_several_specs_in_one_block():
    """Entries are per format (and axis): the same array rounded into fp8, bf16 and fp16 in one block gives
    each spec's own result."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 5, 16)).astype(np.float32)
    w = rng.normal(size=(3, 3, 16, 16)).astype(np.float32)
    names = ["fp8_e4m3_fp16", "bf16_fp32", "fp16_fp16", "fp8_e4m3_fp16"]
    ref = [kernels.conv2d(x, w, n, padding="same") for n in names]
    with _memo.reuse_weights():
        got = [kernels.conv2d(x, w, n, padding="same") for n in names]
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(g, r)


def test_each_weight_is_prepared_once_inside_the_block(monkeypatch):
    """Counts the kernels' operand rounding and range scans: two conv2d calls with one weight array round it
    once and scan it once inside the block (the activations every time), twice each outside."""
    rounded, scanned = [], []
    prepare, scan = ops._prepare, ops._abs_range_of
    monkeypatch.setattr(ops, "_prepare", lambda z, fmt, axis: rounded.append(z.shape) or prepare(z, fmt, axis))
    monkeypatch.setattr(ops, "_abs_range_of", lambda z: scanned.append(z.shape) or scan(z))
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 16)).astype(np.float32)
    w = np.random.default_rng(3).normal(size=(3, 3, 16, 32)).astype(np.float32)
    for _ in range(2):
        kernels.conv2d(x, w, "fp8_e4m3_fp16")
    assert rounded.count(w.shape) == 2 and scanned.count(w.shape) == 2
    rounded.clear()
    scanned.clear()
    with _memo.reuse_weights():
        for _ in range(2):
            kernels.conv2d(x, w, "fp8_e4m3_fp16")
    assert rounded.count(w.shape) == 1 and rounded.count(x.shape) == 2
    assert scanned.count(w.shape) == 1 and scanned.count(x.shape) == 2


def test_an_entry_dies_with_its_array_and_the_block():
    """A weight array that is freed takes its entry along (its id and address may be reused by the next
    array); at the end of the block the memo lets go of everything (the weights do not keep it alive)."""
    x = np.ones((1, 4, 4, 8), dtype=np.float32)
    with _memo.reuse_weights():
        memo = _memo._ACTIVE.get()
        w = np.full((1, 1, 8, 16), 2.0, dtype=np.float32)
        kernels.conv2d(x, w, "bf16_fp32")
        assert len(memo.rounded) == 1 and len(memo.derived) == 1
        del w
        assert not memo.rounded and not memo.derived
        for v in (3.0, 5.0) * 20:  # fresh arrays, maybe at the same address: each gives its own result
            np.testing.assert_array_equal(kernels.conv2d(x, np.full((1, 1, 8, 16), v, dtype=np.float32), "bf16_fp32"),
                                          np.full((1, 4, 4, 16), 8 * v, dtype=np.float32))
        assert not memo.rounded and not memo.derived and not memo.finalizers  # nothing piles up per call
        kept = np.full((1, 1, 8, 16), 1.0, dtype=np.float32)
        kernels.conv2d(x, kept, "bf16_fp32")
    ref = weakref.ref(memo)
    del memo
    gc.collect()
    assert ref() is None and not _memo._ACTIVE.get()


def test_hwsim_run_reuses_the_weights_and_matches_the_slices(monkeypatch):
    """hwsim.run prepares the weights once per run (the runner's block), and its outputs equal the layers
    run slice by slice without the block."""
    from hwsim.graph import runner

    net = hwsim.load_model("cifar_cnn")
    images, _ = hwsim.load_cifar10("test")
    x = images[:24]
    spec = kernels.mac.as_spec("fp8_e4m3_fp16")
    specs = runner.resolve_specs(net, spec)
    ref = np.concatenate([runner.forward(net, x[i:i + 5].astype(np.float32), specs, offset=i) for i in range(0, 24, 5)])
    rounded = []
    prepare = ops._prepare
    monkeypatch.setattr(ops, "_prepare", lambda z, fmt, axis: rounded.append(z.shape) or prepare(z, fmt, axis))
    out = hwsim.run(net, x, mac=spec, batch_size=5)
    np.testing.assert_array_equal(out, ref)
    weights = [l.kernel.shape for l in net.mac_layers]
    assert [rounded.count(s) for s in weights] == [1] * len(weights)
