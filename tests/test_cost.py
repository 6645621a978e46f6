"""hwsim.cost(): per-layer and total cycles and energy, the float32 baseline, CSV, array configs, CLI.

External figures: MobileNet 1.0-224 has 569M mult-adds and 4.2M parameters (Howard et al. 2017,
Table 8); MobileNetV2 1.0-224 has 300M and 3.4M (Sandler et al. 2018, Table 4; Keras reports 3.5M).
Published energy analyses of MobileNet-class inference find DRAM traffic dominating (e.g. Chen et al.,
Eyeriss v2, 2019; Horowitz 2014: a DRAM access costs ~100x-1000x a MAC).
"""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import pytest
from _costnets import cifar_cnn, conv, mobilenet, mobilenet_v1_224, mobilenet_v2_224

import hwsim
import kernels
from hwsim.graph import ir
from hwsim.array import CONFIG_DIR, ArrayConfig
from hwsim.cost import CostResult, cost
from hwsim.cycles import layer_gemm, layer_schedule
from hwsim.energy import EnergyTable


@pytest.fixture(scope="module")
def cifar():
    return cifar_cnn()


@pytest.fixture(scope="module")
def int8_cifar(cifar):
    return cost(cifar, "int8_int32", ArrayConfig(32, 32, "os"))


# ------------------------------------------------------------------------------- MAC and param counts
def _counts(nets):
    macs = sum(layer_gemm(n, l).macs for n in nets for l in n.mac_layers)
    params = sum(layer_gemm(n, l).params for n in nets for l in n.mac_layers)
    return macs, params


@pytest.mark.parametrize("app,ir_builder,macs,params", [
    ("MobileNet", mobilenet_v1_224, 569e6, 4.2e6),
    ("MobileNetV2", mobilenet_v2_224, 300e6, 3.5e6),
])
def test_keras_applications_mac_and_param_counts(app, ir_builder, macs, params):
    import keras

    from hwsim.frontends.keras import from_keras

    model = getattr(keras.applications, app)(weights=None, input_shape=(224, 224, 3))
    got_macs, got_params = _counts([from_keras(model)])  # BN folded: biases added where BN was
    assert got_macs == pytest.approx(macs, rel=0.01)
    assert got_params == pytest.approx(params, rel=0.01)
    # the hand-built IR networks used below have exactly the Keras model's MAC layers
    net = ir_builder()
    assert _counts([net]) == (got_macs, got_params)


@pytest.mark.parametrize("name,builder", [("cifar_cnn", cifar_cnn), ("mobilenet", mobilenet)])
def test_test_networks_are_the_zoo_models(name, builder):
    """The hand-built IR networks (used without TensorFlow by the oracle test) have the same MAC layers
    as the importer's IR of the zoo's Keras models."""
    from hwsim import zoo
    from hwsim.frontends.keras import from_keras

    net, mine = from_keras(zoo.build(name)), builder()
    assert [l.name for l in net.mac_layers] == [l.name for l in mine.mac_layers]
    assert [layer_gemm(net, l) for l in net.mac_layers] == [layer_gemm(mine, l) for l in mine.mac_layers]


# ------------------------------------------------------------------------------------ cost results
def test_result_records_and_totals(cifar, int8_cifar):
    r = int8_cifar
    assert [l.name for l in r.layers] == [l.name for l in cifar.mac_layers]
    assert [l.kind for l in r.layers] == ["conv2d"] * 4 + ["dense"] * 3
    for rec in r.layers:
        s = layer_schedule(cifar, rec.name, 32, 32, "os")
        assert (rec.macs, rec.cycles, rec.compute_cycles) == (s.macs, s.cycles, s.cycles)
        assert rec.utilization == pytest.approx(rec.macs / (rec.cycles * 1024))
        assert rec.energy_pj == pytest.approx(rec.mac_pj + rec.rng_pj + rec.rf_pj + rec.sram_pj + rec.dram_pj
                                              + rec.leak_pj)
        assert min(rec.mac_pj, rec.rf_pj, rec.sram_pj, rec.dram_pj, rec.leak_pj) > 0
        assert rec.rng_pj == 0  # round to nearest draws no random bits
    assert r.cycles == sum(l.cycles for l in r.layers)
    assert r.macs == 21003264
    assert r.params == 1513514
    assert r.energy_pj == pytest.approx(sum(l.energy_pj for l in r.layers))
    assert r.energy_pj == pytest.approx(sum(r.energy_by_component.values()))
    assert r.utilization == pytest.approx(r.macs / (r.cycles * 1024))
    assert r.inferences_per_s == pytest.approx(1e9 / r.cycles)
    assert 0 < r.utilization < 1


