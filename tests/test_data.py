"""hwsim.data: CIFAR-10 in three layouts, caching, and the errors."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from hwsim import data
from hwsim.data import CLASSES, load_cifar10


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No real source is visible unless a test asks for it; cache in tmp."""
    monkeypatch.setenv("HWSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HWSIM_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(data, "_project_root", lambda: tmp_path / "nowhere" / "root")
    monkeypatch.chdir(tmp_path)

    def no_download(split):
        raise ConnectionError("offline (test stub)")

    monkeypatch.setattr(data, "_keras_download", no_download)


def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# a small split: (class name, file name) -> pixels; written in scrambled order on purpose
SPEC = [("truck", "0001"), ("airplane", "0002"), ("cat", "0000"), ("airplane", "0000"), ("truck", "0000"), ("cat", "0010")]


def _expected(imgs):
    """Expected order: by label id, then by file name."""
    order = sorted(range(len(SPEC)), key=lambda i: (CLASSES.index(SPEC[i][0]), SPEC[i][1]))
    return imgs[order], np.array([CLASSES.index(SPEC[i][0]) for i in order], np.int64)


def _make_folder(root, split, imgs, ext=".png"):
    for (cls, name), img in zip(SPEC, imgs):
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        (d / (name + ext)).write_bytes(_png(img) if ext == ".png" else _jpg(img))


def _make_tar(path, members: dict[str, bytes]):
    kw = {"fileobj": path} if isinstance(path, io.BytesIO) else {"name": path}
    with tarfile.open(mode="w:gz", **kw) as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))


def _batch_bytes(imgs, labels):
    d = {b"batch_label": b"x", b"labels": [int(v) for v in labels],
         b"data": imgs.transpose(0, 3, 1, 2).reshape(len(imgs), 3072).copy(), b"filenames": [b"f"] * len(imgs)}
    return pickle.dumps(d, protocol=2)


def _make_pickles(d, train, test):
    d.mkdir(parents=True)
    (xtr, ytr), (xte, yte) = train, test
    for i, part in enumerate(np.array_split(np.arange(len(xtr)), 5)):
        (d / f"data_batch_{i + 1}").write_bytes(_batch_bytes(xtr[part], ytr[part]))
    (d / "test_batch").write_bytes(_batch_bytes(xte, yte))


def test_image_folder_png_exact_pixels_labels_order(tmp_path):
    imgs = _pixels(len(SPEC), 1)
    _make_folder(tmp_path / "ds", "test", imgs)
    x, y = load_cifar10("test", path=tmp_path / "ds")
    ex, ey = _expected(imgs)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)


def test_tar_of_png_with_prefix_and_jpeg_labels(tmp_path):
    imgs = _pixels(len(SPEC), 2)
    members = {f"CIFAR-10-images/test/{c}/{n}.png": _png(im) for (c, n), im in zip(SPEC, imgs)}
    members["CIFAR-10-images/README.md"] = b"readme"
    members["CIFAR-10-images/train/cat/0000.png"] = _png(_pixels(1, 9)[0])  # other split: ignored
    _make_tar(tmp_path / "a.tar.gz", members)
    x, y = load_cifar10("test", path=tmp_path / "a.tar.gz")
    ex, ey = _expected(imgs)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    xt, yt = load_cifar10("train", path=tmp_path / "a.tar.gz")
    assert xt.shape == (1, 32, 32, 3) and list(yt) == [3]

    # JPEG is lossy: smooth images survive with small error, labels/order exactly
    smooth = np.repeat(np.repeat((np.arange(len(SPEC))[:, None, None, None] * 40 + 10), 32, 1), 32, 2)
    smooth = np.broadcast_to(smooth, (len(SPEC), 32, 32, 3)).astype(np.uint8)
    _make_tar(tmp_path / "j.tar.gz", {f"test/{c}/{n}.jpg": _jpg(im) for (c, n), im in zip(SPEC, smooth)})
    xj, yj = load_cifar10("test", path=tmp_path / "j.tar.gz")
    ex, ey = _expected(smooth)
    np.testing.assert_array_equal(yj, ey)
    assert np.abs(xj.astype(int) - ex).max() <= 3


