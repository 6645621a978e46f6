"""Precision-aware hardware cost: PE areas, PE kinds (fixed, Bit Fusion, bit-serial), iso-area arrays,
bandwidth in bits, leakage and random-bit energy.

External figures: Bit Fusion's fixed-bitwidth PEs synthesised at 45 nm take 124.89 / 282.24 / 687.61 /
2203.24 um^2 for 2 / 4 / 8 / 16-bit operands (H. Sharma et al., ISCA 2018; the single-PE rows of
results/systolic_array_synth.csv in hsharma35/bitfusion); Bit Fusion's simulator runs
``floor(8 / pa) * floor(8 / pw)`` MACs per fusion unit per cycle (Accelerator.get_perf_factor);
Stripes' time is proportional to activation bits (Judd et al., MICRO 2016) and Loom's to activation
times weight bits (Sharify et al., DAC 2018); Horowitz (ISSCC 2014, 45 nm): 32-bit float multiplier
7,700 um^2, 32-bit integer multiplier 3,495 um^2.
"""

from __future__ import annotations

import math

import pytest
from _costnets import cifar_cnn, dense, mobilenet

import kernels
from hwsim.graph import ir
from hwsim.area import AreaTable
from hwsim.array import ArrayConfig
from hwsim.cost import cost, iso_area_array
from hwsim.cycles import layer_schedule
from hwsim.pe import fusion_factor, pe_area_parts, pe_area_um2

STALL_FREE = ArrayConfig(32, 32, "os")  # no DRAM bound: compute-bound layers


def spec(a, b, acc="int32", **kw):
    return kernels.MacSpec(a=a, b=b, accum=acc, **kw)


# ------------------------------------------------------------------------------------------ area
@pytest.mark.parametrize("bits,published", [(2, 124.8912), (4, 282.24), (8, 687.6072), (16, 2203.236)])
def test_fixed_pe_area_matches_bit_fusion_synthesis(bits, published):
    """A b-bit fixed PE (b x b multiplier, (2b + 6)-bit accumulator, at most 32) within 15 % of Bit Fusion's."""
    got = pe_area_um2(spec(f"int{bits}", f"int{bits}", f"int{min(2 * bits + 6, 32)}"))
    assert abs(got / published - 1) <= 0.15


def test_area_scaling_laws():
    t = AreaTable.default()
    assert t.int_mul(8, 8) == 4 * t.int_mul(4, 4)  # multipliers ~ bits^2
    assert t.adder(32) == 2 * t.adder(16) and t.register(32) == 2 * t.register(16)  # adders, registers ~ bits
    # a float multiplier grows with the significand, not the exponent: e5m10 and e8m10 differ by the exponent adder
    assert t.float_mul(11, 11, 8) - t.float_mul(11, 11, 5) == pytest.approx(t.adder(3))
    # the fp32 / int32 multiplier ratio is Horowitz's 7700 / 3495 (the calibration), within 1 %
    fp32_mul = pe_area_parts("fp32_fma")["multiplier"]
    int32_mul = t.int_mul(32, 32)
    assert fp32_mul / int32_mul == pytest.approx(7700 / 3495, rel=0.01)
    # a float adder carries alignment and normalisation shifters: far larger than an integer adder
    assert t.float_add(24, 8) / t.adder(32) == pytest.approx(4184 / 137, rel=0.01)


def test_pe_area_parts_follow_the_spec():
    near = pe_area_parts(spec("fp8_e4m3", "fp8_e4m3", "fp16"))
    sto = pe_area_parts(spec("fp8_e4m3", "fp8_e4m3", "fp16", rounding="stochastic", rand_bits=12))
    t = AreaTable.default()
    assert near["random_bits"] == 0
    assert sto["random_bits"] == pytest.approx(t.register(12) + t.adder(12))  # one stochastic stage: the sum
    both = pe_area_parts(spec("fp16", "fp16", "fp16", product="fp16", rounding="stochastic"))
    assert both["random_bits"] == pytest.approx(2 * (t.register(32) + t.adder(32)))
    # integer operands into an integer accumulator never round: no random bits even when stochastic
    assert pe_area_parts(spec("int8", "int8", rounding="stochastic"))["random_bits"] == 0
    assert pe_area_um2("fp32") > pe_area_um2("fp16_fp32") > pe_area_um2("fp8_e4m3_fp32") > pe_area_um2("int8_int32")
    mx = pe_area_um2(spec("mxfp8_e4m3", "mxfp8_e4m3", "fp32"))
    assert mx == pytest.approx(pe_area_um2(spec("fp8_e4m3", "fp8_e4m3", "fp32")) + t.adder(9) + t.register(16))


def test_result_area():
    r = cost(cifar_cnn(), "int8_int32", STALL_FREE)
    assert r.pe_area_um2 == pe_area_um2("int8_int32")
    assert r.area_mm2 == pytest.approx(1024 * pe_area_um2("int8_int32") * 1e-6)
    assert r.baseline.area_mm2 == pytest.approx(1024 * pe_area_um2("fp32") * 1e-6)
    assert r.ratios["area"] == pytest.approx(pe_area_um2("int8_int32") / pe_area_um2("fp32"))
    assert all(l.area_mm2 == r.area_mm2 for l in r.layers)