def test_mac_energy_is_macs_times_table(int8_cifar):
    t = EnergyTable.default()
    for rec in int8_cifar.layers:
        assert rec.mac_pj == pytest.approx(rec.macs * t.mac_pj("int8_int32"))


def test_float32_baseline(int8_cifar):
    r, b = int8_cifar, int8_cifar.baseline
    assert isinstance(b, CostResult) and b.baseline is None
    assert b.spec == kernels.MacSpec.preset("fp32")
    assert b.cycles == r.cycles  # no bandwidth bound: the same schedule
    assert r.ratios["cycles"] == 1.0
    # int8 moves a quarter of fp32's operand bits and a MAC costs ~15x less
    assert 0.2 < r.ratios["dram"] < 0.3
    assert r.ratios["mac"] == pytest.approx(EnergyTable.default().mac_pj("int8_int32") / 4.6, rel=0.05)
    assert r.ratios["energy"] < 0.3
    assert r.ratios["energy"] == pytest.approx(r.energy_pj / b.energy_pj)


def test_compulsory_dram_traffic_by_hand():
    # 10x10x3 int8 input, 3x3 valid conv to 8x8x16: 300 B in, 432 B weights + 16 int32 biases, 1024 B out
    net = ir.Network("t", (10, 10, 3), [conv("c", "input", 3, 3, 16, padding="valid")])
    r = cost(net, "int8_int32", ArrayConfig(8, 8, "os"))
    assert r.layers[0].dram_bytes == 300 + 432 + 64 + 1024
    assert r.baseline.layers[0].dram_bytes == 4 * (300 + 432 + 16 + 1024)
    assert r.layers[0].dram_pj == pytest.approx(8 * (300 + 432 + 64 + 1024) * 20.3)


def test_operand_that_does_not_fit_is_refetched_per_fold():
    net = ir.Network("t", (34, 34, 16), [conv("c", "input", 3, 16, 64, padding="valid")])  # 18,496 B input
    big = cost(net, "int8_int32", ArrayConfig(8, 8, "os"), baseline=None).layers[0]
    tiny = cost(net, "int8_int32", ArrayConfig(8, 8, "os", ifmap_sram_kb=16), baseline=None).layers[0]
    col_folds = math.ceil(64 / 8)
    assert tiny.dram_bytes - big.dram_bytes == 34 * 34 * 16 * (col_folds - 1)
    assert tiny.energy_pj > big.energy_pj


def test_bandwidth_bound():
    net = cifar_cnn()
    arr = ArrayConfig(32, 32, "os", dram_bytes_per_cycle=1.0)
    r = cost(net, "int8_int32", arr)
    for rec in r.layers:
        assert rec.memory_cycles == math.ceil(rec.dram_bytes / 1.0)
        assert rec.cycles == max(rec.compute_cycles, rec.memory_cycles)
    fc1 = r.layer("fc1")
    assert fc1.memory_cycles > fc1.compute_cycles  # 1.2 MB of weights over 1 B/cycle
    # narrower formats move fewer bytes: int8 beats fp32 once the network is bandwidth bound
    assert r.cycles < r.baseline.cycles
    assert r.ratios["cycles"] < 0.5


def test_dram_dominates_int8_mobilenet_energy():
    r = cost(mobilenet_v1_224(), "int8_int32", ArrayConfig(32, 32, "os"))
    share = r.energy_by_component["dram"] / r.energy_pj
    assert share > 0.5, r.energy_by_component
    assert r.macs == pytest.approx(569e6, rel=0.01)


def test_fp8_vs_int8_energy_and_dataflows(cifar):
    arr = ArrayConfig(32, 32, "os")
    i8 = cost(cifar, "int8_int32", arr, baseline=None)
    f8 = cost(cifar, "fp8_e4m3_fp16", arr, baseline=None)
    assert 1.5 < f8.energy_by_component["mac"] / i8.energy_by_component["mac"] < 2.8
    assert f8.cycles == i8.cycles
    for df in ("ws", "is"):
        r = cost(cifar, "int8_int32", ArrayConfig(32, 32, df), baseline=None)
        assert r.cycles == sum(layer_schedule(cifar, l, 32, 32, df).cycles for l in cifar.mac_layers)
        assert r.energy_by_component["mac"] == pytest.approx(i8.energy_by_component["mac"])