def test_pickled_batches_dir_and_tar(tmp_path):
    xtr, ytr = _pixels(10, 3), np.arange(10) % 10
    xte, yte = _pixels(4, 4), np.array([7, 0, 3, 3])
    _make_pickles(tmp_path / "p" / "cifar-10-batches-py", (xtr, ytr), (xte, yte))
    for src in (tmp_path / "p" / "cifar-10-batches-py", tmp_path / "p"):  # the folder or its parent
        x, y = load_cifar10("test", path=src)
        np.testing.assert_array_equal(x, xte)  # official order kept
        np.testing.assert_array_equal(y, yte)
    x, y = load_cifar10("train", path=tmp_path / "p")
    np.testing.assert_array_equal(x, xtr)
    np.testing.assert_array_equal(y, ytr)
    d = tmp_path / "p" / "cifar-10-batches-py"
    _make_tar(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{f.name}": f.read_bytes() for f in d.iterdir()})
    x, y = load_cifar10("train", path=tmp_path / "cifar-10-python.tar.gz", cache=False)
    np.testing.assert_array_equal(x, xtr)
    np.testing.assert_array_equal(y, ytr)


def test_keras_cache_location_is_searched(tmp_path, monkeypatch):
    xte, yte = _pixels(3, 5), np.array([1, 2, 9])
    _make_pickles(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py", (_pixels(5, 6), np.zeros(5, int)), (xte, yte))
    x, y = load_cifar10("test")
    np.testing.assert_array_equal(x, xte)
    np.testing.assert_array_equal(y, yte)


def test_env_var_and_shared_relative_to_cwd(tmp_path, monkeypatch):
    imgs = _pixels(len(SPEC), 7)
    _make_folder(tmp_path / "envds", "test", imgs)
    monkeypatch.setenv("HWSIM_DATA", str(tmp_path / "envds"))
    np.testing.assert_array_equal(load_cifar10("test")[0], _expected(imgs)[0])
    monkeypatch.delenv("HWSIM_DATA")
    # ../shared/data/cifar10-jpg.tar.gz relative to the CWD
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    _make_tar(shared / "cifar10-jpg.tar.gz", {f"test/{c}/{n}.png": _png(im) for (c, n), im in zip(SPEC, imgs)})
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    np.testing.assert_array_equal(load_cifar10("test")[0], _expected(imgs)[0])


def test_second_load_hits_cache_and_is_fast(tmp_path, monkeypatch):
    imgs = _pixels(len(SPEC), 8)
    _make_folder(tmp_path / "ds", "test", imgs)
    x1, y1 = load_cifar10("test", path=tmp_path / "ds")
    assert list((tmp_path / "cache").glob("cifar10-test-*.npz")), "no cache file written"
    assert not list((tmp_path / "cache").glob(".*tmp")), "temporary file left behind"

    def boom(*a, **k):
        raise AssertionError("decoder called although the cache is valid")

    monkeypatch.setattr(data, "_decode", boom)
    t = time.perf_counter()
    x2, y2 = load_cifar10("test", path=tmp_path / "ds")
    assert time.perf_counter() - t < 1.0
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)


def test_changed_source_invalidates_cache(tmp_path):
    imgs = _pixels(len(SPEC), 10)
    _make_folder(tmp_path / "ds", "test", imgs)
    load_cifar10("test", path=tmp_path / "ds")
    new = _pixels(1, 11)[0]
    f = tmp_path / "ds" / "test" / "airplane" / "0000.png"
    f.write_bytes(_png(new))
    os.utime(f, ns=(1, 1_000_000_000_123))  # different mtime for sure
    x, _ = load_cifar10("test", path=tmp_path / "ds")
    np.testing.assert_array_equal(x[0], new)  # airplane/0000 sorts first


def test_corrupt_cache_file_is_redecoded(tmp_path):
    imgs = _pixels(len(SPEC), 12)
    _make_folder(tmp_path / "ds", "test", imgs)
    load_cifar10("test", path=tmp_path / "ds")
    (cfile,) = (tmp_path / "cache").glob("cifar10-test-*.npz")
    cfile.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        x, _ = load_cifar10("test", path=tmp_path / "ds")
    np.testing.assert_array_equal(x, _expected(imgs)[0])


def test_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.delenv("HWSIM_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as ei:
        load_cifar10("train")
    msg = str(ei.value)
    for needle in ("project shared data", "relative to CWD", "cifar10-jpg.tar.gz", "Keras cache",
                   "cifar-10-batches-py", "Keras download", "offline (test stub)", "path=", "HWSIM_DATA",
                   "does not exist"):
        assert needle in msg, f"{needle!r} missing from:\n{msg}"


def test_a_missing_env_source_is_the_only_place_tried(tmp_path, monkeypatch):
    """HWSIM_DATA chooses the data, as path= does: a typo is an error naming it, not another data set."""
    monkeypatch.setenv("HWSIM_DATA", str(tmp_path / "envmissing"))
    with pytest.raises(FileNotFoundError) as ei:
        load_cifar10("train")
    msg = str(ei.value)
    assert f"HWSIM_DATA {tmp_path / 'envmissing'}: does not exist" in msg
    assert "project shared data" not in msg and "Keras" not in msg.split("Provide")[0]


def test_corrupt_archive_is_a_clear_value_error(tmp_path):
    bad = tmp_path / "cifar10-jpg.tar.gz"
    good = io.BytesIO()
    _make_tar(good, {f"test/{c}/{n}.png": _png(im) for (c, n), im in zip(SPEC, _pixels(len(SPEC), 13))})
    bad.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])  # truncated gzip
    with pytest.raises(ValueError, match="corrupt or truncated|not a tar") as ei:
        load_cifar10("test", path=bad)
    assert str(bad) in str(ei.value) and "HWSIM_DATA" in str(ei.value)
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive at all")
    with pytest.raises(ValueError, match="not a tar archive"):
        load_cifar10("test", path=tmp_path / "junk.tar.gz")