# --------------------------------------------------------------------------------------- Bit Fusion
def _fc(n_in, n_out):
    return ir.Network("fc", (n_in,), [dense("fc", "input", n_in, n_out)])


def test_fusion_factor_is_bit_fusions():
    assert [fusion_factor(a, w) for a, w in [(8, 8), (8, 4), (4, 4), (2, 2), (1, 1), (3, 8), (5, 5)]] == \
        [1, 2, 4, 16, 16, 2, 1]


def test_bit_fusion_cycle_ratios_exact():
    """Compute-bound layers whose reduction fills the fused lanes: exactly 1/2, 1/4, 1/16 of int8 x int8."""
    arr = STALL_FREE.with_(pe="bit_fusion")
    for net in (_fc(1024, 96), ir.Network("c", (8, 8, 512), [ir.Conv2D(
            "c", ("input",), kernel=__import__("numpy").zeros((1, 1, 512, 40), "float32"), bias=None)])):
        c88 = cost(net, spec("int8", "int8"), arr, baseline=None).cycles
        for a, b, ratio in [("int8", "int4", 1 / 2), ("int4", "int4", 1 / 4), ("int2", "int2", 1 / 16)]:
            assert cost(net, spec(a, b), arr, baseline=None).cycles / c88 == ratio
    # by hand: dense 1024 -> 96 on 32x32: one pixel, ceil(96/32) = 3 column tiles, ceil(1024/(32 k)) steps
    net = _fc(1024, 96)
    assert cost(net, spec("int8", "int8"), arr, baseline=None).cycles == 1 * 3 * 32
    assert cost(net, spec("int4", "int4"), arr, baseline=None).cycles == 1 * 3 * 8
    assert cost(net, spec("int2", "int2"), arr, baseline=None).cycles == 1 * 3 * 2


def test_bit_fusion_area_is_the_fusion_unit():
    assert pe_area_um2(spec("int2", "int2"), "bit_fusion") == pe_area_um2(spec("int8", "int8"), "bit_fusion") == 1733.13


# --------------------------------------------------------------------------------------- bit-serial
def test_bit_serial_cycles():
    net = cifar_cnn()
    stripes = STALL_FREE.with_(pe="bit_serial")
    loom = STALL_FREE.with_(pe="bit_serial", serial_operands="ab")
    c = lambda a, b, arr: cost(net, spec(a, b), arr, baseline=None).cycles  # noqa: E731
    assert c("int4", "int8", stripes) / c("int8", "int8", stripes) == 0.5
    assert c("int4", "int4", loom) / c("int8", "int8", loom) == 0.25
    # Stripes: SCALE-Sim's cycles times the activation bits, layer by layer
    r = cost(net, spec("int6", "int8"), stripes, baseline=None)
    for l in r.layers:
        assert l.compute_cycles == 6 * layer_schedule(net, l.name, 32, 32, "os").cycles


# ------------------------------------------------------------------------------------ what runs where
@pytest.mark.parametrize("pe,s,needle", [
    ("bit_fusion", "fp8_e4m3_fp16", "float8_e4m3fn"),
    ("bit_fusion", spec("int16", "int16"), "16-bit"),
    ("bit_fusion", spec("mxint8", "mxint8"), "mxint8"),
    ("bit_serial", "bf16_fp32", "bf16"),
    ("bit_serial", spec("int8", "int8", "fp32"), "accumulator"),
])
def test_pe_kinds_refuse_what_they_cannot_run(pe, s, needle):
    with pytest.raises(ValueError) as exc:
        cost(cifar_cnn(), s, STALL_FREE.with_(pe=pe))
    assert needle in str(exc.value) and pe in str(exc.value)


@pytest.mark.parametrize("kw,needle", [
    (dict(pe="systolic"), "'fixed', 'bit_fusion', 'bit_serial'"),
    (dict(pe="bit_serial", serial_operands="w"), "serial_operands"),
    (dict(arrays=0), "arrays"), (dict(rows=-1), "rows"),
    (dict(area={"int_mul_um2": 1}), "AreaTable"),
])
def test_bad_array_configs(kw, needle):
    with pytest.raises(ValueError) as exc:
        ArrayConfig(**kw)
    assert needle in str(exc.value)


def test_area_table_errors(tmp_path):
    good = AreaTable.default().to_dict()
    bad = dict(good)
    del bad["adder_um2_per_bit"]
    with pytest.raises(ValueError, match="missing key.*adder_um2_per_bit"):
        AreaTable.from_dict(bad)
    with pytest.raises(ValueError, match="int_mul_um2 must be a finite number > 0"):
        AreaTable.from_dict({**good, "int_mul_um2": 0})
    with pytest.raises(ValueError, match="unknown key.*flops"):
        AreaTable.from_dict({**good, "flops": 1})
    p = tmp_path / "a.toml"
    p.write_text('[array]\nrows = 4\ncols = 4\n[area]\nint_mul_um2 = 2.0\n')
    with pytest.raises(ValueError, match="missing key"):
        ArrayConfig.from_toml(p)
    p.write_text('[array]\nrows = 4\ncols = 4\narea = "nowhere.toml"\n')
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        ArrayConfig.from_toml(p)
    lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in {**good, "int_mul_um2": 1.0}.items()]
    (tmp_path / "t.toml").write_text("[area]\n" + "\n".join(lines).replace("'", '"') + "\n")
    p.write_text('[array]\nrows = 4\ncols = 4\narea = "t.toml"\n')
    assert ArrayConfig.from_toml(p).area.int_mul_um2 == 1.0