def test_mx_and_spec_objects(cifar):
    spec = kernels.MacSpec("mxfp8_e4m3", "fp32", fma=True)
    r = cost(cifar, spec, ArrayConfig(16, 16, "ws"))
    base = cost(cifar, "fp8_e4m3_fp32", ArrayConfig(16, 16, "ws"), baseline=None)
    # MX adds the 8-bit scale per 32 elements to every stored operand and a little MAC energy
    assert r.energy_by_component["mac"] > base.energy_by_component["mac"]
    assert r.layer("conv1").dram_bytes > base.layer("conv1").dram_bytes


def test_depthwise_layers_are_costed_per_channel():
    net = mobilenet()
    r = cost(net, "int8_int32", ArrayConfig(32, 32, "os"), baseline=None)
    dw = [l for l in r.layers if l.kind == "depthwise"]
    assert dw and all(l.repeats > 1 for l in dw)
    # one output column in use: utilisation of a depthwise layer is at most 1/32
    assert all(l.utilization <= 1 / 32 for l in dw)
    assert r.macs == sum(layer_gemm(net, l).macs for l in net.mac_layers)


def test_csv_export(tmp_path, int8_cifar):
    p = int8_cifar.to_csv(tmp_path / "cost.csv")
    with open(p) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [l.name for l in int8_cifar.layers] + ["TOTAL"]
    for key in ("name", "kind", "macs", "cycles", "utilization", "energy_pj", "mac_pj", "sram_pj", "dram_pj",
                "baseline_energy_pj", "energy_ratio"):
        assert key in rows[0]
    assert int(rows[-1]["cycles"]) == int8_cifar.cycles
    assert float(rows[-1]["energy_pj"]) == pytest.approx(int8_cifar.energy_pj)
    assert float(rows[0]["baseline_energy_pj"]) == pytest.approx(int8_cifar.baseline.layers[0].energy_pj)
    assert sum(int(r["macs"]) for r in rows[:-1]) == int8_cifar.macs


def test_table_text(int8_cifar):
    text = int8_cifar.format_table()
    assert "conv1" in text and "TOTAL" in text and "45 nm" in text and "float32 baseline" in text


def test_public_names():
    import hwsim.cost  # noqa: F401  (binds the submodule to hwsim.cost)

    net = cifar_cnn()
    assert hwsim.cost(net, "int8_int32").cycles == cost(net, "int8_int32").cycles
    assert hwsim.ArrayConfig is ArrayConfig and hwsim.EnergyTable is EnergyTable


# -------------------------------------------------------------------------------- bad input
def test_bad_cost_arguments(cifar):
    with pytest.raises(ValueError, match="int8_int32"):
        cost(cifar, "int9_int33")
    with pytest.raises(ValueError, match="ArrayConfig"):
        cost(cifar, "int8_int32", array=42)
    with pytest.raises(ValueError, match="hwsim IR network"):
        cost("cifar_cnn", "int8_int32")
    nomac = ir.Network("p", (4, 4, 1), [ir.Pool2D("p", ("input",))])
    with pytest.raises(ValueError, match="no MAC layers"):
        cost(nomac)


@pytest.mark.parametrize("kw,needle", [
    (dict(rows=0), "rows"), (dict(cols=-4), "cols"), (dict(rows=2.0), "rows"), (dict(dataflow="rs"), "'os', 'ws', 'is'"),
    (dict(clock_hz=0), "clock_hz"), (dict(ifmap_sram_kb=-1), "ifmap_sram_kb"),
    (dict(dram_bytes_per_cycle=-2), "dram_bytes_per_cycle"), (dict(energy="horowitz"), "EnergyTable"),
])
def test_array_config_validation(kw, needle):
    with pytest.raises(ValueError) as exc:
        ArrayConfig(**kw)
    assert needle in str(exc.value)


