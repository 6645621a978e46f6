"""The SCALE-Sim cycle model (hwsim/cycles.py) on hand-worked layers.

Expected values are worked out here from the published model (Samajdar et al., arXiv:1811.02883):
mapping (S_R, S_C, T) per dataflow, folds = ceil(S_R/R) * ceil(S_C/C), tau = R + C + T - 2 (OS) or
2R + C + T - 2 (WS/IS), cycles = folds * tau - 1. tests/test_scalesim_oracle.py checks the same code
against the scalesim package itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _costnets import cifar_cnn, conv, dense, dwconv, mobilenet

from hwsim.graph import ir
from hwsim.cycles import GemmShape, layer_gemm, layer_schedule, schedule, scalesim_topology_row


def _net(*layers, shape=(10, 10, 3)):
    return ir.Network("t", shape, layers)


def test_conv_mapping_per_dataflow():
    # 10x10x3 input, 3x3 valid conv, 16 filters: P = 8*8 = 64 pixels, W = 27, F = 16
    net = _net(conv("c", "input", 3, 3, 16, padding="valid"))
    want = {"os": (64, 16, 27), "ws": (27, 16, 64), "is": (27, 64, 16)}
    for df, (sr, sc, t) in want.items():
        s = layer_schedule(net, "c", 8, 8, df)
        assert (s.sr, s.sc, s.t) == (sr, sc, t)
        assert s.macs == 64 * 27 * 16


def test_conv_cycles_by_hand():
    net = _net(conv("c", "input", 3, 3, 16, padding="valid"))
    # OS on 8x8: folds 8*2 = 16, tau = 8+8+27-2 = 41
    assert layer_schedule(net, "c", 8, 8, "os").cycles == 16 * 41 - 1
    # WS on 8x8: S_R=27 -> 4 row folds, S_C=16 -> 2, tau = 16+8+64-2 = 86
    assert layer_schedule(net, "c", 8, 8, "ws").cycles == 8 * 86 - 1
    # IS on 8x8: S_R=27 -> 4, S_C=64 -> 8, tau = 16+8+16-2 = 38
    assert layer_schedule(net, "c", 8, 8, "is").cycles == 32 * 38 - 1
    # non-square array 4x16, OS: row folds ceil(64/4)=16, col folds 1, tau = 4+16+27-2 = 45
    assert layer_schedule(net, "c", 4, 16, "os").cycles == 16 * 45 - 1


def test_stride_and_same_padding():
    # 32x32x3, 3x3 same stride 2 -> 16x16 output
    net = _net(conv("c", "input", 3, 3, 8, stride=2), shape=(32, 32, 3))
    s = layer_schedule(net, "c", 16, 16, "os")
    assert s.sr == 256 and s.t == 27
    assert s.cycles == 16 * (16 + 16 + 27 - 2) - 1
    # SCALE-Sim wants the padded input: (16-1)*2 + 3 = 33
    assert scalesim_topology_row(net, "c") == "c, 33, 33, 3, 3, 3, 8, 2,"


def test_dense_is_a_single_pixel_gemm():
    net = _net(ir.Reshape("f", ("input",)), dense("d", "f", 300, 70))
    s = layer_schedule(net, "d", 32, 32, "os")
    assert (s.sr, s.sc, s.t) == (1, 70, 300)
    assert s.cycles == 3 * (32 + 32 + 300 - 2) - 1
    s = layer_schedule(net, "d", 32, 32, "ws")
    assert (s.sr, s.sc, s.t) == (300, 70, 1)
    assert s.cycles == 10 * 3 * (64 + 32 + 1 - 2) - 1
    assert scalesim_topology_row(net, "d") == "d, 1, 1, 1, 1, 300, 70, 1,"


def test_dense_on_a_feature_map_runs_per_position():
    net = _net(dense("d", "input", 3, 5), shape=(4, 6, 3))
    s = layer_schedule(net, "d", 8, 8, "os")
    assert (s.sr, s.sc, s.t) == (24, 5, 3)
    assert s.macs == 24 * 3 * 5


def test_depthwise_is_mapped_per_channel():
    c = 40
    dw = _net(dwconv("dw", "input", 3, c, stride=1), shape=(12, 12, c))
    one = _net(conv("one", "input", 3, 1, 1), shape=(12, 12, 1))
    for df in ("os", "ws", "is"):
        s = layer_schedule(dw, "dw", 8, 8, df)
        single = layer_schedule(one, "one", 8, 8, df)
        assert s.repeats == c
        assert s.cycles == c * single.cycles
        assert s.macs == c * single.macs == 12 * 12 * 9 * c
    # OS: 144 pixels on 8 rows -> 18 folds of 8+8+9-2 = 23 cycles, per channel
    assert layer_schedule(dw, "dw", 8, 8, "os").cycles == c * (18 * 23 - 1)
    assert scalesim_topology_row(dw, "dw") == f"DPdw, 14, 14, 3, 3, {c}, 1, 1,"


def test_depth_multiplier_gives_filters_per_channel():
    net = _net(dwconv("dw", "input", 3, 4, mult=2), shape=(6, 6, 4))
    g = layer_gemm(net, "dw")
    assert (g.pixels, g.window, g.filters, g.repeats) == (36, 9, 2, 4)
    assert net.shapes["dw"] == (6, 6, 8)


def test_utilization_and_mapping_efficiency():
    # perfectly tiled OS layer: S_R = 64, S_C = 16 on 8x8: every fold uses every PE
    g = GemmShape(pixels=64, window=100, filters=16)
    s = schedule(g, 8, 8, "os")
    assert s.mapping_efficiency == 1.0
    assert s.utilization == pytest.approx(g.macs / ((16 * (8 + 8 + 100 - 2) - 1) * 64))
    # one filter on an 8-column array: 1/8 of the PEs hold work
    s = schedule(GemmShape(pixels=64, window=9, filters=1), 8, 8, "os")
    assert s.mapping_efficiency == pytest.approx(1 / 8)
    assert s.utilization < 1 / 8


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_utilization_never_exceeds_one(df):
    for net in (cifar_cnn(), mobilenet()):
        for layer in net.mac_layers:
            for r, c in ((8, 8), (32, 32), (128, 128), (16, 64)):
                s = layer_schedule(net, layer, r, c, df)
                assert 0 < s.utilization <= 1, (layer.name, r, c)
                assert 0 < s.mapping_efficiency <= 1


def test_sram_reads_bounds_and_stationary_operands():
    # A streamed operand read from SRAM feeds at most one row (or column) of PEs and at least one MAC;
    # the stationary operand is read exactly once per element (SCALE-Sim's demand-matrix counts).
    for net in (cifar_cnn(), mobilenet()):
        for layer in net.mac_layers:
            g = layer_gemm(net, layer)
            for r, c in ((8, 8), (4, 32)):
                os_, ws, is_ = (layer_schedule(net, layer, r, c, df) for df in ("os", "ws", "is"))
                assert g.macs / c <= os_.ifmap_sram_reads <= g.macs
                assert g.macs / r <= os_.filter_sram_reads <= g.macs
                assert os_.ofmap_sram_writes == g.out_elems * g.repeats
                assert ws.filter_sram_reads == g.weight_elems * g.repeats
                assert g.macs / c <= ws.ifmap_sram_reads <= g.macs
                assert is_.ifmap_sram_reads == g.pixels * g.window * g.repeats
                assert g.macs / c <= is_.filter_sram_reads <= g.macs
                for s in (ws, is_):  # partial sums: one write per row fold, one read per extra row fold
                    assert s.ofmap_sram_writes == g.out_elems * g.repeats * s.row_folds
                    assert s.psum_sram_reads == g.out_elems * g.repeats * (s.row_folds - 1)


def test_cifar_cnn_macs_by_hand():
    net = cifar_cnn()
    want = {
        "conv1": 32 * 32 * 27 * 32, "conv2": 30 * 30 * 288 * 32, "conv3": 15 * 15 * 288 * 64,
        "conv4": 13 * 13 * 576 * 64, "fc1": 2304 * 512, "fc2": 512 * 512, "logits": 512 * 10,
    }
    got = {l.name: layer_gemm(net, l).macs for l in net.mac_layers}
    assert got == want
    params = {l.name: layer_gemm(net, l).params for l in net.mac_layers}
    assert params["conv1"] == 3 * 3 * 3 * 32 + 32 and params["fc1"] == 2304 * 512 + 512


@pytest.mark.parametrize("bad,msg", [
    (dict(rows=0), "rows"), (dict(rows=-3), "rows"), (dict(cols=2.5), "cols"), (dict(dataflow="rs"), "'os', 'ws', 'is'"),
])
def test_bad_array_arguments(bad, msg):
    kw = dict(rows=8, cols=8, dataflow="os") | bad
    with pytest.raises(ValueError, match=msg):
        schedule(GemmShape(4, 4, 4), **kw)


def test_non_mac_layer_is_rejected():
    net = _net(conv("c", "input", 3, 3, 4), ir.Pool2D("p", ("c",)))
    with pytest.raises(ValueError, match="conv2d, depthwise, dense"):
        layer_gemm(net, "p")


def test_gemm_shape_validation():
    with pytest.raises(ValueError, match="window"):
        GemmShape(pixels=4, window=0, filters=2)


def test_cycles_match_a_brute_force_fold_walk():
    # Independent of the closed form: walk every fold, add its own fill + stream + drain cycles.
    rng = np.random.default_rng(7)
    for _ in range(200):
        p, w, f = (int(v) for v in rng.integers(1, 300, size=3))
        r, c = (int(v) for v in rng.integers(1, 40, size=2))
        for df in ("os", "ws", "is"):
            sr, sc, t = {"os": (p, f, w), "ws": (w, f, p), "is": (w, p, f)}[df]
            total = 0
            for _i in range(0, sr, r):
                for _j in range(0, sc, c):
                    preload = 0 if df == "os" else r  # stationary operand shifted in over R cycles
                    total += preload + (r - 1) + (c - 1) + t  # skewed fill, streaming, drain
            s = schedule(GemmShape(p, w, f), r, c, df)
            assert s.cycles == total - 1
            assert s.folds == math.ceil(sr / r) * math.ceil(sc / c)
