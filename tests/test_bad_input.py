"""No silent wrong answers: every reproduction of issue "every bad input gets the right result or a clear
error" gives one of the two. Errors are ValueError / FileNotFoundError naming the bad value and what
would be valid; the command-line cases run the real ``hwsim`` command in a fresh process."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import hwsim
import kernels
from hwsim import sweep_exec as X
from kernels.mac import MacSpec, as_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "golden" / "tiny_cnn.keras"


def hwsim_cli(*args, env=None, **kw):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def tiny():
    return hwsim.load_model(str(TINY))


# ------------------------------------------------------------------------------------------------ 1. presets


def test_float_network_with_integer_preset_is_refused(tiny):
    x = np.zeros((2, *tiny.input_shape), np.uint8)
    for preset in ("int8_int32", "int4_int16"):
        with pytest.raises(ValueError, match=r"need quantizer scales.*quantize_model"):
            hwsim.run(tiny, x, mac=preset)
    with pytest.raises(ValueError, match="float4_e2m1fn"):
        hwsim.run(tiny, x, mac=MacSpec("fp4_e2m1", "fp32", fma=True))
    hwsim.run(tiny, x, mac="fp8_e4m3_fp16")  # fp8 e4m3 holds 0..255: runs unscaled
    hwsim.run(tiny, x, mac=MacSpec("mxfp4_e2m1", "fp32", fma=True))  # MX carries block scales


def test_hwsim_run_quantizes_for_an_integer_preset():
    """The command quantizes the float model (calibrated on training images), says so, and reaches the
    float accuracy's neighbourhood instead of chance (0.1)."""
    res = hwsim_cli("run", "--model", "cifar_cnn", "--mac", "int8_int32", "--limit", "100")
    assert res.returncode == 0, res.stderr
    assert "quantizing the float model first" in res.stderr and "calibrated on 200 training images" in res.stderr
    acc = float(res.stdout.split("top-1 accuracy")[1].split()[0])
    assert acc > 0.6


# ------------------------------------------------------------------------------------------------ 2. --limit


@pytest.mark.parametrize("cmd", ["run", "sweep"])
@pytest.mark.parametrize("bad", ["0", "-3", "abc", "1.5"])
def test_limit_must_be_positive_or_all(cmd, bad):
    res = hwsim_cli(cmd, "--limit", bad)
    assert res.returncode == 2
    assert f"argument --limit: must be a positive number of images or 'all', got '{bad}'" in res.stderr


def test_limit_all_is_the_whole_test_set():
    from hwsim.commands import limit_arg

    assert limit_arg("all") is None and limit_arg("ALL") is None and limit_arg("7") == 7


# ------------------------------------------------------------------------------------------------ 3. data


def test_a_missing_data_path_is_an_error_not_other_data(tmp_path):
    from hwsim.data import load_cifar10

    os.environ["HWSIM_DATA"] = str(tmp_path / "nonexistent.tar.gz")
    try:
        with pytest.raises(FileNotFoundError, match="nonexistent.tar.gz: does not exist"):
            load_cifar10("test", cache=False)
        bad = tmp_path / "corrupt.tar.gz"
        bad.write_bytes(b"not a tar archive at all")
        os.environ["HWSIM_DATA"] = str(bad)
        with pytest.raises(ValueError, match="corrupt.tar.gz: not a tar archive"):
            load_cifar10("test", cache=False)
    finally:
        del os.environ["HWSIM_DATA"]


def test_sweep_with_a_mistyped_data_path_fails(tmp_path):
    res = hwsim_cli("sweep", "--limit", "4", "--out", str(tmp_path / "s"),
                    env={"HWSIM_DATA": str(tmp_path / "nonexistent.tar.gz"), "HWSIM_CACHE": str(tmp_path / "c")})
    assert res.returncode == 2 and "nonexistent.tar.gz: does not exist" in res.stderr


