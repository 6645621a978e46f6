"""Train the zoo models (``hwsim.zoo``) on CIFAR-10, resumably; the result is a float32 model.

``train(name, ...)`` trains on the 50,000 training images (or a seeded random subset of
``limit`` of them), evaluates on the 10,000 test images (the first ``limit`` of a seeded
permutation when ``limit`` is given), saves the trained model without optimizer state to ``out``
and records the result in a JSON file (``results/float32_accuracy.json`` by default).

Precision: each model trains under the Keras dtype policy ``HYPER[name]["policy"]`` (float32
master weights either way); the saved model is rebuilt in float32 and the recorded test accuracy
is that float32 model's.

Reproducibility: everything random is a function of ``seed`` and the epoch number only: the
weight initialisation (``keras.utils.set_random_seed(seed)``), the per-epoch shuffling and
augmentation (NumPy ``default_rng([seed, epoch])``), and the dropout masks (the dropout seed
generators are reset to a state derived from ``(seed, epoch)`` at the start of every epoch).
TensorFlow op determinism is enabled, so with the same thread count a run that is interrupted
and resumed ends with the same weights as an uninterrupted run.

Augmentation (NumPy, in the input pipeline, not in the model): pad 4 pixels (zeros) on every
side, take a random 32x32 crop, flip horizontally with probability 1/2.

Learning-rate schedule, a function of the fractional epoch ``e = epoch + step/steps`` only: linear
warm-up from ``lr/10`` to ``lr`` over the first ``WARMUP`` fraction of training, then cosine decay
to 0 at the end.

Checkpoints: after every epoch the model with its optimizer state is written to
``checkpoint_dir/checkpoint.keras`` and the epoch number, accumulated training time and per-epoch
history to ``checkpoint_dir/state.json`` (both atomically: temporary file + rename). Running
again with the same arguments continues after the last finished epoch; a checkpoint written
with different settings is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from quant import tfimport

WARMUP = 0.15

# per-model optimiser settings: SGD with Nesterov momentum, decoupled weight decay
# ``policy``: the Keras dtype policy used while training. mixed_bfloat16 (bf16 compute, float32
# master weights) trains the plain CNN 1.6x faster per CPU-second (oneDNN bf16 convolutions) but
# slows MobileNet's depthwise convolutions 2x, so MobileNet trains in float32. The saved model and
# the recorded test accuracy are always float32.
HYPER = {
    "cifar_cnn": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1, "policy": "mixed_bfloat16"},
    "mobilenet": {"lr": 0.1, "momentum": 0.9, "weight_decay": 4e-4, "label_smoothing": 0.1, "policy": "float32"},
}
DEFAULT_EPOCHS = {"cifar_cnn": 30, "mobilenet": 10}
DEFAULT_BATCH = 128
_NO_DECAY = ["bias", "gamma", "beta"]  # variables named so are not weight-decayed


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_checkpoint_dir(name: str) -> Path:
    """``$HWSIM_CACHE/train/<name>`` (``~/.cache/hwsim/train/<name>`` by default)."""
    from hwsim.data import cache_dir

    return cache_dir() / "train" / name


def lr_at(epoch_frac: float, epochs: int, lr: float) -> float:
    """Learning rate at fractional epoch ``epoch_frac`` of ``epochs`` (see module docstring)."""
    t = min(max(epoch_frac / epochs, 0.0), 1.0)
    if t < WARMUP:
        return lr * (0.1 + 0.9 * t / WARMUP)
    return lr * 0.5 * (1.0 + np.cos(np.pi * (t - WARMUP) / (1.0 - WARMUP)))


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 32x32 crop of the 4-pixel zero-padded image plus random horizontal flip.

    ``images`` uint8 (N, 32, 32, 3); returns a new uint8 array of the same shape. Draws, in this
    order, N row offsets, N column offsets (each uniform in 0..8) and N flip bits from ``rng``."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy = rng.integers(0, 9, n)
    dx = rng.integers(0, 9, n)
    flip = rng.integers(0, 2, n).astype(bool)
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, h)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, w)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _config(name, epochs, batch_size, seed, limit, threads, lr=None, init_from=None):
    cfg = {"model": name, "epochs": epochs, "batch_size": batch_size, "seed": seed, "limit": limit,
           "threads": threads, **HYPER[name], "warmup": WARMUP}
    if lr is not None:
        cfg["lr"] = lr
    if init_from is not None:
        cfg["init_from"] = init_from
    return cfg


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _reset_dropout_seeds(model, seed: int, epoch: int):
    """Set every dropout seed-generator state to a value derived from (seed, epoch, layer index)."""
    for i, layer in enumerate(model.layers):
        sg = getattr(layer, "seed_generator", None)
        if sg is not None:
            s = int(np.random.default_rng([seed, epoch, i]).integers(0, 2**31 - 1))
            sg.state.assign(np.array([s, 0], dtype=sg.state.dtype))


def _use_fused_batchnorm(model):
    """Make every BatchNormalization layer of ``model`` use TensorFlow's fused kernel in training.

    Keras 3 computes batch statistics with separate ops, which made BN ~40% of a MobileNet
    training step on CPU; the fused kernel normalises with the same batch mean and (biased)
    variance. Only the instance's ``call`` is replaced, so saved files contain plain
    ``BatchNormalization`` layers, and inference (``training=False``) is Keras' own code. The
    moving averages are updated as Keras does (``m * momentum + batch * (1 - momentum)``), with the
    fused kernel's batch variance (Bessel-corrected, ``n / (n - 1)`` times the biased one)."""
    tf = tfimport.tensorflow()
    from keras import layers

    for layer in model.layers:
        if type(layer) is not layers.BatchNormalization or layer.axis not in (-1, 3):
            continue
        keras_call = layer.call

        def call(x, training=False, mask=None, _l=layer, _keras_call=keras_call):
            if not training or _l.trainable is False:
                return _keras_call(x, training=training, mask=mask)
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, _l.gamma.value, _l.beta.value, epsilon=_l.epsilon, is_training=True, data_format="NHWC")
            m = _l.momentum
            _l.moving_mean.assign(_l.moving_mean * m + mean * (1 - m))
            _l.moving_variance.assign(_l.moving_variance * m + var * (1 - m))
            return y

        layer.call = call


