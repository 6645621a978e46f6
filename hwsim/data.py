"""CIFAR-10 loading: find the data, decode it once, cache the decoded arrays.

``load_cifar10(split)`` returns ``(images, labels)``: ``images`` is ``uint8`` of shape
``(N, 32, 32, 3)`` (NHWC, RGB, raw pixel values 0..255) and ``labels`` is ``int64`` of shape
``(N,)`` with the standard CIFAR-10 label ids (``CLASSES[label]`` is the class name).

Sources, tried in this order (the first that yields the split wins):

1. ``path=`` argument (if given, *only* this source is tried, so a typo is never masked);
2. the ``HWSIM_DATA`` environment variable (likewise the only source when set: a missing path raises
   ``FileNotFoundError``, an unreadable one ``ValueError``; neither falls back to other data);
3. ``../shared/data/cifar10-jpg.tar.gz`` relative to the project root (found from this
   package's location), then the same relative to the current directory;
4. the Keras cache ``$KERAS_HOME/datasets/cifar-10-batches-py`` (``KERAS_HOME`` defaults to
   ``~/.keras``);
5. Keras' own download, ``keras.datasets.cifar10.load_data()``.

Each file/folder source may be in any of three layouts:

* a ``.tar.gz`` (or plain ``.tar``) of images ``[prefix/]{split}/{class}/NAME.{jpg,jpeg,png}``
  (the layout of ``cifar10-jpg.tar.gz``);
* the official pickled ``cifar-10-batches-py`` directory (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``), a directory that contains it, or the official ``cifar-10-python.tar.gz``;
* an image-folder tree ``{split}/{class}/NAME.{jpg,jpeg,png}``.

Image order is deterministic: for image layouts, sorted by label id and then by file name; for
the pickled layout, the official order (batch 1..5, rows in file order).

Decoded arrays are cached as an uncompressed ``.npz`` in ``HWSIM_CACHE`` (default
``~/.cache/hwsim``), keyed by the source's resolved path, size and modification time (for
folders: of every file used), so a changed source is decoded again. Cache files are written to a
temporary name and renamed, so a crash never leaves a half-written cache entry.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np

from quant import tfimport

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)
SHARED_RELPATH = Path("..") / "shared" / "data" / "cifar10-jpg.tar.gz"
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_PICKLE_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CACHE_VERSION = "1"
_HOWTO = (
    "Provide CIFAR-10 with load_cifar10(path=...) or the HWSIM_DATA environment variable, pointing "
    "at cifar10-jpg.tar.gz, a cifar-10-batches-py folder (or cifar-10-python.tar.gz), or a folder "
    "tree {split}/{class}/*.jpg|png."
)


class _SourceError(Exception):
    """A candidate source exists but cannot be read (corrupt, wrong layout)."""


# ----------------------------------------------------------------------------------------------
# public API


def load_cifar10(split: str = "test", path: str | os.PathLike | None = None, *, cache: bool = True):
    """Return ``(images, labels)`` of CIFAR-10 ``split`` ("train": 50,000 images, "test": 10,000).

    ``images``: ``uint8`` ``(N, 32, 32, 3)`` RGB; ``labels``: ``int64`` ``(N,)`` in 0..9. See the
    module docstring for where the data is searched and how it is cached; ``cache=False`` neither
    reads nor writes the cache. Raises ``ValueError`` for an unknown split or when every source
    that exists is unreadable, ``FileNotFoundError`` when no source exists; either error lists
    every place searched and why it failed.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; valid splits: {', '.join(SPLITS)}")
    failures: list[str] = []
    any_existed = False
    for label, candidate in _candidates(path):
        if candidate is None:  # Keras download
            try:
                return _keras_download(split)
            except Exception as exc:  # offline, no keras, ...: report, do not traceback
                failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if not candidate.exists():
            failures.append(f"{label} {candidate}: does not exist")
            continue
        any_existed = True
        try:
            return _load_source(candidate, split, cache)
        except _SourceError as exc:
            failures.append(f"{label} {candidate}: {exc}")
            if path is None and not os.environ.get("HWSIM_DATA"):
                warnings.warn(f"skipping unreadable CIFAR-10 source {candidate}: {exc}", stacklevel=2)
    msg = f"cannot load CIFAR-10 split {split!r}. Searched:\n" + "\n".join(f"  - {f}" for f in failures)
    msg += "\n" + _HOWTO
    raise (ValueError if any_existed else FileNotFoundError)(msg)