def test_array_toml(tmp_path):
    # the shipped default is the stall-free dataclass default plus LPDDR4X-4266 on 32 bits at 1 GHz
    assert ArrayConfig.default() == ArrayConfig(32, 32, "os", dram_bytes_per_cycle=4266e6 * 4 / 1e9)
    assert ArrayConfig.from_toml(CONFIG_DIR / "array_32x32_os_stallfree.toml") == ArrayConfig(32, 32, "os")
    (tmp_path / "e.toml").write_text("[energy]\ndram_pj_per_bit = 10.0\n")
    p = tmp_path / "a.toml"
    p.write_text('[array]\nrows = 8\ncols = 16\ndataflow = "ws"\nclock_hz = 500000000\n'
                 'dram_bytes_per_cycle = 8\nenergy = "e.toml"\n')
    a = ArrayConfig.from_toml(p)
    assert (a.rows, a.cols, a.dataflow, a.clock_hz, a.dram_bytes_per_cycle) == (8, 16, "ws", 5e8, 8)
    assert a.energy.dram_pj_per_bit == 10.0
    p.write_text('[array]\nrows = 8\ncols = 8\n[energy]\nrf_pj_per_bit = 0.5\n')
    assert ArrayConfig.from_toml(p).energy.rf_pj_per_bit == 0.5
    r = cost(cifar_cnn(), "int8_int32", p)
    assert r.array.rows == 8


@pytest.mark.parametrize("text,needle", [
    ('[array]\nrows = 0\ncols = 8\n', "rows"),
    ('[array]\nrows = 8\ncols = 8\ndataflow = "xs"\n', "'os', 'ws', 'is'"),
    ('[array]\nrows = 8\ncols = 8\nrowz = 3\n', "rowz"),
    ('[array]\ncols = 8\n', "'rows'"),
    ('[arrays]\nrows = 8\n', "arrays"),
    ('rows = 8\n', "rows"),
    ('[array]\nrows = 8\ncols = 8\n[energy]\ndram = 1\n', "dram"),
    ('[array]\nrows = 8\ncols = 8\nenergy = "x.toml"\n[energy]\ndram_pj_per_bit = 1\n', "not both"),
    ('[array\nrows = 8\n', "not valid TOML"),
])
def test_array_toml_errors(tmp_path, text, needle):
    p = tmp_path / "a.toml"
    p.write_text(text)
    with pytest.raises(ValueError) as exc:
        ArrayConfig.from_toml(p)
    assert needle in str(exc.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        ArrayConfig.from_toml(tmp_path / "nope.toml")
    p = tmp_path / "a.toml"
    p.write_text('[array]\nrows = 8\ncols = 8\nenergy = "missing.toml"\n')
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        ArrayConfig.from_toml(p)


# ----------------------------------------------------------------------------------------- CLI
def _run_cli(argv, monkeypatch, net):
    from hwsim.commands import cost as cmd

    monkeypatch.setattr(cmd, "load_network", lambda model: net)
    parser = argparse.ArgumentParser(prog="hwsim")
    cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_table_and_writes_csv(tmp_path, monkeypatch, capsys):
    out = tmp_path / "layers.csv"
    rc = _run_cli(["cost", "--model", "cifar_cnn", "--mac", "fp16_fp32", "--rows", "16", "--cols", "16",
                   "--dataflow", "ws", "--dram-bytes-per-cycle", "0", "--csv", str(out)], monkeypatch, cifar_cnn())
    text = capsys.readouterr().out
    assert rc == 0
    assert "16x16 WS" in text and "fp16_fp32" in text and "fc1" in text
    want = cost(cifar_cnn(), "fp16_fp32", ArrayConfig(16, 16, "ws"))
    assert f"{want.cycles:,}" in text
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert int(rows[-1]["cycles"]) == want.cycles


def test_cli_through_main(tmp_path, capsys):
    """End to end: ``hwsim cost`` on the zoo's cifar_cnn (built from its definition by the importer)."""
    from hwsim import cli

    out = tmp_path / "c.csv"
    assert cli.main(["cost", "--model", "cifar_cnn", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    want = cost(cifar_cnn(), "int8_int32", ArrayConfig.default())
    assert "TOTAL" in text and f"{want.cycles:,}" in text and "32x32 OS" in text
    assert out.exists()
    assert cli.main(["cost", "--model", "cifar_cnn", "--dataflow", "zz"]) == 2
    err = capsys.readouterr().err
    assert "zz" in err and "'os', 'ws', 'is'" in err
    assert cli.main(["cost", "--model", "no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_cli_bad_array_values(monkeypatch):
    with pytest.raises(ValueError, match="rows"):
        _run_cli(["cost", "--model", "x", "--rows", "0"], monkeypatch, cifar_cnn())
    with pytest.raises(ValueError, match="int8_int32"):
        _run_cli(["cost", "--model", "x", "--mac", "int3_int5"], monkeypatch, cifar_cnn())
