"""The energy table (hwsim/energy.py) against published figures.

External numbers used here: M. Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): int8 mult
0.2 pJ, int32 mult 3.1 pJ, fp16 mult 1.1 pJ, fp32 mult 3.7 pJ, fp32 add 0.9 pJ, int8/16/32 add
0.03/0.05/0.1 pJ, 8 KB SRAM 10 pJ per 64-bit read, DRAM 1.3-2.6 nJ per 64-bit access; M. van Baalen et
al., "FP8 versus INT8 for efficient deep learning inference" (2023): an FP8 MAC costs 1.5x-2.8x an
INT8 one in hardware.
"""

from __future__ import annotations

import math

import pytest

import kernels
from hwsim.energy import EnergyTable, storage_bits

HOROWITZ_MUL = {"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7}
HOROWITZ_ADD = {"int8": 0.03, "int16": 0.05, "int32": 0.1, "fp32": 0.9}


@pytest.fixture(scope="module")
def table():
    return EnergyTable.default()


@pytest.mark.parametrize("fmt,pj", sorted(HOROWITZ_MUL.items()))
def test_horowitz_multiply_points(table, fmt, pj):
    assert table.mul_pj(fmt) == pytest.approx(pj, rel=0.05)


@pytest.mark.parametrize("fmt,pj", sorted(HOROWITZ_ADD.items()))
def test_horowitz_add_points(table, fmt, pj):
    assert table.add_pj(fmt) == pytest.approx(pj, rel=0.05)


def test_names_and_objects_agree(table):
    # e5m10 is fp16's layout, fixed16.8 is a 16-bit integer datapath: names and objects price alike.
    assert table.mul_pj("e5m10") == table.mul_pj("fp16") == table.mul_pj(kernels.parse_format("fp16"))
    assert table.mul_pj("fixed16.8") == table.mul_pj("int16")
    assert table.add_pj("fixed16.8") == table.add_pj("int16")


def test_cost_grows_with_width(table):
    ints = [table.mul_pj(f"int{b}") for b in (2, 4, 8, 16, 24, 32)]
    assert ints == sorted(ints) and len(set(ints)) == len(ints)
    floats = [table.mul_pj(f) for f in ("fp4_e2m1", "fp8_e5m2", "fp8_e4m3", "bf16", "fp16", "fp32")]
    assert floats == sorted(floats)
    # bf16 has 7 mantissa bits, fp16 10: bf16 multiplies are cheaper although both are 16 bits wide
    assert table.mul_pj("bf16") < 0.75 * table.mul_pj("fp16")


def test_fp8_mac_vs_int8_mac_van_baalen(table):
    ratio = table.mac_pj("fp8_e4m3_fp16") / table.mac_pj("int8_int32")
    assert 1.5 <= ratio <= 2.8, ratio


def test_mac_is_multiply_plus_accumulate(table):
    spec = kernels.MacSpec.preset("fp16_fp32")
    assert table.mac_pj(spec) == pytest.approx(table.mul_pj("fp16") + table.add_pj("fp32"))
    assert table.mac_pj("fp16_fp32") == table.mac_pj(spec)
    # Horowitz's int8 MAC (0.2 mult + 0.1 32-bit add) ~ 0.3 pJ, fp32 MAC 3.7 + 0.9 = 4.6 pJ
    assert table.mac_pj("int8_int32") == pytest.approx(0.3, rel=0.05)
    assert table.mac_pj("fp32") == pytest.approx(4.6, rel=0.05)


def test_mixed_operands_use_the_wider_multiplier(table):
    int8, int4, fp16, fp8 = (kernels.parse_format(n) for n in ("int8", "int4", "fp16", "fp8_e4m3"))
    acc = kernels.parse_format("int32")
    spec = kernels.MacSpec(a=int8, b=int4, product=None, accum=acc, out=int8)
    assert table.mac_pj(spec) == pytest.approx(table.mul_pj("int8") + table.add_pj("int32"))
    spec = kernels.MacSpec(a=fp8, b=fp16, product=None, accum=kernels.parse_format("fp32"), out=fp16)
    assert table.mac_pj(spec) == pytest.approx(table.mul_pj("fp16") + table.add_pj("fp32"))
    # int8 x fp8_e4m3: a float multiplier with an 8-bit significand, dearer than the fp8 (4-bit) one
    spec = kernels.MacSpec(a=int8, b=fp8, product=None, accum=kernels.parse_format("fp32"), out=fp16)
    mul = table.mac_pj(spec) - table.add_pj("fp32")
    assert table.mul_pj("fp8_e4m3") < mul < table.mul_pj("fp16")


def test_mx_multiply_amortises_the_block_scale(table):
    mx, elem = kernels.parse_format("mxfp8_e4m3"), kernels.parse_format("fp8_e4m3")
    extra = table.mul_pj(mx) - table.mul_pj(elem)
    # more than the bare element multiply, less than one full 8-bit add per MAC
    assert 0 < extra < table.add_pj("int8") / 8
    assert storage_bits(mx) == pytest.approx(8 + 8 / 32)


def test_sram_scaling_and_dram(table):
    assert table.sram_pj_per_bit(8) * 64 == pytest.approx(10.0)
    assert table.sram_pj_per_bit(32) == pytest.approx(2 * table.sram_pj_per_bit(8))
    # Horowitz: DRAM 1.3-2.6 nJ per 64-bit access
    assert 1300 / 64 * 0.99 <= table.dram_pj_per_bit <= 2600 / 64
    assert table.rf_pj_per_bit < table.sram_pj_per_bit(8)


def test_default_toml_is_the_default_table():
    from hwsim.array import CONFIG_DIR

    assert EnergyTable.from_toml(CONFIG_DIR / "horowitz45.toml") == EnergyTable.default()


def test_toml_table_replaces_values(tmp_path, table):
    p = tmp_path / "e.toml"
    p.write_text('[energy]\nname = "mine"\ndram_pj_per_bit = 5.0\n[energy.int_add]\nc1 = 0.003125\n')
    t = EnergyTable.from_toml(p)
    assert t.name == "mine" and t.dram_pj_per_bit == 5.0
    assert t.add_pj("int8") == pytest.approx(0.025)  # the pure 0.003125*b line
    assert t.mul_pj("int8") == table.mul_pj("int8")  # unspecified entries keep the default


@pytest.mark.parametrize("text,needles", [
    ("[energy]\ndram_pj_per_bitt = 1.0\n", ["dram_pj_per_bitt", "valid", "dram_pj_per_bit"]),
    ("[energy]\ndram_pj_per_bit = -1.0\n", ["dram_pj_per_bit", "-1.0"]),
    ("[energy]\ndram_pj_per_bit = \"lots\"\n", ["dram_pj_per_bit", "lots"]),
    ("[energy.int_mul]\nc3 = 1.0\n", ["int_mul", "c3", "c0, c1, c2"]),
    ("[energy]\nint_mul = 3\n", ["int_mul", "c0, c1, c2"]),
    ("[energy]\nsram_ref_kb = 0\n", ["sram_ref_kb"]),
    ("[energy\ndram = 1\n", ["not valid TOML"]),
])
def test_malformed_tables_are_rejected_clearly(tmp_path, text, needles):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ValueError) as exc:
        EnergyTable.from_toml(p)
    for n in needles:
        assert n in str(exc.value), (n, str(exc.value))


def test_bad_format_and_spec_names(table):
    with pytest.raises(ValueError, match="int7x"):
        table.mul_pj("int7x")
    with pytest.raises(ValueError, match="MacSpec"):
        table.mac_pj(42)
    with pytest.raises(ValueError, match="format"):
        table.add_pj(3.5)


def test_all_formats_have_finite_positive_costs(table):
    for name in sorted(set(kernels.FORMATS)):
        fmt = kernels.FORMATS[name]
        if getattr(fmt, "has_zero", True) is False:
            continue  # the E8M0 scale format is not an arithmetic operand
        for v in (table.mul_pj(fmt), table.add_pj(fmt)):
            assert math.isfinite(v) and v > 0, (name, v)