# ------------------------------------------------------------------------------------------------ 4. labels


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 10]), r"label 10 at index 1 is not a class index.*valid 0\.\.9"),
    (np.array([-1, 0]), r"label -1 at index 0"),
    (np.array(["cat", "dog"]), "integer class indices, got dtype <U3"),
    (np.array([1.0, 2.0]), r"integer class indices, got dtype float64 \(convert"),
    (np.eye(10)[[3, 4]], r"one-hot\? pass labels.argmax\(axis=1\)"),
    (np.array([1, 2, 3]), "2 images but 3 labels"),
])
def test_bad_labels_are_refused(tiny, labels, match):
    x = np.zeros((2, *tiny.input_shape), np.uint8)
    with pytest.raises(ValueError, match=match):
        hwsim.accuracy(tiny, x, labels, progress=False)


def test_good_labels_give_the_accuracy(tiny):
    x = np.random.default_rng(0).integers(0, 256, (6, *tiny.input_shape)).astype(np.uint8)
    pred = hwsim.run(tiny, x).argmax(1)
    assert hwsim.accuracy(tiny, x, pred, progress=False) == 1.0
    assert hwsim.accuracy(tiny, x, (pred + 1) % 10, progress=False) == 0.0


# ------------------------------------------------------------------------------------------------ 5. input types


@pytest.mark.parametrize("bad,kind", [
    (np.array([1 + 2j, 3.0]), "complex"), (np.array(["1.5", "2"]), "string"),
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "datetime64"), (np.array([1, None], dtype=object), "object"),
])
def test_non_real_inputs_are_refused(tiny, bad, kind):
    with pytest.raises(ValueError, match=kind):
        kernels.quantize(bad, "int8")
    with pytest.raises(ValueError, match=kind):
        kernels.matmul(bad.reshape(1, -1), np.ones((bad.size, 1)), "fp32")
    imgs = np.zeros((1, *tiny.input_shape), dtype=bad.dtype) if kind != "object" else \
        np.zeros((1, *tiny.input_shape)).astype(object)
    with pytest.raises(ValueError, match=kind):
        hwsim.run(tiny, imgs)


def test_images_scaled_to_unit_range_are_refused(tiny):
    x = np.random.default_rng(1).random((2, *tiny.input_shape)).astype(np.float32)
    with pytest.raises(ValueError, match=r"takes raw pixels 0\.\.255"):
        hwsim.run(tiny, x)
    hwsim.run(tiny, x * 255)  # raw pixels as floats are fine