# ------------------------------------------------------------------------------------------ iso-area
@pytest.mark.parametrize("net", [cifar_cnn(), mobilenet()], ids=["cifar_cnn", "mobilenet"])
def test_iso_area_narrow_formats_run_faster(net):
    base = cost(net, "fp32", STALL_FREE, baseline=None)
    for mac in ("int8_int32", spec("int4", "int4")):
        r = cost(net, mac, STALL_FREE, iso_area=True)
        assert r.area_mm2 <= base.area_mm2
        assert r.array.arrays == math.floor(pe_area_um2("fp32") / pe_area_um2(mac))
        for l, b in zip(r.layers, base.layers):
            assert l.cycles < b.cycles, l.name
    assert iso_area_array(STALL_FREE, "fp32") == STALL_FREE


def test_iso_area_larger_pe_shrinks_the_array():
    big = spec("fp32", "fp32", "fp32", product="fp32", rounding="stochastic")  # random bits make it larger
    arr = iso_area_array(STALL_FREE, big)
    assert (arr.arrays, arr.rows, arr.cols) == (1, 31, 31)
    assert arr.pes * pe_area_um2(big) <= STALL_FREE.pes * pe_area_um2("fp32")


# ------------------------------------------------------------------------------- bandwidth, energy
def test_bandwidth_bound_layers_scale_with_format():
    arr = ArrayConfig.default()
    assert arr.dram_bytes_per_cycle == pytest.approx(17.064)
    net = cifar_cnn()
    r8, r32 = cost(net, "int8_int32", arr), cost(net, "fp32", arr, baseline=None)
    fc8, fc32 = r8.layer("fc1"), r32.layer("fc1")
    assert fc32.memory_cycles > fc32.compute_cycles  # the dense layer waits for DRAM
    assert fc8.cycles == fc8.memory_cycles == math.ceil(fc8.dram_bytes / 17.064)
    assert fc8.cycles < fc32.cycles


def test_sram_capacity_counts_bits():
    """A 64 KiB activation tensor: as fp32 it overflows half of a 64 KiB ifmap SRAM and is read once per
    column fold; as int4 (8 KiB) it fits and is read once."""
    net = ir.Network("c", (32, 32, 16), [ir.Conv2D("c", ("input",), kernel=__import__("numpy").zeros(
        (1, 1, 16, 96), "float32"), bias=None)])
    arr = STALL_FREE.with_(ifmap_sram_kb=64)
    in_elems = 32 * 32 * 16
    col_folds = 3  # 96 filters on 32 columns
    r4 = cost(net, spec("int4", "int4"), arr, baseline=None).layers[0]
    r32 = cost(net, "fp32", arr, baseline=None).layers[0]
    w = 16 * 96
    assert r4.dram_bits == in_elems * 4 + w * 4 + 32 * 32 * 96 * 4
    assert r32.dram_bits == in_elems * 32 * col_folds + w * 32 + 32 * 32 * 96 * 32


def test_leakage_is_area_times_time():
    net = cifar_cnn()
    r = cost(net, "int8_int32", STALL_FREE)
    et = STALL_FREE.energy
    for l in r.layers:
        assert l.leak_pj == pytest.approx(et.leakage_mw_per_mm2 * r.area_mm2 * l.cycles / 1e9 * 1e9)
    slow = cost(net, "int8_int32", STALL_FREE.with_(clock_hz=5e8), baseline=None)
    assert slow.energy_by_component["leak"] == pytest.approx(2 * r.energy_by_component["leak"])
    serial = cost(net, spec("int8", "int8"), STALL_FREE.with_(pe="bit_serial"), baseline=None)
    assert serial.energy_by_component["leak"] / serial.area_mm2 == pytest.approx(
        8 * r.energy_by_component["leak"] / r.area_mm2)


def test_stochastic_rounding_pays_for_random_bits():
    net = cifar_cnn()
    near = cost(net, spec("fp8_e4m3", "fp8_e4m3", "fp16"), STALL_FREE, baseline=None)
    sto = cost(net, spec("fp8_e4m3", "fp8_e4m3", "fp16", rounding="stochastic", rand_bits=16), STALL_FREE,
               baseline=None)
    assert near.energy_by_component["rng"] == 0
    assert sto.energy_by_component["rng"] == pytest.approx(near.macs * 16 * STALL_FREE.energy.rng_pj_per_bit)
    assert sto.energy_pj > near.energy_pj and sto.area_mm2 > near.area_mm2
