"""The bit-width sweep: grid parsing, resume, Dask = serial, errors, report, and the golden sweep.

Most tests sweep tests/golden/tiny_cnn.keras (a small trained CNN, about 30 k MACs per image) on a
few CIFAR-10 test images, so they take seconds. The golden test compares a fixed-seed sweep with the
committed tests/golden/sweep_small*.csv exactly (see tests/golden/README.md to regenerate them).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwsim import sweep as G
from hwsim import sweep_exec as X

GOLDEN = Path(__file__).with_name("golden")
TINY = GOLDEN / "tiny_cnn.keras"

# the golden sweep (tests/golden/make_golden.py runs the same)
GOLDEN_ARGS = dict(model=str(TINY), formats="fp32,bf16,fp8_e4m3,int8,int4,mxfp4_e2m1",
                   accum="fp32,fp16,int32,int16,fixed16.8,fixed16.-4", rounding="nearest,stochastic", seeds=2,
                   limit=100, calibration=32)


def _settings(**kw):
    args = dict(model=str(TINY), formats="fp32,bf16", accum="fp32", rounding="nearest,stochastic", seeds=1,
                limit=20, calibration=20)
    args.update(kw)
    return X.make_settings(**args)


def _points_sans_time(path) -> str:
    """points.csv without the timing and checksum columns, rows sorted by point (order depends on completion)."""
    with open(Path(path) / X.POINTS_FILE, newline="") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], rows[1:]
    keep = [i for i, c in enumerate(head) if c not in ("seconds", "checksum")]  # both vary per run
    body = sorted(([r[i] for i in keep] for r in body if len(r) == len(head)), key=lambda r: r[:5])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([head[i] for i in keep])
    w.writerows(body)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ grid


def test_ranges_families_pairs():
    assert G.parse_formats("int2..int5") == ["int2", "int3", "int4", "int5"]
    assert G.parse_formats("int4..int2") == ["int4", "int3", "int2"]
    assert G.parse_formats("e4m1..e4m3") == ["e4m1", "e4m2", "e4m3"]
    assert G.parse_formats("fixed8.4..fixed10.4") == ["fixed8.4", "fixed9.4", "fixed10.4"]
    assert G.parse_formats("fp6, fp4") == ["float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"]
    assert G.parse_formats("fp8") == list(__import__("kernels").formats.FAMILIES["fp8"])
    # aliases resolve to one canonical name; duplicates go
    assert G.parse_formats("fp8_e4m3,float8_e4m3fn,FP16,half") == ["float8_e4m3fn", "fp16"]
    assert G.parse_format_pairs("int4:int8,fp16") == [("int4", "int8"), ("fp16", "fp16")]
    assert G.parse_format_pairs("int2..int3:int8") == [("int2", "int8"), ("int3", "int8")]


@pytest.mark.parametrize("text, bad", [
    ("int8,foo,int99", ["'foo'", "'int99'"]),
    ("int2..fp8", ["int2..fp8"]),
    ("e4m3..e5m4", ["e4m3..e5m4"]),
    ("int4:int8:int2", ["int4:int8:int2"]),
])
def test_bad_formats_are_named(text, bad):
    with pytest.raises(ValueError) as e:
        G.build_grid(text, "fp32", "nearest", 1)
    for b in bad:
        assert b in str(e.value)


def test_bad_accum_rounding_seeds():
    with pytest.raises(ValueError, match="'bogus'"):
        G.build_grid("fp8", "fp32", "nearest,bogus", 1)
    with pytest.raises(ValueError, match="mxfp8_e4m3"):
        G.build_grid("fp8_e4m3", "mxfp8_e4m3", "nearest", 1)
    with pytest.raises(ValueError, match="--seeds"):
        G.build_grid("fp8_e4m3", "fp32", "nearest", 0)
    with pytest.raises(ValueError, match="fp64"):  # 53 + 53 bits: no exact product
        G.build_grid("fp64", "fp64", "nearest", 1)
    with pytest.raises(ValueError, match="pairs up"):
        G.build_grid("int8", "fp16", "nearest", 1)


def test_grid_points_and_pairing():
    g = G.build_grid("fp8_e4m3,int8", "fp32,fp16,int32,fixed16.8,fixed16.-2", "nearest,stochastic", 3)
    assert g.configs[0] == G.BASELINE
    skipped = {k for k, _ in g.skipped}
    assert skipped == {("int8", "int8", "fp32"), ("int8", "int8", "fp16"), ("int8", "int8", "fixed16.8"),
                       ("float8_e4m3fn", "float8_e4m3fn", "int32"), ("float8_e4m3fn", "float8_e4m3fn", "fixed16.-2")}
    cfgs = set(g.configs)
    assert ("float8_e4m3fn", "float8_e4m3fn", "fixed16.8", "stochastic") in cfgs
    # integer operands into int32 are exact: one run, whatever the rounding; a coarse register rounds
    assert ("int8", "int8", "int32", "nearest") in cfgs and ("int8", "int8", "int32", "stochastic") not in cfgs
    assert ("int8", "int8", "fixed16.-2", "stochastic") in cfgs
    pts = g.points
    n_stoch = sum(c[3] == "stochastic" for c in g.configs)
    assert len(pts) == (len(g.configs) - n_stoch) + 3 * n_stoch
    assert {p.seed for p in pts if p.rounding == "nearest"} == {0}
    assert len(set(pts)) == len(pts)


def test_mac_spec_rule_matches_presets():
    from kernels.mac import PRESETS

    assert G.mac_spec("fp32", "fp32", "fp32", "nearest") == PRESETS["fp32"]
    assert G.mac_spec("fp16", "fp16", "fp16", "nearest") == PRESETS["fp16_fp16"]
    s = G.mac_spec("fp8_e4m3", "fp8_e4m3", "fp16", "stochastic")
    assert s.product is None and s.accum.name == "fp16" and s.accum_rounding == "stochastic"
    s = G.mac_spec("int4", "int8", "int32", "nearest")
    assert (s.a.name, s.b.name, s.product) == ("int8", "int4", None)
    # fixed-point operands: an integer accumulator keeps the products' binary point (mxint8: 1.6 elements)
    assert G.mac_spec("mxint8", "mxint8", "int32", "nearest").accum.name == "fixed32.12"
    assert G.mac_spec("fixed8.4", "int8", "fixed16.-2", "nearest").accum.name == "fixed16.2"


def test_subset_is_balanced():
    idx = X.subset(10000, 200)
    assert len(set(idx)) == 200 and idx[0] == 0 and idx[-1] == 9950
    assert np.bincount(idx // 1000).tolist() == [20] * 10
    assert np.array_equal(X.subset(50, None), np.arange(50))


# ------------------------------------------------------------------------------------------------ evaluation


def test_evaluate_equals_runner_accuracy():
    """The sweep's batch loop is hwsim.run's: same counts for any batch size, stochastic included."""
    import hwsim

    st = _settings(formats="fp32", accum="fp16", rounding="stochastic", limit=30)
    p = G.Point("fp32", "fp32", "fp16", "stochastic", 1)
    row = X.evaluate(st, p, batch_size=7)
    ctx = X.context(st)
    acc = hwsim.accuracy(ctx.network, ctx.images, ctx.labels, mac=G.mac_spec(*p.config), seed=1, progress=False)
    assert row["correct"] == round(acc * 30)
    assert X.evaluate(st, p, batch_size=250)["outputs_sha256"] == row["outputs_sha256"]
    other = X.evaluate(st, G.Point("fp32", "fp32", "fp16", "stochastic", 2))
    assert other["outputs_sha256"] != row["outputs_sha256"]  # the seed matters
    # through the quantizer too (float operands, fixed-point accumulator; coarse integer register)
    st = _settings(formats="bf16,int4", accum="fixed16.8,fixed16.-4", rounding="stochastic", limit=30)
    for p in X.grid_of(st).points[1:]:
        assert X.evaluate(st, p, batch_size=7)["outputs_sha256"] == X.evaluate(st, p)["outputs_sha256"], p


# ------------------------------------------------------------------------------------------------ resume


def test_resume_recomputes_nothing_and_matches_uninterrupted(tmp_path, monkeypatch):
    st = _settings()  # 4 points: fp32/bf16 x nearest/stochastic(1 seed)
    assert len(X.grid_of(st).points) == 4
    full, part = tmp_path / "full", tmp_path / "part"
    X.run_sweep(st, full, serial=True, progress=False, figures=False)

    first = X.run_sweep(st, part, serial=True, progress=False, max_points=2, figures=False)
    assert (first.evaluated, first.complete) == (2, False)
    before = (part / X.POINTS_FILE).read_bytes()
    calls = []
    real = X.evaluate
    monkeypatch.setattr(X, "evaluate", lambda s, p, **kw: calls.append(p) or real(s, p, **kw))
    second = X.run_sweep(st, part, serial=True, progress=False, figures=False)
    assert len(calls) == 2 and second.already == 2 and second.complete
    assert not {p.key for p in calls} & set(X.read_points(part)) - {p.key for p in calls}
    assert (part / X.POINTS_FILE).read_bytes().startswith(before)  # appended, never truncated
    assert (part / X.RESULTS_CSV).read_text() == (full / X.RESULTS_CSV).read_text()
    assert _points_sans_time(part) == _points_sans_time(full)
    calls.clear()
    X.run_sweep(st, part, serial=True, progress=False, figures=False)
    assert calls == []


def test_interrupt_then_resume(tmp_path, monkeypatch):
    """Ctrl-C in the third point: two points saved; the torn last line of a killed write is reported,
    removed and its point computed again."""
    st = _settings()
    out = tmp_path / "s"
    real = X.evaluate
    n = []

    def interrupted(s, p, **kw):
        n.append(p)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real(s, p, **kw)

    monkeypatch.setattr(X, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        X.run_sweep(st, out, serial=True, progress=False, figures=False)
    assert len(X.read_points(out)) == 2
    assert len(X.aggregate(st, X.read_points(out))) == 2  # results written for what is done
    with open(out / X.POINTS_FILE, "ab") as fh:  # a kill inside a write leaves a torn line
        fh.write(b"bf16,bf16,fp32,stochastic,0,20,1")
    saved = (out / X.POINTS_FILE).read_bytes()
    monkeypatch.setattr(X, "evaluate", real)
    run = X.run_sweep(st, out, serial=True, progress=False, figures=False)
    assert run.evaluated == 2 and run.complete
    complete = saved[:saved.rindex(b"\n") + 1]
    assert (out / X.POINTS_FILE).read_bytes().startswith(complete)
    assert b"bf16,bf16,fp32,stochastic,0,20,1\n" not in (out / X.POINTS_FILE).read_bytes()
    ref = tmp_path / "ref"
    X.run_sweep(st, ref, serial=True, progress=False, figures=False)
    assert (out / X.RESULTS_CSV).read_text() == (ref / X.RESULTS_CSV).read_text()


def test_dask_equals_serial(tmp_path):
    st = _settings(formats="fp32,fp8_e4m3,int4", accum="fp32,fp16,int32", seeds=2, limit=20)
    ser, par = tmp_path / "serial", tmp_path / "dask"
    X.run_sweep(st, ser, serial=True, progress=False, figures=False)
    run = X.run_sweep(st, par, workers=2, progress=False, figures=False)
    assert run.complete and run.evaluated == len(X.grid_of(st).points)
    assert (par / X.RESULTS_CSV).read_text() == (ser / X.RESULTS_CSV).read_text()
    assert _points_sans_time(par) == _points_sans_time(ser)


# ------------------------------------------------------------------------------------------------ bad input


def test_different_settings_is_an_error_and_touches_nothing(tmp_path):
    out = tmp_path / "s"
    X.run_sweep(_settings(), out, serial=True, progress=False, max_points=1, figures=False)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    other = _settings(limit=10, formats="fp32,bf16,int8", accum="fp32,int32")
    with pytest.raises(X.SweepError) as e:
        X.run_sweep(other, out, serial=True, progress=False, figures=False)
    msg = str(e.value)
    assert "different settings" in msg and "images: 20 in DIR, 10 now" in msg and "formats:" in msg
    assert "accum:" in msg and "seeds" not in msg
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_results_without_settings_are_not_overwritten(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / X.RESULTS_CSV).write_text("precious\n")
    with pytest.raises(X.SweepError, match="no sweep.json"):
        X.run_sweep(_settings(), out, serial=True, progress=False, figures=False)
    assert (out / X.RESULTS_CSV).read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == [X.RESULTS_CSV]


def test_unwritable_dir(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(X.SweepError, match="not a directory"):
        X.run_sweep(_settings(), f, serial=True, progress=False, figures=False)
    with pytest.raises(X.SweepError, match="cannot write"):
        X.run_sweep(_settings(), f / "sub", serial=True, progress=False, figures=False)
    assert f.read_text() == "x"


def test_second_sweep_in_same_dir_is_refused(tmp_path):
    st = _settings()
    with X.SweepDir(tmp_path / "s", st):
        with pytest.raises(X.SweepError, match="another sweep is running"):
            X.SweepDir(tmp_path / "s", st).open()


def test_cli_errors(tmp_path, capsys):
    from hwsim.cli import main

    assert main(["sweep", "--formats", "int8,nope4", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "'nope4'" in err and "Traceback" not in err
    assert main(["sweep", "--model", "resnet9000", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "resnet9000" in err and "cifar_cnn" in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_sweep_writes_everything(tmp_path, capsys):
    from hwsim import plots, report
    from hwsim.cli import main

    out = tmp_path / "cli"
    args = ["sweep", "--model", str(TINY), "--formats", "fp32,fp8_e4m3,int4", "--accum", "fp32,fp16,int32",
            "--seeds", "2", "--limit", "20", "--calibration", "20", "--serial", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "sweep complete" in text and "fp8_e4m3" in text and "int4" in text
    for name in (X.SETTINGS_FILE, X.POINTS_FILE, X.RESULTS_CSV, X.RESULTS_JSON, report.SUMMARY_FILE, plots.BITS_PNG,
                 plots.ENERGY_PNG, plots.ROUNDING_PNG):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / X.RESULTS_CSV)))
    # baseline; fp32 operands: fp32 stochastic, fp16 x 2 roundings; fp8: 2 accumulators x 2; int4 x int32 (exact)
    assert len(rows) == 1 + 3 + 4 + 1
    assert main(args) == 0  # rerun: nothing to do (13 points: stochastic ones twice)
    assert "0 points evaluated, 13 already" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ report


def test_report_rerenders(tmp_path, capsys):
    from hwsim import plots, report
    from hwsim.cli import main

    out = tmp_path / "s"
    X.run_sweep(_settings(), out, serial=True, progress=False)
    results = (out / X.RESULTS_CSV).read_text()
    summary = (out / report.SUMMARY_FILE).read_text()
    for name in (X.RESULTS_CSV, X.RESULTS_JSON, report.SUMMARY_FILE, plots.BITS_PNG, plots.ENERGY_PNG,
                 plots.ROUNDING_PNG):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / X.RESULTS_CSV).read_text() == results
    assert (out / report.SUMMARY_FILE).read_text() == summary
    for name in (plots.BITS_PNG, plots.ENERGY_PNG, plots.ROUNDING_PNG):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "bf16" in text and "top-1" in text
    assert "| bf16 | fp32 | stochastic | 1 |" in summary


def test_pareto_front():
    rows = [dict(energy_pj=e, accuracy_mean=a) for e, a in [(3, 0.9), (1, 0.5), (2, 0.5), (2, 0.8), (4, 0.9)]]
    assert X.pareto_front(rows) == [0, 1, 3]


# ------------------------------------------------------------------------------------------------ golden


def test_golden_sweep(tmp_path):
    """Any change in numerics (kernels, quantizer, runner, cost model) changes these files. If the change
    is intended, regenerate them deliberately (tests/golden/README.md) and say why in the commit."""
    out = tmp_path / "golden"
    X.run_sweep(X.make_settings(**GOLDEN_ARGS), out, serial=True, progress=False, figures=False)
    assert (out / X.RESULTS_CSV).read_text() == (GOLDEN / "sweep_small.csv").read_text()
    assert _points_sans_time(out) == (GOLDEN / "sweep_small_points.csv").read_text()


# ------------------------------------------------------------------------------------------------ hardware


def test_hardware_change_recosts_without_rerunning(tmp_path, monkeypatch, capsys):
    """Costs are derived from the recorded points: a rerun on another array evaluates nothing, rewrites the
    hardware in sweep.json and re-derives every cost (here: iso-area, then a stall-free array)."""
    from hwsim.array import CONFIG_DIR

    out = tmp_path / "s"
    st = _settings(formats="fp32,int8", accum="fp32,int32", rounding="nearest", limit=10)
    X.run_sweep(st, out, serial=True, progress=False, figures=False)
    first = {r["label"]: r for r in json.loads((out / X.RESULTS_JSON).read_text())["results"]}
    monkeypatch.setattr(X, "evaluate", lambda *a, **k: pytest.fail("a recorded point was evaluated again"))
    iso = _settings(formats="fp32,int8", accum="fp32,int32", rounding="nearest", limit=10, iso_area=True)
    X.run_sweep(iso, out, serial=True, progress=False, figures=False)
    assert "costing on another array" in capsys.readouterr().err
    assert json.loads((out / X.SETTINGS_FILE).read_text())["iso_area"] is True
    rows = {r["label"]: r for r in json.loads((out / X.RESULTS_JSON).read_text())["results"]}
    i8 = "int8, acc int32, nearest"
    assert rows[i8]["accuracy_mean"] == first[i8]["accuracy_mean"]
    assert first[i8]["array"] == "32x32" and rows[i8]["array"] == "25 x 32x32"
    assert rows[i8]["throughput_ratio"] > first[i8]["throughput_ratio"]
    assert rows[i8]["area_ratio"] == pytest.approx(25 * first[i8]["area_ratio"])
    free = _settings(formats="fp32,int8", accum="fp32,int32", rounding="nearest", limit=10,
                     array=str(CONFIG_DIR / "array_32x32_os_stallfree.toml"))
    X.run_sweep(free, out, serial=True, progress=False, figures=False)
    rows = {r["label"]: r for r in json.loads((out / X.RESULTS_JSON).read_text())["results"]}
    assert rows[i8]["cycles_ratio"] == 1.0  # stall-free fixed PEs: every format takes SCALE-Sim's cycles


def test_bit_fusion_sweep_refuses_float_formats():
    with pytest.raises(ValueError) as exc:
        _settings(formats="fp32,bf16,int4", accum="fp32,int32", pe="bit_fusion")
    msg = str(exc.value)
    assert "bf16, acc fp32, nearest" in msg and "bit_fusion" in msg and "int4" not in msg.split(":")[0]
    st = _settings(formats="fp32,int4", accum="fp32,int32", rounding="nearest", pe="bit_fusion")
    assert st["array"]["pe"] == "bit_fusion"


def test_points_with_cost_columns_are_migrated(tmp_path):
    """A points.csv of the hwsim that recorded costs per point: checked against its checksums, rewritten
    without the cost columns; a damaged record is still caught."""
    out = tmp_path / "s"
    st = _settings(formats="fp32", accum="fp32", rounding="nearest", limit=10)
    X.run_sweep(st, out, serial=True, progress=False, figures=False)
    (row,) = X.read_points(out).values()
    old = {**row, "energy_pj": 1.5, "cycles": 7, "fp32_energy_pj": 1.5, "fp32_cycles": 7}
    fields = [X._fmt(old[c]) for c in X.POINT_FIELDS_V1]
    bad = list(fields)
    bad[7] = "0.5"  # accuracy edited by hand: the checksum no longer matches
    text = ",".join(X.POINT_FIELDS_V1 + ("checksum",)) + "\n"
    text += ",".join(fields + [X.row_checksum(fields)]) + "\n" + ",".join(bad + [X.row_checksum(fields)]) + "\n"
    (out / X.POINTS_FILE).write_text(text)
    rows, problems, legacy = X.scan_points(out)
    assert legacy and len(rows) == 1 and [p[1] for p in problems] == ["checksum mismatch: the record was edited or damaged"]
    X.repair_points(out)
    assert (out / X.POINTS_FILE).read_text().splitlines()[0] == ",".join(X.POINT_COLUMNS)
    assert X.scan_points(out) == (rows, [], False)


def test_network_cache_is_reused(tmp_path, monkeypatch):
    """The second load of a model comes from the IR cache, without the frontend (a NameError in the cache
    check once made every load rebuild it silently)."""
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path / "cache"))
    from hwsim import data, frontends

    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    sha = X._sha256_file(TINY)
    first = X.load_network_cached(TINY, sha)
    monkeypatch.setattr(frontends, "load_model", lambda *a, **k: pytest.fail("the cached IR was not used"))
    again = X.load_network_cached(TINY, sha)
    assert [l.name for l in again.layers] == [l.name for l in first.layers]


def test_bit_fusion_sweep_runs_to_its_report(tmp_path):
    """A sweep on Bit Fusion PEs: the integer configurations are costed on them, the float32 baseline on
    fixed PEs of the same array (it failed at report time, after every point had run)."""
    st = _settings(formats="fp32,int8,int4", accum="fp32,int32", rounding="nearest", limit=10, pe="bit_fusion")
    run = X.run_sweep(st, tmp_path / "s", serial=True, progress=False, figures=False)
    rows = {r["label"]: r for r in run.results}
    base, i4, i8 = rows["fp32, acc fp32, nearest"], rows["int4, acc int32, nearest"], rows["int8, acc int32, nearest"]
    assert base["area_ratio"] == 1.0 and base["cycles_ratio"] == 1.0
    assert i8["area_mm2"] == i4["area_mm2"]  # the same fusion units at both precisions
    assert i4["cycles"] < i8["cycles"]  # four int4 x int4 MACs per unit and cycle