def _compile(model, name):
    keras = tfimport.keras()

    h = HYPER[name]
    opt = keras.optimizers.SGD(learning_rate=h["lr"], momentum=h["momentum"], nesterov=True,
                               weight_decay=h["weight_decay"])
    opt.exclude_from_weight_decay(var_names=_NO_DECAY)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=h["label_smoothing"]),
                  metrics=["accuracy"])


def _atomic_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _atomic_keras_save(model, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def evaluate(model, images, labels, batch_size=500) -> float:
    """Top-1 accuracy of ``model`` (logits) on uint8 ``images`` with int ``labels``."""
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model.predict_on_batch(images[i:i + batch_size].astype(np.float32))
        correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == labels[i:i + batch_size]))
    return correct / len(images)


def _train(name: str, *, epochs: int | None = None, batch_size: int = DEFAULT_BATCH, seed: int = 0,
          checkpoint_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
          limit: int | None = None, threads: int | None = None, results: str | os.PathLike | None = None,
          monitor: int = 2000, data_path=None, verbose: int = 1, stop_after: int | None = None,
          allow_epochs_change: bool = False, lr: float | None = None, init_from=None) -> dict:
    """See ``train``."""
    from hwsim import zoo
    from hwsim.data import load_cifar10

    zoo._check_name(name)
    epochs = DEFAULT_EPOCHS[name] if epochs is None else epochs
    for label, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{label} must be an integer >= {lo}, got {v!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")

    tf = tfimport.tensorflow()

    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process: keep the existing setting
            pass
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - older TF
        pass
    keras = tfimport.keras()

    ckdir = Path(checkpoint_dir).expanduser() if checkpoint_dir else default_checkpoint_dir(name)
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    init = None
    init_model = None
    if init_from is not None:
        if not Path(init_from).is_file():
            raise FileNotFoundError(f"init_from: no such .keras file {init_from}")
        try:  # load it now: a damaged file is reported before training, not as Keras' "File not found"
            init_model = keras.models.load_model(init_from, compile=False)
        except Exception as exc:
            # Keras says "File not found" for any file that is not a valid .keras zip: do not repeat that
            detail = "" if "not found" in str(exc).lower() else f": {type(exc).__name__}: {str(exc)[:200]}"
            raise ValueError(f"init_from {init_from}: the file exists but is not a readable Keras model (corrupt, "
                             f"truncated or another format){detail}") from None
        init = {"path": str(Path(init_from).resolve()), "sha256": _sha256(init_from)}
    if out is not None:
        from hwsim.files import output_file

        output_file(out, "out", create_parents=True)  # a path that cannot be written fails now, not after training
    config = _config(name, epochs, batch_size, seed, limit, threads, lr, init)
    peak_lr = config["lr"]
    state_path, ckpt_path = ckdir / "state.json", ckdir / "checkpoint.keras"

    x_train, y_train = load_cifar10("train", data_path)
    x_test, y_test = load_cifar10("test", data_path)
    if limit is not None:
        sel = np.random.default_rng([seed, 12345]).permutation(len(x_train))[:limit]
        x_train, y_train = x_train[np.sort(sel)], y_train[np.sort(sel)]
        sel = np.random.default_rng([seed, 54321]).permutation(len(x_test))[:limit]
        x_test, y_test = x_test[np.sort(sel)], y_test[np.sort(sel)]
    mon = np.linspace(0, len(x_test) - 1, min(monitor, len(x_test))).astype(int) if monitor else None

    state = None
    if state_path.is_file() and ckpt_path.is_file():
        state = json.loads(state_path.read_text())
        old_cfg = dict(state.get("config") or {})
        if allow_epochs_change and old_cfg.get("epochs") != epochs and old_cfg.get("epochs", 0) > state["epoch"] \
                and epochs > state["epoch"] and {**old_cfg, "epochs": epochs} == config:
            state.setdefault("schedule_changes", []).append(
                {"after_epoch": state["epoch"], "epochs_from": old_cfg["epochs"], "epochs_to": epochs})
            state["config"] = config
        if state.get("config") != config:
            raise ValueError(
                f"checkpoint in {ckdir} was written with settings {state.get('config')}, not {config}; "
                f"use another --checkpoint-dir or delete that folder to start afresh")
        model = keras.models.load_model(ckpt_path, compile=True)
        _use_fused_batchnorm(model)
        model.optimizer.exclude_from_weight_decay(var_names=_NO_DECAY)  # not part of the saved config
        start = state["epoch"]
        if verbose:
            print(f"resuming {name} from {ckpt_path} after epoch {start}/{epochs}", flush=True)
    else:
        keras.utils.set_random_seed(seed)
        model = zoo.build(name)
        if init_model is not None:
            model.set_weights(init_model.get_weights())  # raises ValueError on an architecture mismatch
        _use_fused_batchnorm(model)
        _compile(model, name)
        start = 0
        state = {"config": config, "epoch": 0, "train_time_s": 0.0, "history": []}

    steps = int(np.ceil(len(x_train) / batch_size))
    opt = model.optimizer
    done_here = 0
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(x_train))
        xa = augment(x_train[order], rng)
        ya = keras.utils.to_categorical(y_train[order], 10).astype(np.float32)
        _reset_dropout_seeds(model, seed, epoch)
        bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["loss", "accuracy", "lr"])
        if verbose:
            print(f"{name} epoch {epoch + 1}/{epochs}", flush=True)
        for i in range(steps):
            lr = lr_at(epoch + i / steps, epochs, peak_lr)
            opt.learning_rate.assign(lr)
            sl = slice(i * batch_size, (i + 1) * batch_size)
            logs = model.train_on_batch(xa[sl].astype(np.float32), ya[sl], return_dict=True)
            bar.update(i + 1, [("loss", float(logs["loss"])), ("accuracy", float(logs["accuracy"])), ("lr", lr)])
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": float(logs["loss"]), "train_acc": float(logs["accuracy"]),
               "time_s": round(dt, 2)}
        if mon is not None:
            rec["monitor_acc"] = evaluate(model, x_test[mon], y_test[mon])
        state["epoch"] = epoch + 1
        state["train_time_s"] += dt
        state["history"].append(rec)
        _atomic_keras_save(model, ckpt_path)
        _atomic_json(state_path, state)
        if verbose:
            print(f"{name} epoch {epoch + 1}/{epochs}: {json.dumps(rec)}", flush=True)
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch + 1 < epochs:
            return {"stopped_after_epoch": epoch + 1}

    keras.config.set_dtype_policy("float32")
    final = zoo.build(name)
    final.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    acc = evaluate(final, x_test, y_test)
    if out is None:
        out = (ckdir / "final.keras") if limit is not None else zoo.model_path(name)
    _atomic_keras_save(final, Path(out))
    record = {
        "model": name, "accuracy": acc, "correct": int(round(acc * len(x_test))), "n_test": int(len(x_test)),
        "dataset": "CIFAR-10 (JPEG re-encoding, cifar10-jpg.tar.gz) test split" if limit is None else f"{len(x_test)} test images",
        "epochs": epochs, "seed": seed, "batch_size": batch_size, "train_images": int(len(x_train)),
        "train_time_s": round(state["train_time_s"], 1), "macs": zoo.count_macs(final),
        "params": int(final.count_params()), "threads": threads, "hyper": {**HYPER[name], "lr": peak_lr}, "float32_eval": True, "init_from": init, "weights": str(out),
        "history": state["history"], "schedule_changes": state.get("schedule_changes", []),
    }
    if results is None and limit is None:
        results = project_root() / "results" / "float32_accuracy.json"
    if results is not None:
        results = Path(results)
        allres = json.loads(results.read_text()) if results.is_file() else {}
        allres[name] = record
        _atomic_json(results, allres)
    if verbose:
        print(f"{name}: test accuracy {acc:.4f} on {len(x_test)} images; saved {out}", flush=True)
    return record