def test_corrupt_image_and_unknown_class(tmp_path):
    _make_tar(tmp_path / "a.tar.gz", {"test/cat/0.jpg": b"\xff\xd8 broken jpeg"})
    with pytest.raises(ValueError, match="cannot decode image"):
        load_cifar10("test", path=tmp_path / "a.tar.gz")
    _make_tar(tmp_path / "b.tar.gz", {"test/kitten/0.png": _png(_pixels(1, 0)[0])})
    with pytest.raises(ValueError, match="unknown class folder 'kitten'"):
        load_cifar10("test", path=tmp_path / "b.tar.gz")


def test_pickle_with_foreign_global_is_refused(tmp_path):
    d = tmp_path / "p"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (d / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="forbidden global"):
        load_cifar10("test", path=d)


def test_bad_split():
    with pytest.raises(ValueError, match=r"'val'.*train, test"):
        load_cifar10("val")


def test_broken_env_source_is_an_error_not_other_data(tmp_path, monkeypatch):
    """An unreadable HWSIM_DATA is a ValueError naming it, even when other data (here a Keras cache) exists."""
    (tmp_path / "junk").write_bytes(b"xx")
    monkeypatch.setenv("HWSIM_DATA", str(tmp_path / "junk"))
    xte, yte = _pixels(2, 14), np.array([4, 5])
    _make_pickles(tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py", (_pixels(5, 15), np.zeros(5, int)), (xte, yte))
    with pytest.raises(ValueError, match=f"HWSIM_DATA {tmp_path / 'junk'}"):
        load_cifar10("test")


SHARED = data.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.skipif(not SHARED.is_file(), reason="shared CIFAR-10 archive not present")
def test_real_shared_test_split(monkeypatch):
    monkeypatch.delenv("HWSIM_CACHE")  # use the real cache (decoding once costs ~3 s)
    x, y = load_cifar10("test", path=SHARED)
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [1000] * 10)
    assert np.all(np.diff(y) >= 0)  # sorted by class
    assert 100 < x.mean() < 140 and x.std() > 40  # real photos, not blank