def cache_dir() -> Path:
    """The cache folder: ``$HWSIM_CACHE`` if set (non-empty), else ``~/.cache/hwsim``."""
    env = os.environ.get("HWSIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hwsim"


# ----------------------------------------------------------------------------------------------
# where to look


def _project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _keras_cache() -> Path:
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(home).expanduser() / "datasets" / "cifar-10-batches-py"


def _candidates(path):
    """Yield ``(description, Path or None)``; ``None`` stands for Keras' download."""
    if path is not None:
        yield "path argument", Path(path).expanduser()
        return
    env = os.environ.get("HWSIM_DATA")
    if env:  # a chosen source, like path=: a typo or a damaged file is an error, never another data set
        yield "HWSIM_DATA", Path(env).expanduser()
        return
    seen = set()
    for label, base in (("project shared data", _project_root()), ("shared data relative to CWD", Path.cwd())):
        p = (base / SHARED_RELPATH).resolve()
        if p not in seen:
            seen.add(p)
            yield label, p
    yield "Keras cache", _keras_cache()
    yield "Keras download (keras.datasets.cifar10.load_data)", None


def _keras_download(split):
    keras = tfimport.keras()  # heavy; only imported as the last resort

    (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    return _check(np.asarray(x, np.uint8), np.asarray(y).reshape(-1).astype(np.int64), "keras download")


# ----------------------------------------------------------------------------------------------
# one source: detect layout, cache, decode


def _load_source(src: Path, split: str, use_cache: bool):
    kind, files = _inspect(src, split)
    key_material = [_CACHE_VERSION, kind, split, str(src.resolve())]
    for f in files:
        st = f.stat()
        key_material.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(key_material).encode()).hexdigest()[:20]
    cfile = cache_dir() / f"cifar10-{split}-{key}.npz"
    if use_cache and cfile.is_file():
        try:
            with np.load(cfile, allow_pickle=False) as z:
                return _check(z["images"], z["labels"], str(cfile))
        except Exception as exc:  # corrupt cache entry: decode again and overwrite it
            warnings.warn(f"ignoring unreadable cache file {cfile}: {exc}", stacklevel=3)
    images, labels = _decode(kind, src, split)
    images, labels = _check(images, labels, str(src))
    if use_cache:
        _atomic_save(cfile, images, labels)
    return images, labels


def _atomic_save(cfile: Path, images, labels):
    try:
        cfile.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfile.with_name(f".{cfile.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=labels)
        os.replace(tmp, cfile)
    except OSError as exc:  # an unwritable cache only costs speed
        warnings.warn(f"could not write cache file {cfile}: {exc}", stacklevel=3)


def _inspect(src: Path, split: str):
    """Return ``(kind, files)``: the layout and the files whose stat keys the cache."""
    if src.is_dir():
        for d in (src, src / "cifar-10-batches-py"):
            if (d / "test_batch").is_file() or (d / "data_batch_1").is_file():
                missing = [n for n in _PICKLE_FILES[split] if not (d / n).is_file()]
                if missing:
                    raise _SourceError(f"pickled CIFAR-10 folder {d} lacks {', '.join(missing)}")
                return "pickledir", [d / n for n in _PICKLE_FILES[split]]
        sdir = src / split
        if sdir.is_dir():
            files = _folder_images(sdir)
            if not files:
                raise _SourceError(f"image folder {sdir} holds no {{class}}/*.jpg|png images")
            return "folder", [f for _, f in files]
        raise _SourceError(
            f"folder is neither cifar-10-batches-py (data_batch_1..5, test_batch) nor an image tree "
            f"with a {split!r} subfolder"
        )
    if src.is_file():
        if not tarfile.is_tarfile(src):
            raise _SourceError("not a tar archive (expected .tar.gz of images or cifar-10-python.tar.gz)")
        return "tar", [src]
    raise _SourceError("neither a file nor a folder")


def _folder_images(sdir: Path):
    out = []
    for cdir in sorted(p for p in sdir.iterdir() if p.is_dir()):
        if cdir.name not in CLASSES:
            raise _SourceError(f"unknown class folder {cdir.name!r} in {sdir}; valid classes: {', '.join(CLASSES)}")
        lab = CLASSES.index(cdir.name)
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in _IMAGE_EXTS and f.is_file():
                out.append((lab, f))
    out.sort(key=lambda t: (t[0], t[1].name))
    return out


def _decode(kind, src: Path, split):
    if kind == "pickledir":
        d = src if (src / "test_batch").is_file() or (src / "data_batch_1").is_file() else src / "cifar-10-batches-py"
        parts = []
        for n in _PICKLE_FILES[split]:
            with open(d / n, "rb") as fh:
                parts.append(_unpickle_batch(fh, str(d / n)))
        return _concat(parts)
    if kind == "folder":
        files = _folder_images(src / split)
        labels = np.array([lab for lab, _ in files], np.int64)
        images = np.stack([_decode_image(f.read_bytes(), str(f)) for _, f in files])
        return images, labels
    return _decode_tar(src, split)


def _decode_tar(src: Path, split):
    imgs: list[tuple[int, str, bytes]] = []
    batches: dict[str, bytes] = {}
    try:
        with tarfile.open(src, "r:*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = m.name.strip("/").split("/")
                if parts[-1] in _PICKLE_FILES[split]:
                    batches[parts[-1]] = tf.extractfile(m).read()
                    continue
                if len(parts) >= 3 and parts[-3] == split and Path(parts[-1]).suffix.lower() in _IMAGE_EXTS:
                    cls = parts[-2]
                    if cls not in CLASSES:
                        raise _SourceError(f"unknown class folder {cls!r} in {m.name}; valid classes: {', '.join(CLASSES)}")
                    imgs.append((CLASSES.index(cls), parts[-1], tf.extractfile(m).read()))
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise _SourceError(f"corrupt or truncated archive: {type(exc).__name__}: {exc}") from None
    if imgs:
        imgs.sort(key=lambda t: (t[0], t[1]))
        labels = np.array([t[0] for t in imgs], np.int64)
        images = np.stack([_decode_image(b, f"{src}:{split}/{CLASSES[lab]}/{n}") for lab, n, b in imgs])
        return images, labels
    if batches:
        missing = [n for n in _PICKLE_FILES[split] if n not in batches]
        if missing:
            raise _SourceError(f"archive lacks pickled batches {', '.join(missing)}")
        return _concat([_unpickle_batch(io.BytesIO(batches[n]), f"{src}:{n}") for n in _PICKLE_FILES[split]])
    raise _SourceError(
        f"archive holds neither {split}/{{class}}/*.jpg|png images nor pickled batches {', '.join(_PICKLE_FILES[split])}"
    )


def _decode_image(data: bytes, where: str):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise _SourceError(f"cannot decode image {where}: {exc}") from None
    if arr.shape != IMAGE_SHAPE:
        raise _SourceError(f"image {where} has shape {arr.shape}, expected {IMAGE_SHAPE}")
    return arr


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for the official batches: only the numpy array machinery is allowed, so a
    tampered file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in CIFAR-10 batch")


def _unpickle_batch(fh, where):
    try:
        d = _BatchUnpickler(fh, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as exc:
        raise _SourceError(f"cannot read pickled batch {where}: {type(exc).__name__}: {exc}") from None
    return np.ascontiguousarray(images), labels


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check(images, labels, where):
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or labels.shape != (images.shape[0],):
        raise _SourceError(f"{where}: bad array shapes images {images.shape}, labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise _SourceError(f"{where}: labels outside 0..9")
    return images, labels


def to_model_layout(images, input_shape):
    """CIFAR-10 images (N, H, W, C) as a model takes them: unchanged for an NHWC model, transposed to
    (N, C, H, W) for a model whose input is (C, H, W) (an ONNX / PyTorch model). The values stay raw
    0..255 pixels: a model must do its own scaling. Other shapes raise ``ValueError`` naming both."""
    images = np.asarray(images)
    shape = tuple(input_shape)
    if images.shape[1:] == shape:
        return images
    if images.ndim == 4 and shape == (images.shape[3], images.shape[1], images.shape[2]):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise ValueError(f"the model takes inputs of shape {shape}; CIFAR-10 images are {images.shape[1:]} "
                     "(NHWC) and can be given as (C, H, W) too, nothing else")