def train(name: str, **kwargs) -> dict:
    """Train model ``name``; return the result record (also written to ``results``).

    Keyword arguments: ``epochs`` (default ``DEFAULT_EPOCHS[name]``), ``batch_size`` (128),
    ``seed`` (0), ``checkpoint_dir`` (default ``default_checkpoint_dir(name)``), ``out``,
    ``limit``, ``threads``, ``results``, ``monitor`` (2000), ``data_path``, ``verbose`` (1),
    ``stop_after``.

    ``out`` defaults to ``hwsim/models/{name}.keras`` and ``results`` to
    ``results/float32_accuracy.json`` in the project, except when ``limit`` is given: then ``out``
    defaults to ``checkpoint_dir/final.keras`` and no results file is written unless ``results``
    is given. ``limit``: train on a seeded random subset of that many training images and test on
    a seeded random subset of that many test images. ``monitor``: number of test images (evenly
    spaced) whose accuracy is printed after each epoch, for watching progress only (0: none).
    ``threads``: TensorFlow intra-/inter-op threads (None: TensorFlow's default). ``stop_after``:
    return ``{"stopped_after_epoch": e}`` after finishing this many epochs in this call (for
    tests of resuming; the checkpoint is kept, no model is saved). ``allow_epochs_change``: when
    resuming a checkpoint whose settings differ from these only in ``epochs`` (both larger than
    the epochs done), continue under the new total: the learning-rate schedule is recomputed for
    the new length from the next epoch on, and the change is recorded in ``schedule_changes`` of
    the state and the result record (so such a result is not an uninterrupted run of that
    length). ``lr``: peak learning rate instead of ``HYPER[name]["lr"]``. ``init_from``: a .keras
    file of the same architecture whose weights replace the seeded initialisation (a warm restart:
    a further learning-rate cycle from a trained model); its path and SHA-256 are part of the
    checkpoint settings and of the result record. The Keras global dtype policy is restored
    afterwards.
    """
    from hwsim import zoo

    zoo._check_name(name)
    keras = tfimport.keras()

    before = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(HYPER[name]["policy"])
        return _train(name, **kwargs)
    finally:
        keras.config.set_dtype_policy(before)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `hwsim train MODEL`")