def test_nan_images_are_refused(tiny):
    x = np.full((1, *tiny.input_shape), 100.0, np.float32)
    x[0, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN / infinite value\(s\), the first nan at index \(0, 1, 2, 0\)"):
        hwsim.run(tiny, x)


# ------------------------------------------------------------------------------------------------ 6. crashes


def test_cost_csv_into_a_directory_fails_before_the_work(tmp_path):
    res = hwsim_cli("cost", "--model", "cifar_cnn", "--mac", "int8_int32", "--csv", str(tmp_path))
    assert res.returncode == 2 and "is a directory; give a file path" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""  # nothing computed


def test_formats_into_a_closed_pipe_is_quiet():
    """The reader is gone before hwsim writes (it closes the pipe at once, while the interpreter still
    starts), so the write really meets a closed pipe: the command must end with SIGPIPE's status 141
    and no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "hwsim.cli", "formats"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_conv_kernel_larger_than_input_with_valid_padding():
    x = np.zeros((1, 3, 3, 2))
    with pytest.raises(ValueError, match="5x5 kernel is larger than the 3x3 input with padding='valid'"):
        kernels.conv2d(x, np.zeros((5, 5, 2, 4)), "fp32")
    with pytest.raises(ValueError, match="larger than the 3x3 input"):
        kernels.depthwise_conv2d(x, np.zeros((1, 4, 2, 1)), "fp32")
    assert kernels.conv2d(x, np.zeros((5, 5, 2, 4)), "fp32", padding="same").shape == (1, 3, 3, 4)


@pytest.mark.parametrize("shape", [(0, 3, 2, 4), (3, 0, 2, 4)])
def test_conv_weights_with_a_zero_dimension(shape):
    with pytest.raises(ValueError, match=r"window; it needs at least one tap"):
        kernels.conv2d(np.zeros((1, 5, 5, 2)), np.zeros(shape), "fp32")


def test_zero_channels_are_a_valid_empty_result():
    """Zero output channels (or zero input channels: sums of no products) are well defined, not errors."""
    assert kernels.conv2d(np.zeros((1, 5, 5, 2)), np.zeros((3, 3, 2, 0)), "fp32").shape == (1, 3, 3, 0)
    y = kernels.conv2d(np.zeros((1, 5, 5, 0)), np.zeros((3, 3, 0, 4)), "fp32")
    assert y.shape == (1, 3, 3, 4) and not y.any()


def test_macspec_names_a_bad_preset():
    with pytest.raises(ValueError, match=r"'bogus_preset' is not a preset either; presets: int8_int32"):
        MacSpec("bogus_preset")
    assert MacSpec("fp8_e4m3_fp16") == as_spec("fp8_e4m3_fp16")
    with pytest.raises(ValueError, match=r"takes no other fields \(got rounding\)"):
        MacSpec("int8_int32", rounding="stochastic")


def test_train_init_from_a_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    res = hwsim_cli("train", "cifar_cnn", "--limit", "8", "--epochs", "1", "--init-from", str(bad),
                    "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "o.keras"))
    assert res.returncode == 2
    assert "exists but is not a readable Keras model" in res.stderr and "File not found" not in res.stderr


def test_train_out_that_cannot_be_written_fails_before_training(tmp_path):
    res = hwsim_cli("train", "cifar_cnn", "--limit", "8", "--epochs", "1", "--out", "/proc/x.keras",
                    "--checkpoint-dir", str(tmp_path / "ck"))
    assert res.returncode == 2 and "out /proc/x.keras: cannot write in /proc" in res.stderr
    assert not (tmp_path / "ck" / "state.json").exists()  # no epoch was trained


# ------------------------------------------------------------------------------------------------ 7. numerics


def test_int64_beyond_2_53_rounds_once():
    """2**60 + 2**36 + 1 lies just above the float32 midpoint 2**60 + 2**36 (float32's step there is
    2**37): exactly rounded it is 2**60 + 2**37; through float64 first it becomes the tie, then 2**60."""
    vals = [2**60 + 2**36 + 1, -(2**60 + 2**36 + 1), 2**60 + 2**36, 2**63 - 1, 2**53 + 1]
    got = kernels.quantize(np.array(vals, np.int64), "fp32")
    want = []
    for v in vals:  # exact: round |v| to 24 significant bits, ties to even
        e = abs(v).bit_length() - 24
        q, r = divmod(abs(v), 2**e)
        q += (Fraction(r, 2**e) > Fraction(1, 2)) or (r == 2 ** (e - 1) and q % 2 == 1)
        want.append(float(q * 2**e) * (1 if v > 0 else -1))
    np.testing.assert_array_equal(got.astype(np.float64), want)
    assert float(got[0]) == 2.0**60 + 2.0**37
    got_u = kernels.quantize(np.array([2**64 - 1, 2**60 + 2**36 + 1], np.uint64), "fp32")
    assert list(got_u.astype(np.float64)) == [2.0**64, 2.0**60 + 2.0**37]
    # shapes survive the exact path: a 0-d input stays 0-d (it came back as shape (1,): the fuzz test found it)
    zero_d = kernels.quantize(np.array(2**60 + 2**36 + 1), "bf16")
    assert zero_d.shape == () and float(zero_d) == 2.0**60
    assert kernels.quantize(np.full((2, 1, 3), 2**53 + 2, np.int64), "fp32").shape == (2, 1, 3)


@pytest.mark.parametrize("seed", [2**64, -1, 2**70])
def test_seeds_outside_64_bits_are_refused(seed, tiny):
    with pytest.raises(ValueError, match=r"seed must be .*\[0, 2\*\*64\)"):
        kernels.quantize(np.ones(3), "fp8_e4m3", rounding="stochastic", seed=seed)
    with pytest.raises(ValueError, match=r"seed must be .*\[0, 2\*\*64\)"):
        hwsim.run(tiny, np.zeros((1, *tiny.input_shape), np.uint8), mac=as_spec("fp8_e4m3_fp16").with_(
            rounding="stochastic"), seed=seed)


def test_axis_for_a_format_without_blocks_is_refused():
    with pytest.raises(ValueError, match="axis=0 applies to MX block formats only; int8 has no blocks"):
        kernels.quantize(np.zeros((2, 3)), "int8", axis=0)
    kernels.quantize(np.zeros((2, 32)), "mxint8", axis=0)


def test_nonfinite_count_names_nans_and_infinities():
    with pytest.raises(ValueError, match=r"1 NaN and 2 infinite value\(s\)"):
        kernels.quantize(np.array([np.inf, np.nan, -np.inf]), "int8", overflow="wrap")
    with pytest.raises(ValueError, match=r"2 NaN;"):
        kernels.quantize(np.array([np.inf, np.nan, np.nan]), "int8")


# ------------------------------------------------------------------------------------------------ 8. records


def _sweep(tmp_path):
    settings = X.make_settings(model=str(TINY), formats="fp32,bf16", accum="fp32", rounding="nearest", seeds=1,
                               limit=4)
    out = tmp_path / "s"
    X.run_sweep(settings, out, serial=True, progress=False, figures=False)
    return settings, out


def _rows(out):
    return list(csv.reader(io.StringIO((out / X.POINTS_FILE).read_text())))


def test_an_edited_record_is_reported_and_recomputed(tmp_path, capsys):
    settings, out = _sweep(tmp_path)
    rows = _rows(out)
    good = rows[1][:]
    rows[1][rows[0].index("correct")] = str(int(rows[1][rows[0].index("correct")]) + 1)
    rows[1][rows[0].index("accuracy")] = repr(int(rows[1][rows[0].index("correct")]) / 4)  # consistent edit
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (out / X.POINTS_FILE).write_text(buf.getvalue())
    assert len(X.read_points(out)) == 1  # the edited record is not trusted
    run = X.run_sweep(settings, out, serial=True, progress=False, figures=False)
    err = capsys.readouterr().err
    assert f"{out / X.POINTS_FILE}:2: checksum mismatch" in err
    assert run.evaluated == 1
    fixed = _rows(out)
    assert len(fixed) == 3
    k = fixed[0].index("seconds")  # the values before the timing
    assert good[:k] in [r[:k] for r in fixed[1:]]  # recomputed: the original values
    assert all(r[:k] != rows[1][:k] for r in fixed[1:])  # the bad line is gone


def test_a_garbled_record_is_removed_and_recomputed(tmp_path, capsys):
    settings, out = _sweep(tmp_path)
    text = (out / X.POINTS_FILE).read_text().splitlines()
    text[2] = text[2][:20] + "#garbage"
    (out / X.POINTS_FILE).write_text("\n".join(text) + "\n")
    run = X.run_sweep(settings, out, serial=True, progress=False, figures=False)
    assert f"{out / X.POINTS_FILE}:3: " in capsys.readouterr().err and run.evaluated == 1
    assert "#garbage" not in (out / X.POINTS_FILE).read_text()


def test_a_zero_byte_points_file_says_so_and_recovers(tmp_path, capsys):
    settings, out = _sweep(tmp_path)
    (out / X.POINTS_FILE).write_bytes(b"")
    run = X.run_sweep(settings, out, serial=True, progress=False, figures=False)
    assert "the file is empty (0 bytes)" in capsys.readouterr().err and run.evaluated == 2 and run.complete


def test_a_rerun_against_other_data_refuses(tmp_path):
    settings, out = _sweep(tmp_path)
    other = dict(settings, data_sha256="0" * 64)
    with pytest.raises(X.SweepError, match="CIFAR-10 test images found now differ"):
        X.run_sweep(other, out, serial=True, progress=False, figures=False)
