"""hwsim.train: schedule, augmentation, a tiny resumable run, the command."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
from PIL import Image

from hwsim import train as tr
from hwsim.data import CLASSES


def test_lr_schedule_shape():
    lr, n = 0.1, 10
    assert tr.lr_at(0, n, lr) == pytest.approx(0.01)  # warm-up starts at lr/10
    assert tr.lr_at(tr.WARMUP * n, n, lr) == pytest.approx(lr)  # peak at the end of warm-up
    assert tr.lr_at(tr.WARMUP * n / 2, n, lr) == pytest.approx(0.01 + 0.09 / 2)  # linear
    mid = tr.WARMUP * n + (1 - tr.WARMUP) * n / 2
    assert tr.lr_at(mid, n, lr) == pytest.approx(lr / 2)  # cosine half-way
    assert tr.lr_at(n, n, lr) == pytest.approx(0, abs=1e-12)
    after = [tr.lr_at(e, n, lr) for e in np.linspace(tr.WARMUP * n, n, 50)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_augment_is_crop_of_padded_image_with_flip():
    rng_img = np.random.default_rng(0)
    imgs = rng_img.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)  # no zeros: padding is detectable
    out = tr.augment(imgs, np.random.default_rng(1))
    assert out.shape == imgs.shape and out.dtype == np.uint8
    padded = np.pad(imgs, ((0, 0), (4, 4), (4, 4), (0, 0)))
    seen_flip, seen_shift = set(), set()
    for k in range(len(imgs)):
        matches = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                   if np.array_equal(out[k], (lambda c: c[:, ::-1] if f else c)(padded[k, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"image {k} is not a flipped/unflipped crop of the padded image"
        seen_flip.add(matches[0][2])
        seen_shift.add(matches[0][:2])
    assert seen_flip == {False, True} and len(seen_shift) > 20  # really random
    np.testing.assert_array_equal(out, tr.augment(imgs, np.random.default_rng(1)))  # seeded


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """An image-folder dataset: 60 train / 20 test PNGs, the class is the brightness."""
    root = tmp_path_factory.mktemp("tinyds")
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        for i in range(n):
            c = i % 3
            img = np.clip(rng.normal(40 + 80 * c, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            d = root / split / CLASSES[c]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path / "cache"))


def _run(tiny_data, ck, **kw):
    args = dict(epochs=2, batch_size=16, seed=3, checkpoint_dir=ck, out=ck / "final.keras",
                results=ck / "res.json", data_path=tiny_data, threads=1, monitor=0, verbose=0)
    args.update(kw)
    return tr.train("cifar_cnn", **args)


def test_tiny_run_resume_equals_uninterrupted(tiny_data, tmp_path, capsys):
    import keras

    rec = _run(tiny_data, tmp_path / "a")
    assert (tmp_path / "a" / "checkpoint.keras").is_file()
    state = json.loads((tmp_path / "a" / "state.json").read_text())
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    # the result record is what the saved model really scores (recomputed independently here)
    saved = keras.models.load_model(tmp_path / "a" / "final.keras", compile=False)
    from hwsim.data import load_cifar10

    x, y = load_cifar10("test", path=tiny_data)
    acc = float(np.mean(np.argmax(saved.predict(x.astype(np.float32), verbose=0), 1) == y))
    assert rec["accuracy"] == pytest.approx(acc) and rec["n_test"] == 20
    assert json.loads((tmp_path / "a" / "res.json").read_text())["cifar_cnn"]["accuracy"] == rec["accuracy"]
    assert rec["macs"] > 20_000_000 and rec["params"] == saved.count_params()
    # cifar_cnn trains under mixed_bfloat16, but the saved model is float32 and the policy restored
    assert tr.HYPER["cifar_cnn"]["policy"] == "mixed_bfloat16"
    assert all(l.dtype_policy.name == "float32" for l in saved.layers)
    assert all(w.dtype == np.float32 for w in saved.get_weights())
    assert keras.config.dtype_policy().name == "float32"

    # interrupted after epoch 1, then resumed with the same arguments
    part = _run(tiny_data, tmp_path / "b", stop_after=1)
    assert part == {"stopped_after_epoch": 1}
    assert json.loads((tmp_path / "b" / "state.json").read_text())["epoch"] == 1
    assert not (tmp_path / "b" / "final.keras").exists()
    first = json.loads((tmp_path / "b" / "state.json").read_text())["history"][0]
    capsys.readouterr()
    _run(tiny_data, tmp_path / "b", verbose=1)
    outtxt = capsys.readouterr().out
    assert "resuming cifar_cnn" in outtxt and "after epoch 1/2" in outtxt
    assert "epoch 1/2" not in outtxt.replace("after epoch 1/2", "")  # epoch 1 not trained again
    state_b = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state_b["history"][0] == first and state_b["epoch"] == 2
    resumed = keras.models.load_model(tmp_path / "b" / "final.keras", compile=False)
    for wa, wb in zip(saved.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # and training did change the weights
    from hwsim import zoo

    keras.utils.set_random_seed(3)
    init = zoo.build("cifar_cnn").get_weights()
    assert not np.array_equal(init[0], saved.get_weights()[0])


def test_checkpoint_with_other_settings_is_refused(tiny_data, tmp_path):
    _run(tiny_data, tmp_path / "c", epochs=1)
    with pytest.raises(ValueError, match=r"checkpoint in .*settings.*'seed': 3.*'seed': 4"):
        _run(tiny_data, tmp_path / "c", epochs=1, seed=4)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"'vgg'.*cifar_cnn, mobilenet"):
        tr.train("vgg")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        tr.train("cifar_cnn", epochs=0)
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        tr.train("cifar_cnn", limit=-5)


def test_command_parses_and_calls_train(monkeypatch, capsys):
    from hwsim.commands import train as cmd

    seen = {}

    def fake_train(name, **kw):
        seen.update(kw, name=name)
        return {"model": name, "accuracy": 0.5, "correct": 5, "n_test": 10}

    monkeypatch.setattr(tr, "train", fake_train)
    p = argparse.ArgumentParser()
    cmd.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["train", "mobilenet", "--epochs", "3", "--batch-size", "32", "--seed", "7",
                         "--checkpoint-dir", "/x", "--out", "/y.keras", "--limit", "100"])
    assert args.func(args) == 0
    assert seen == {"name": "mobilenet", "epochs": 3, "batch_size": 32, "seed": 7, "checkpoint_dir": "/x",
                    "out": "/y.keras", "limit": 100, "threads": None, "results": None, "data_path": None, "verbose": 1,
                    "allow_epochs_change": False, "lr": None, "init_from": None}
    assert "mobilenet: test accuracy 0.5000 (5/10)" in capsys.readouterr().out
    bad = p.parse_args(["train", "nope"])
    with pytest.raises(ValueError, match=r"'nope'.*cifar_cnn, mobilenet"):
        bad.func(bad)


def test_epochs_change_only_when_allowed_and_recorded(tiny_data, tmp_path):
    ck = tmp_path / "d"
    assert _run(tiny_data, ck, epochs=3, stop_after=1) == {"stopped_after_epoch": 1}
    with pytest.raises(ValueError, match="'epochs': 3"):
        _run(tiny_data, ck, epochs=2)
    with pytest.raises(ValueError, match="settings"):  # other settings changed too: still refused
        _run(tiny_data, ck, epochs=2, seed=9, allow_epochs_change=True)
    rec = _run(tiny_data, ck, epochs=2, allow_epochs_change=True)
    assert rec["schedule_changes"] == [{"after_epoch": 1, "epochs_from": 3, "epochs_to": 2}]
    assert rec["epochs"] == 2 and [h["epoch"] for h in rec["history"]] == [1, 2]


def test_init_from_starts_at_given_weights(tiny_data, tmp_path):
    import hashlib

    import keras

    _run(tiny_data, tmp_path / "e", epochs=1)
    src = tmp_path / "e" / "final.keras"
    # with a vanishing learning rate the result must be the source weights, not a fresh init
    rec = _run(tiny_data, tmp_path / "f", epochs=1, lr=1e-12, init_from=src, seed=5)
    assert rec["init_from"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert rec["hyper"]["lr"] == 1e-12
    a = keras.models.load_model(src, compile=False).get_weights()
    b = keras.models.load_model(tmp_path / "f" / "final.keras", compile=False).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wb, wa, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no such .keras file"):
        _run(tiny_data, tmp_path / "g", init_from=tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="lr must be a positive number, got -1"):
        _run(tiny_data, tmp_path / "g", lr=-1)
