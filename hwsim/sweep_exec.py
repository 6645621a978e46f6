"""Running a sweep: evaluating points, serially or on Dask, resumably, into an output directory.

Files in the sweep directory ``DIR``:

* ``sweep.json``: the settings that decide the results (model and its SHA-256, test images and their
  digest, calibration, the grid) and the hardware they are costed on (``array``: the whole
  :class:`hwsim.ArrayConfig` with its energy and area tables; ``iso_area``). Written when the sweep
  starts; a later run into the same ``DIR`` must have identical measurement settings, else it stops
  with an error naming every difference and touches nothing. The hardware may change: costs are
  derived, not measured, so a rerun with another ``--array`` / ``--pe`` / ``--iso-area`` rewrites
  those keys and re-derives every cost from the recorded points without running them again.
* ``points.csv``: the record, **append-only**: one row per evaluated point (configuration + seed),
  written with flush + fsync as each point finishes. It is never rewritten or truncated; a rerun
  reads it and evaluates only the points missing from it, so a killed sweep loses at most the points
  that were in flight. A torn last line (a kill inside a write) is ignored and its point recomputed.
* ``results.csv`` / ``results.json``: one row per configuration (accuracy mean and std over seeds;
  array, area, cycles, inferences/s and energy per inference, each with its ratio to float32), the
  plots and ``summary.md``: derived from ``points.csv`` and the hardware in ``sweep.json`` (costed by
  :func:`hwsim.cost`), re-rendered (written to a temporary file, then renamed) at the end of every
  run and by ``hwsim report DIR``.

A point's evaluation (:func:`evaluate`), in whichever process runs it: the network is quantized for
the point's (weights, activations, MAC unit) by ``quant.quantize_model`` (calibrated on the first
``calibration`` CIFAR-10 training images), run on the test images batch by batch exactly as
:func:`hwsim.graph.runner.run` does (so stochastic results depend only on the seed). Processes load the model and data themselves from the names/paths
in the settings and check them against the digests, so a Dask worker on another machine computes the
same numbers or refuses.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


from . import sweep as G

SETTINGS_FILE = "sweep.json"
POINTS_FILE = "points.csv"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
SETTINGS_FORMAT = "hwsim-sweep/1"

#: a points.csv record: the point's values, then ``checksum`` (:func:`row_checksum` of the fields before it)
POINT_FIELDS = ("weights", "activations", "accum", "rounding", "seed", "images", "correct", "accuracy",
                "outputs_sha256", "seconds")
POINT_COLUMNS = POINT_FIELDS + ("checksum",)
#: the records of hwsim before costs were derived at report time: they also held the point's cost
#: (read, checked and rewritten without those columns by :func:`repair_points`)
POINT_FIELDS_V1 = ("weights", "activations", "accum", "rounding", "seed", "images", "correct", "accuracy",
                   "energy_pj", "cycles", "fp32_energy_pj", "fp32_cycles", "outputs_sha256", "seconds")
RESULT_COLUMNS = ("weights", "activations", "accum", "rounding", "label", "family", "weight_bits",
                  "activation_bits", "accum_bits", "seeds", "images", "accuracy_mean", "accuracy_std",
                  "accuracy_min", "accuracy_max", "delta_vs_fp32", "array", "area_mm2", "area_ratio", "cycles",
                  "cycles_ratio", "inferences_per_s", "throughput_ratio", "energy_pj", "energy_ratio", "pareto")
#: settings keys that say how points are costed, not how they are measured (a rerun may change them)
COST_KEYS = ("array", "iso_area")
DEFAULT_CALIBRATION = 200
DEFAULT_BATCH = 250


class SweepError(ValueError):
    """A user error about the sweep directory or settings (one clear message)."""


# ------------------------------------------------------------------------------------------------
# settings


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file(model: str) -> Path:
    """The file behind a zoo name or a path; errors name the valid choices."""
    from . import zoo

    if model in zoo.NAMES:
        p = zoo.model_path(model)
        if not p.is_file():
            raise FileNotFoundError(f"trained weights for {model!r} not found at {p}; create them with `hwsim train {model}`")
        return p
    from .frontends import SUFFIXES

    p = Path(model)
    if p.suffix.lower() not in SUFFIXES:
        raise ValueError(f"unknown model {model!r}: neither a zoo name ({', '.join(zoo.NAMES)}) nor a model file "
                         f"({', '.join(SUFFIXES)})")
    if not p.is_file():
        raise FileNotFoundError(f"model file {p} does not exist")
    return p.resolve()


def data_digest(images, labels) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def subset(n_total: int, n: int | None) -> np.ndarray:
    """Indices of the ``n``-image subset: image ``floor(i * n_total / n)`` for ``i < n`` (all when None).

    CIFAR-10 image folders load sorted by class, so the first ``n`` images would be one class; this
    interleaving takes the same number from every class block (``n`` a multiple of 10) and is the
    whole set when ``n == n_total``."""
    if n is None or n == n_total:
        return np.arange(n_total)
    return (np.arange(n, dtype=np.int64) * n_total) // n


def load_test_images(data, limit):
    """The sweep's test images: ``limit`` of the CIFAR-10 test set spread over it (:func:`subset`)."""
    from .data import load_cifar10

    images, labels = load_cifar10("test", path=data)
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"--limit must be a positive number of images, got {limit!r}")
        if limit > len(labels):
            raise ValueError(f"--limit {limit} exceeds the {len(labels)} CIFAR-10 test images")
    idx = subset(len(labels), limit)
    return images[idx], labels[idx]


def array_settings(array, pe=None, serial_operands=None) -> dict:
    """The array as recorded in ``sweep.json``: every field (:meth:`hwsim.ArrayConfig.to_dict`) and the
    file it came from; ``pe`` / ``serial_operands`` override the file's."""
    from .array import load_array

    cfg = load_array(array)
    over = {k: v for k, v in (("pe", pe), ("serial_operands", serial_operands)) if v is not None}
    if over:
        cfg = cfg.with_(**over)
    return {"source": "default" if array is None else str(Path(array).resolve()), **cfg.to_dict()}


def settings_array(settings: dict):
    """The :class:`hwsim.ArrayConfig` a sweep's settings record. Settings written before the whole
    array was recorded name only its file (``path``): that file is read again."""
    from .array import ArrayConfig, load_array

    arr = dict(settings["array"])
    if "rows" not in arr:
        return load_array(None if arr.get("path") == "default" else arr.get("path"))
    arr.pop("source", None)
    return ArrayConfig.from_settings(arr)


def make_settings(model=G.DEFAULT_MODEL, formats=G.DEFAULT_FORMATS, accum=G.DEFAULT_ACCUM,
                  rounding=G.DEFAULT_ROUNDING, seeds=G.DEFAULT_SEEDS, limit=G.DEFAULT_LIMIT, array=None,
                  data=None, calibration=DEFAULT_CALIBRATION, scale="auto", pe=None, serial_operands=None,
                  iso_area=False) -> dict:
    """The settings of a sweep (validated; raises ``ValueError`` / ``FileNotFoundError`` naming bad input).

    ``array``: an array TOML path or None (the default); ``pe`` / ``serial_operands`` override its PE
    kind; ``iso_area``: cost each configuration on an array of the float32 array's area."""
    grid = G.build_grid(formats, accum, rounding, seeds)
    if not isinstance(iso_area, bool):
        raise ValueError(f"iso_area must be True or False, got {iso_area!r}")
    arr = array_settings(array, pe, serial_operands)
    check_costable(grid, arr)
    if scale not in G.SCALE_MODES:
        raise ValueError(f"--scale: unknown mode {scale!r}; valid: {', '.join(G.SCALE_MODES)}")
    mfile = model_file(model)
    if mfile.suffix.lower() == ".tflite":
        net = load_network_cached(mfile, _sha256_file(mfile))
        if net.meta.get("format") != "tflite-float":
            raise ValueError(f"{mfile} is an integer-quantized TF-Lite model: it runs with its own arithmetic "
                             "(hwsim run --model it), a sweep needs a float model to map onto each format "
                             "(a float32 or float16-weight .tflite, or the Keras model)")
    if not isinstance(calibration, int) or isinstance(calibration, bool) or calibration < 1:
        raise ValueError(f"--calibration must be a positive number of images, got {calibration!r}")
    images, labels = load_test_images(data, limit)
    return {
        "format": SETTINGS_FORMAT,
        "model": model if model in _zoo_names() else str(mfile),
        "model_sha256": _sha256_file(mfile),
        "data": None if data is None else str(Path(data).resolve()),
        "images": int(len(labels)),
        "data_sha256": data_digest(images, labels),
        "calibration": {"split": "train", "images": calibration},
        "scale": scale,
        "array": arr,
        "iso_area": iso_area,
        "formats": [list(p) for p in grid.pairs],
        "accum": list(grid.accums),
        "rounding": list(grid.roundings),
        "seeds": grid.seeds,
    }


def check_costable(grid, array: dict) -> None:
    """Raise ``ValueError`` listing every configuration the array's PE kind cannot run (the float32
    baseline always runs on fixed PEs)."""
    from .pe import check_spec

    bad = []
    for c in grid.configs:
        if c == G.BASELINE:
            continue
        try:
            check_spec(G.mac_spec(*c), array["pe"], array["serial_operands"])
        except ValueError as exc:
            bad.append(f"{G.config_label(c)}: {exc}")
    if bad:
        raise ValueError(f"{len(bad)} configuration(s) cannot be costed on {array['pe']} PEs: " + "; ".join(bad[:4])
                         + (f"; ... ({len(bad) - 4} more)" if len(bad) > 4 else ""))


def _zoo_names():
    from . import zoo

    return zoo.NAMES


def grid_of(settings) -> G.Grid:
    return G.build_grid([":".join(p) for p in settings["formats"]], settings["accum"], settings["rounding"],
                        settings["seeds"])


def settings_diff(old: dict, new: dict) -> list[str]:
    """The differences in what decides the measured points (the :data:`COST_KEYS` are left out)."""
    keys = sorted((set(old) | set(new)) - set(COST_KEYS), key=lambda k: (list(new).index(k) if k in new else 99, k))
    out = []
    for k in keys:
        if old.get(k) == new.get(k):
            continue
        if k == "data_sha256":  # a sweep never mixes data sets
            out.append(f"the CIFAR-10 test images found now differ from those the sweep started with (digest "
                       f"{str(new.get(k))[:12]}... now, {str(old.get(k))[:12]}... in DIR): another data set or "
                       "another copy; point --data / HWSIM_DATA at the original")
        else:
            out.append(f"{k}: {json.dumps(old.get(k))} in DIR, {json.dumps(new.get(k))} now")
    return out


# ------------------------------------------------------------------------------------------------
# the directory


def _hardware_changed(old: dict, new: dict) -> bool:
    """Whether the costing hardware differs (settings of an older hwsim name only the array's file)."""
    if bool(old.get("iso_area", False)) != bool(new.get("iso_area", False)):
        return True
    try:
        return settings_array(old) != settings_array(new)
    except (ValueError, FileNotFoundError):
        return True


def _array_label(settings) -> str:
    a = settings.get("array", {})
    name = a.get("name", "?")
    return name + (" iso-area" if settings.get("iso_area") else "")


class SweepDir:
    """The output directory: settings check, lock, append-only journal of points."""

    def __init__(self, path, settings: dict):
        self.path = Path(path)
        self.settings = settings
        self._lock_fh = None

    def open(self):
        """Create or reopen the directory; check it is writable and holds this sweep (or none)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise SweepError(f"output {p} exists and is not a directory")
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SweepError(f"cannot write to output directory {p}: {exc.strerror or exc}") from None
        sfile, jfile = p / SETTINGS_FILE, p / POINTS_FILE
        if sfile.exists():
            try:
                old = json.loads(sfile.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise SweepError(f"{sfile} is unreadable ({exc}); not touching {p}") from None
            diff = settings_diff(old, self.settings)
            if diff:
                raise SweepError(f"{p} holds a sweep with different settings; use another --out directory or "
                                 f"the original settings. Differences: " + "; ".join(diff))
        else:
            leftovers = [f for f in (POINTS_FILE, RESULTS_CSV, RESULTS_JSON) if (p / f).exists()]
            if leftovers:
                raise SweepError(f"{p} holds {', '.join(leftovers)} but no {SETTINGS_FILE}; refusing to mix or "
                                 "overwrite results: use another --out directory")
        self._lock_fh = open(p / ".lock", "a")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            self._lock_fh = None
            raise SweepError(f"another sweep is running in {p} (it holds {p / '.lock'})") from None
        if not sfile.exists():
            _atomic_write(sfile, json.dumps(self.settings, indent=2) + "\n")
        elif _hardware_changed(old, self.settings):
            print(f"{p}: costing on another array now ({_array_label(old)} -> {_array_label(self.settings)}); every "
                  "cost is derived again from the recorded points", file=sys.stderr)
            _atomic_write(sfile, json.dumps(self.settings, indent=2) + "\n")
        if jfile.exists():
            repair_points(p, stream=sys.stderr)
        if not jfile.exists():
            with open(jfile, "x", newline="") as fh:
                fh.write(",".join(POINT_COLUMNS) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return self

    def close(self):
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def done(self) -> dict:
        return read_points(self.path)

    def append(self, row: dict):
        """Append one point's row with its checksum; flush and fsync before returning."""
        buf = io.StringIO()
        fields = [_fmt(row[c]) for c in POINT_FIELDS]
        csv.writer(buf, lineterminator="\n").writerow(fields + [row_checksum(fields)])
        jfile = self.path / POINTS_FILE
        with open(jfile, "ab") as fh:
            if fh.tell() > 0:
                with open(jfile, "rb") as r:
                    r.seek(fh.tell() - 1)
                    if r.read(1) != b"\n":  # a torn line from a killed run: end it, keep it (ignored)
                        fh.write(b"\n")
            fh.write(buf.getvalue().encode())
            fh.flush()
            os.fsync(fh.fileno())


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _atomic_write(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def row_checksum(fields) -> str:
    """The checksum of a points.csv record: the first 16 hex digits of SHA-256 over its fields (as written,
    joined by the unit separator). It catches a record edited by hand or damaged on disk."""
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:16]


def _parse_point_row(rec: dict) -> dict | None:
    try:
        row = {c: rec[c] for c in POINT_FIELDS}
        row["seed"] = int(row["seed"])
        row["images"] = int(row["images"])
        row["correct"] = int(row["correct"])
        row["accuracy"] = float(row["accuracy"])
        if len(row["outputs_sha256"]) != 16:
            return None
        row["seconds"] = float(row["seconds"])
        if row["accuracy"] != row["correct"] / row["images"]:
            return None
        return row
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def scan_points(path):
    """Read ``DIR/points.csv`` and check every record. Returns ``(rows, problems, legacy)``: ``rows`` maps
    point key -> row (the first valid record per point), ``problems`` lists ``(line number, reason, raw
    line)`` for each record that is torn, malformed, inconsistent or fails its checksum, and ``legacy`` is
    True for a file written before records carried checksums (its rows are accepted when consistent).
    A zero-byte file reads as no records, with one problem saying so."""
    jfile = Path(path) / POINTS_FILE
    if not jfile.exists():
        return {}, [], False
    with open(jfile, newline="", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    if not text:
        return {}, [(1, "the file is empty (0 bytes): no point is recorded, every point will be computed", "")], False
    lines = text.split("\n")
    header = next(csv.reader([lines[0]]))
    if tuple(header) in (POINT_COLUMNS, POINT_FIELDS_V1 + ("checksum",)):
        legacy = tuple(header) != POINT_COLUMNS  # v1: checksummed, with cost columns
    elif tuple(header) in (POINT_FIELDS, POINT_FIELDS_V1):
        legacy = True
    else:
        raise SweepError(f"{jfile} has columns {header}, expected {list(POINT_COLUMNS)}: not a points file of this "
                         f"hwsim; move it away (the sweep then starts over) or use another --out directory")
    out, problems = {}, []
    torn = lines[-1]  # "" when the text ends with a newline, else a line a killed run left unfinished
    for n, line in enumerate(lines[1:-1], start=2):
        if not line:
            problems.append((n, "empty line", line))
            continue
        fields = next(csv.reader([line]))
        if len(fields) != len(header):
            problems.append((n, f"{len(fields)} fields, expected {len(header)} (damaged or torn)", line))
            continue
        rec = dict(zip(header, fields))
        if "checksum" in rec and rec["checksum"] != row_checksum(fields[:-1]):
            problems.append((n, "checksum mismatch: the record was edited or damaged", line))
            continue
        row = _parse_point_row(rec)
        if row is None:
            problems.append((n, "malformed or inconsistent values (accuracy != correct / images, ...)", line))
            continue
        key = (row["weights"], row["activations"], row["accum"], row["rounding"], row["seed"])
        out.setdefault(key, row)
    if torn:
        problems.append((len(lines), "incomplete last line (an interrupted run)", torn))
    return out, problems, legacy


def read_points(path) -> dict:
    """``{point key: row}`` from ``DIR/points.csv``: the valid records (see :func:`scan_points`; invalid
    ones are left out, and :func:`repair_points` reports and removes them)."""
    return scan_points(path)[0]


def repair_points(path, stream=None) -> list:
    """Report every invalid record of ``DIR/points.csv`` (file and line, the reason) on ``stream`` and
    rewrite the file with the valid records only, so their points are computed again; a file without
    checksums gets them (its consistent records are kept). Returns the problems."""
    jfile = Path(path) / POINTS_FILE
    rows, problems, legacy = scan_points(path)
    for n, reason, _ in problems:
        if stream is not None:
            print(f"{jfile}:{n}: {reason}; the point is computed again", file=stream)
    if problems or legacy:
        if legacy and stream is not None:
            print(f"{jfile}: rewriting its {len(rows)} records in this hwsim's form (checksummed, costs derived at "
                  "report time)", file=stream)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(POINT_COLUMNS)
        for row in rows.values():
            fields = [_fmt(row[c]) for c in POINT_FIELDS]
            w.writerow(fields + [row_checksum(fields)])
        _atomic_write(jfile, buf.getvalue())
    return problems


# ------------------------------------------------------------------------------------------------
# evaluating one point (in any process)


def load_network_cached(mfile: Path, sha: str):
    """``hwsim.load_model(mfile)``, through a pickle of the IR in the hwsim cache folder keyed by the
    model file's SHA-256 and the importer's source: a second process (a Dask worker, a rerun) gets the
    network without importing TensorFlow. A damaged cache entry is rebuilt."""
    import pickle

    from . import frontends, graph
    from .data import cache_dir
    from .frontends import load_model
    from .graph import ir

    src = hashlib.sha256()  # the importers' and the IR's code: a change rebuilds the cached IR
    for pkg in (frontends, graph):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            src.update(f.read_bytes())
    path = cache_dir() / f"ir-{sha[:20]}-{src.hexdigest()[:12]}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                net = pickle.load(fh)
            if isinstance(net, ir.Network):
                return net
        except Exception:  # damaged entry: rebuild below
            pass
    net = load_model(str(mfile))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            pickle.dump(net, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs speed
        pass
    return net


class Context:
    """What a process needs to evaluate points of one sweep: network, images, calibration, array.
    Built once per process and settings (:func:`context`)."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.network = sweep_network(settings)
        from .data import to_model_layout

        self.images, self.labels = load_test_images(settings["data"], settings["images"])
        dig = data_digest(self.images, self.labels)
        if dig != settings["data_sha256"]:
            raise SweepError(f"the CIFAR-10 test images found here (digest {dig[:12]}...) differ from the sweep's "
                             f"({settings['data_sha256'][:12]}...)")
        self.images = to_model_layout(self.images, self.network.input_shape)  # NCHW for ONNX models
        self._calibration = None
        self._nets = {}

    @property
    def calibration(self):
        if self._calibration is None:
            from .data import load_cifar10

            from .data import to_model_layout

            images, _ = load_cifar10("train", path=self.settings["data"])
            self._calibration = to_model_layout(images[subset(len(images), self.settings["calibration"]["images"])],
                                                self.network.input_shape)
        return self._calibration

    def network_for(self, weights, activations, spec):
        """The network to run for this MAC unit (quantized; cached per process)."""
        key = (weights, activations, spec.a.name, spec.b.name, spec.accum.name,
               None if spec.product is None else spec.product.name, spec.rounding)
        if key not in self._nets:
            if len(self._nets) >= 8:
                self._nets.pop(next(iter(self._nets)))
            self._nets[key] = prepare_network(self, weights, activations, spec)
        return self._nets[key]


def prepare_network(ctx: Context, weights, activations, spec):
    """The network for a point: float32 operands run the float network as is; every other operand pair
    is quantized by ``quant.quantize_model`` with per-channel weights and the scales of
    :func:`hwsim.sweep.scale_kind`, calibrated on ``ctx.calibration`` when a scale needs it."""
    if (weights, activations) == ("fp32", "fp32"):
        return ctx.network
    from quant import quantize_model

    mode = ctx.settings["scale"]
    sw, sa = G.scale_kind(weights, mode), G.scale_kind(activations, mode)
    needs = {"real", "pow2"} & {sw, sa}
    return quantize_model(ctx.network, weights=weights, activations=activations, mac=spec, per_channel=True,
                          calibration=ctx.calibration if needs else None,
                          scale={"weights": sw, "activations": sa})


_CONTEXTS: dict = {}


def context(settings: dict) -> Context:
    key = json.dumps(settings, sort_keys=True)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = Context(settings)
    return _CONTEXTS[key]


def evaluate(settings: dict, point: G.Point, on_images=None, batch_size: int = DEFAULT_BATCH) -> dict:
    """Evaluate one point; returns its ``points.csv`` row. ``on_images(n)`` is called after each batch."""
    from kernels._memo import reuse_weights

    from .graph.runner import forward, resolve_specs

    t0 = time.perf_counter()
    ctx = context(settings)
    spec = G.mac_spec(point.weights, point.activations, point.accum, point.rounding)
    net = ctx.network_for(point.weights, point.activations, spec)
    specs = resolve_specs(net, spec)
    images, labels = ctx.images, ctx.labels
    correct = 0
    digest = hashlib.sha256()
    with reuse_weights():  # the weights are rounded and laid out once per point, not once per slice
        for start in range(0, len(labels), batch_size):
            x = images[start:start + batch_size].astype(np.float32)
            y = forward(net, x, specs, seed=point.seed, offset=start)
            digest.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
            correct += int((np.argmax(y.reshape(len(y), -1), axis=1) == labels[start:start + len(y)]).sum())
            if on_images is not None:
                on_images(len(y))
    n = int(len(labels))
    return {"weights": point.weights, "activations": point.activations, "accum": point.accum,
            "rounding": point.rounding, "seed": point.seed, "images": n, "correct": correct,
            "accuracy": correct / n, "outputs_sha256": digest.hexdigest()[:16],
            "seconds": round(time.perf_counter() - t0, 3)}


PROGRESS_TOPIC = "hwsim-sweep-progress"


def _dask_evaluate(settings: dict, point_key: tuple, batch_size: int = DEFAULT_BATCH) -> dict:
    """The Dask task: one point, on one thread, reporting images done to the client."""
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba always present; thread count is only a speed matter
        pass
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # pragma: no cover - run outside a worker
        worker = None

    def report(n):
        if worker is not None:
            worker.log_event(PROGRESS_TOPIC, {"point": list(point_key), "images": n})

    return evaluate(settings, G.Point(*point_key), on_images=report, batch_size=batch_size)


WARM_IMAGES = 8


def warm_up(settings: dict, todo, batch_size: int = DEFAULT_BATCH, on_config=None) -> int:
    """Compile, in this process and before any point is handed out, every kernel the points in ``todo``
    need: each distinct configuration's network runs on the first :data:`WARM_IMAGES` test images. A
    Dask sweep runs this on its workers, each for a disjoint group of configurations (:func:`warm_groups`).

    A kernel compiles the first time a call needs it and Numba caches it on disk (``kernels.ops``), so
    the workers then load each kernel from the cache instead of every worker compiling the same kernels
    at the same time. This also writes the network's IR cache (the workers need no TensorFlow) and, for
    calibrated configurations, the decoded training images. In serial mode the prepared networks are
    reused by the points. A kernel path chosen on data a later batch differs in (``kernels.ops.kernel_path``
    checks operand ranges) is compiled by the worker that meets it. ``on_config(i, n, label)`` is called
    before each configuration. Returns the number of configurations."""
    from .graph.runner import forward, resolve_specs

    configs = list(dict.fromkeys(p.config for p in todo))
    if not configs:
        return 0
    ctx = context(settings)
    x = ctx.images[:min(WARM_IMAGES, batch_size, len(ctx.images))].astype(np.float32)
    for i, cfg in enumerate(configs):
        if on_config is not None:
            on_config(i, len(configs), G.config_label(cfg))
        spec = G.mac_spec(*cfg)
        net = ctx.network_for(cfg[0], cfg[1], spec)
        if len(x):
            forward(net, x, resolve_specs(net, spec), seed=0, offset=0)
    return len(configs)


WARM_TOPIC = "hwsim-sweep-warm"


def kernel_group(config) -> str:
    """The kernel path a configuration's MAC layers will most likely take (``kernels.ops.kernel_path`` on
    benign operands; "exact" for the BLAS integer path): configurations of one group share their kernels."""
    from kernels.ops import kernel_path

    return kernel_path(G.mac_spec(*config))


#: seconds to compile each kernel group's kernel in a fresh process (AMD EPYC, 2026-12-06: the default
#: sweep's warm-up with an empty Numba cache, compile events; STOCH64 and STOCH32_PRODUCT 2026-12-07, a
#: first matmul call; STOCH32 scaled by 1.38 on 2026-12-07, when its WIDE kind made a first stochastic
#: matmul after a nearest one compile in 31.7 s instead of 23.0 s); only their proportions matter
_GROUP_COMPILE_S = {"PRODUCT": 8.0, "GENERIC": 8.0, "STOCH32_PRODUCT": 7.4, "STOCH32": 5.1, "FIXED_STOCH": 4.7,
                    "STOCH64": 4.6, "LANE": 4.0, "NEAREST": 3.3, "NATIVE32": 3.1, "HALF_F16": 2.9, "HALF_BF16": 2.9,
                    "exact": 2.4}


def warm_groups(configs, n: int) -> list[list]:
    """Split the distinct configurations into at most ``n`` lists, whole kernel groups to one list each
    (:func:`kernel_group`): the costliest groups to compile first, each onto the least loaded list."""
    groups: dict = {}
    for c in dict.fromkeys(tuple(c) for c in configs):
        groups.setdefault(kernel_group(c), []).append(c)
    bins = [[] for _ in range(max(1, min(n, len(groups))))]
    load = [0.0] * len(bins)
    for key, g in sorted(groups.items(), key=lambda kv: (-_GROUP_COMPILE_S.get(kv[0], 4.0), kv[0])):
        i = load.index(min(load))
        bins[i].extend(g)
        load[i] += _GROUP_COMPILE_S.get(key, 4.0)
    return [b for b in bins if b]


def _dask_warm(settings: dict, configs, of: int, batch_size: int = DEFAULT_BATCH) -> int:
    """The Dask warm-up task: :func:`warm_up` of some configurations on one worker thread, reporting
    each configuration to the client."""
    try:
        import numba

        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - speed only
        pass
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # pragma: no cover - run outside a worker
        worker = None

    def report(i, n, label):
        if worker is not None:
            worker.log_event(WARM_TOPIC, {"label": label, "of": of})

    points = [G.Point(*c, seed=0) for c in configs]
    return warm_up(settings, points, batch_size=batch_size, on_config=report)


# ------------------------------------------------------------------------------------------------
# progress


class Progress:
    """Points and images done, rate and ETA on one stderr line (a new line per finished point when
    stderr is not a terminal)."""

    def __init__(self, points: int, images_per_point: int, enabled: bool = True, stream=None):
        self.points, self.ipp = points, images_per_point
        self.total_images = points * images_per_point
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.done_points = 0
        self.done_images = 0
        self._partial = {}
        self._finished = set()
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._last = 0.0

    def warming(self, i, n, label=""):
        """Configuration ``i`` of ``n`` is compiling its kernels (:func:`warm_up`); no rate or ETA yet."""
        if not self.enabled:
            return
        self._emit(f"compiling kernels: configuration {i + 1}/{n}  {label}")

    def _emit(self, line):
        """One status line: rewritten in place on a terminal, a new line otherwise."""
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def start(self):
        """The clock of the rate and the ETA starts here, after the warm-up, so compile time does not
        inflate them."""
        with self._lock:
            self.t0 = time.perf_counter()
            self._last = 0.0

    def images(self, point_key, n):
        with self._lock:
            if point_key in self._finished:  # a late progress event of a finished point
                return
            self._partial[point_key] = self._partial.get(point_key, 0) + n
            self._render(False)

    def point(self, point_key, label=""):
        with self._lock:
            self._partial.pop(point_key, None)
            self._finished.add(point_key)
            self.done_points += 1
            self.done_images += self.ipp
            self._render(True, label)

    def _render(self, finished, label=""):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not finished and (not self.tty or now - self._last < 0.2):
            return
        self._last = now
        imgs = self.done_images + sum(self._partial.values())
        frac = imgs / self.total_images if self.total_images else 1.0
        el = now - self.t0
        rate = imgs / el if el > 0 else 0.0
        # an estimate only once a point has finished: before that the rate holds the workers' start-up
        eta = (self.total_images - imgs) / rate if (rate > 0 and self.done_points) else math.inf
        bar = "#" * int(30 * frac)
        eta_s = "--" if not math.isfinite(eta) else _duration(eta)
        line = (f"points {self.done_points}/{self.points} [{bar:<30}] images {imgs}/{self.total_images} "
                f"{rate:5.1f} img/s ETA {eta_s}")
        if finished and label:
            line += f"  done: {label}"
        self._emit(line)

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ------------------------------------------------------------------------------------------------
# running a sweep


@dataclass
class SweepRun:
    """What :func:`run_sweep` did."""

    out: Path
    total: int
    already: int
    evaluated: int
    results: list = field(default_factory=list)
    complete: bool = False


def run_sweep(settings: dict, out, *, scheduler=None, workers: int = 2, serial: bool = False,
              progress: bool = True, max_points: int | None = None, batch_size: int = DEFAULT_BATCH,
              render: bool = True, figures: bool = True, cluster_kwargs: dict | None = None) -> SweepRun:
    """Evaluate every point of ``settings`` missing from ``out``; then write the results files.

    ``serial``: in this process, in grid order; else on Dask: ``scheduler`` (an address, or a
    ``distributed.Client``) or a ``LocalCluster`` of ``workers`` single-threaded processes.
    ``max_points``: stop after evaluating that many (for tests and partial runs). ``render``:
    write results.csv/json at the end, and with ``figures`` the plots and summary.md too.
    """
    grid = grid_of(settings)
    points = grid.points
    with SweepDir(out, settings) as d:
        done = d.done()
        todo = [p for p in points if p.key not in done]
        if max_points is not None:
            todo = todo[:max_points]
        run = SweepRun(out=d.path, total=len(points), already=len(points) - len([p for p in points if p.key not in done]),
                       evaluated=0)
        bar = Progress(len(todo), settings["images"], enabled=progress)
        try:
            if todo:
                if serial:
                    warm_up(settings, todo, batch_size=batch_size, on_config=bar.warming)
                    bar.start()
                    _run_serial(settings, todo, d, bar, batch_size, run)
                else:
                    _run_dask(settings, todo, d, bar, batch_size, run, scheduler, workers, cluster_kwargs or {})
        finally:
            bar.close()
            record_versions(d.path, run.evaluated)
            if render:
                run.results = render_results(d.path, settings, figures=figures)
            done = d.done()
            run.complete = all(p.key in done for p in points)
    return run


def _run_serial(settings, todo, d, bar, batch_size, run):
    for p in todo:
        row = evaluate(settings, p, on_images=lambda n, k=p.key: bar.images(k, n), batch_size=batch_size)
        d.append(row)
        run.evaluated += 1
        bar.point(p.key, str(p))


def _run_dask(settings, todo, d, bar, batch_size, run, scheduler, workers, cluster_kwargs):
    from distributed import Client, LocalCluster, as_completed

    cluster = client = None
    own_client = True
    if scheduler is None:
        env = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
               "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        kw = dict(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                  env=env, silence_logs=40)
        kw.update(cluster_kwargs)
        cluster = LocalCluster(**kw)
        client = Client(cluster)
    elif isinstance(scheduler, Client):
        client, own_client = scheduler, False
    else:
        client = Client(scheduler)

    def on_event(event):
        _, msg = event
        bar.images(tuple(msg["point"]), msg["images"])

    warmed = []

    def on_warm(event):
        _, msg = event
        warmed.append(msg["label"])
        bar.warming(len(warmed) - 1, msg["of"], msg["label"])

    try:
        try:
            client.subscribe_topic(PROGRESS_TOPIC, on_event)
            client.subscribe_topic(WARM_TOPIC, on_warm)
        except Exception:  # pragma: no cover - progress is cosmetic
            pass
        # compile before fanning out: the workers warm disjoint groups of configurations at once (a group
        # per kernel path, so no kernel is compiled twice), and every point after that loads its kernels
        context(settings)  # this process writes the network's IR cache and decodes the test images first
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        bins = warm_groups([p.config for p in todo], n_workers)
        warm = [client.submit(_dask_warm, settings, b, sum(len(x) for x in bins), batch_size, pure=False,
                              key=f"hwsim-warm-{i}-{os.getpid()}-{time.monotonic_ns()}") for i, b in enumerate(bins)]
        for f in warm:
            f.result()
        bar.start()
        futures = {}
        for i, p in enumerate(todo):
            f = client.submit(_dask_evaluate, settings, p.key, batch_size, pure=False, priority=-i,
                              key=f"hwsim-point-{i}-{os.getpid()}-{time.monotonic_ns()}")
            futures[f] = p
        try:
            for f in as_completed(futures):
                p = futures[f]
                row = f.result()
                d.append(row)
                run.evaluated += 1
                bar.point(p.key, str(p))
        except BaseException:
            client.cancel(list(futures))
            raise
        finally:
            try:
                client.unsubscribe_topic(PROGRESS_TOPIC)
                client.unsubscribe_topic(WARM_TOPIC)
            except Exception:  # pragma: no cover
                pass
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------------------------------------
# aggregation


def sweep_network(settings: dict):
    """The sweep's network (checked against the recorded SHA-256), through the IR cache."""
    mfile = model_file(settings["model"])
    sha = _sha256_file(mfile)
    if sha != settings["model_sha256"]:
        raise SweepError(f"model {settings['model']} ({mfile}) has SHA-256 {sha[:12]}..., the sweep was "
                         f"started with {settings['model_sha256'][:12]}...: a different model")
    return load_network_cached(mfile, sha)


def config_costs(settings: dict, configs, network=None) -> dict:
    """``{config: cost columns}`` (:data:`RESULT_COLUMNS` from ``array`` to ``energy_ratio``) of the
    configurations on the sweep's hardware: :func:`hwsim.cost` of the configuration's MAC spec against
    the float32 baseline, on the recorded array, iso-area when the settings say so."""
    from .cost import array_size, cost

    configs = list(configs)
    if not configs:
        return {}
    net = sweep_network(settings) if network is None else network
    arr = settings_array(settings)
    fixed = arr.with_(pe="fixed", serial_operands="a")
    out = {}
    for c in configs:
        # the float32 baseline runs on fixed PEs, as hwsim.cost's baseline does (Bit Fusion and bit-serial
        # PEs run no floats)
        r = cost(net, G.mac_spec(*c), fixed if c == G.BASELINE else arr, iso_area=bool(settings.get("iso_area", False)))
        ratios = r.ratios
        out[c] = {"array": array_size(r.array), "area_mm2": r.area_mm2, "area_ratio": ratios["area"],
                  "cycles": r.cycles, "cycles_ratio": ratios["cycles"], "inferences_per_s": r.inferences_per_s,
                  "throughput_ratio": ratios["throughput"], "energy_pj": r.energy_pj,
                  "energy_ratio": ratios["energy"]}
    return out


def aggregate(settings: dict, done: dict, network=None) -> list[dict]:
    """One row per configuration of the grid that has all its seeds done (:data:`RESULT_COLUMNS`),
    in grid order, costed by :func:`config_costs`; ``pareto`` marks the accuracy/energy Pareto front."""
    grid = grid_of(settings)
    rows = []
    for c in grid.configs:
        keys = [(*c, s) for s in G.seeds_for(c[3], grid.seeds)]
        if not all(k in done for k in keys):
            continue
        pts = [done[k] for k in keys]
        accs = [p["accuracy"] for p in pts]
        w, a, acc, r = c
        rows.append({
            "weights": w, "activations": a, "accum": acc, "rounding": r, "label": G.config_label(c),
            "family": G.family(w), "weight_bits": G.storage_bits(w), "activation_bits": G.storage_bits(a),
            "accum_bits": G.storage_bits(acc), "seeds": len(pts), "images": pts[0]["images"],
            "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "accuracy_min": min(accs), "accuracy_max": max(accs), "delta_vs_fp32": None, "pareto": False,
        })
    costs = config_costs(settings, [(r["weights"], r["activations"], r["accum"], r["rounding"]) for r in rows], network)
    for r in rows:
        r.update(costs[(r["weights"], r["activations"], r["accum"], r["rounding"])])
    base = [r for r in rows if (r["weights"], r["activations"], r["accum"], r["rounding"]) == G.BASELINE]
    if base:
        for r in rows:
            r["delta_vs_fp32"] = r["accuracy_mean"] - base[0]["accuracy_mean"]
    for i in pareto_front(rows):
        rows[i]["pareto"] = True
    return rows


def pareto_front(rows, value=lambda r: r["energy_pj"], higher_better: bool = False) -> list[int]:
    """Indices of rows not dominated in (``value``: lower is better unless ``higher_better``; higher mean
    accuracy). Default: energy per inference."""
    sign = -1 if higher_better else 1
    order = sorted(range(len(rows)), key=lambda i: (sign * value(rows[i]), -rows[i]["accuracy_mean"]))
    front, best = [], -math.inf
    for i in order:
        if rows[i]["accuracy_mean"] > best:
            front.append(i)
            best = rows[i]["accuracy_mean"]
    return sorted(front)


def results_csv_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else _fmt(r[c]) for c in RESULT_COLUMNS])
    return buf.getvalue()


VERSIONS_FILE = "versions.json"
_VERSIONED = ("hwsim", "numpy", "numba", "llvmlite", "tensorflow", "keras", "scipy", "ml_dtypes")


def environment_versions() -> dict:
    """The versions of Python and of the packages a sweep's figures depend on, as installed here."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def record_versions(path, points: int) -> None:
    """Add ``points`` evaluated points to this environment's entry of ``path/versions.json`` (a list of
    {versions, points}: a sweep resumed under other versions lists each). Local Dask workers run this
    interpreter; an external scheduler's workers are assumed to run the same versions."""
    if points <= 0:
        return
    f = Path(path) / VERSIONS_FILE
    try:
        envs = json.loads(f.read_text())["environments"] if f.exists() else []
    except (ValueError, KeyError, TypeError) as exc:
        raise SweepError(f"{f} is damaged ({exc}); delete it to start a new record") from None
    mine = environment_versions()
    for e in envs:
        if e.get("versions") == mine:
            e["points"] = int(e.get("points", 0)) + points
            break
    else:
        envs.append({"versions": mine, "points": points})
    _atomic_write(f, json.dumps({"environments": envs}, indent=1) + "\n")


def read_versions(path) -> list:
    f = Path(path) / VERSIONS_FILE
    try:
        return json.loads(f.read_text())["environments"] if f.exists() else []
    except (ValueError, KeyError, TypeError):
        return []


def render_results(path, settings: dict | None = None, figures: bool = True) -> list[dict]:
    """Write results.csv, results.json and (``figures``) the plots and summary.md of the sweep in ``path``."""
    path = Path(path)
    if settings is None:
        settings = load_settings(path)
    rows = aggregate(settings, read_points(path))
    _atomic_write(path / RESULTS_CSV, results_csv_text(rows))
    _atomic_write(path / RESULTS_JSON, json.dumps({"settings": settings, "versions": read_versions(path),
                                                   "results": rows}, indent=1) + "\n")
    if not figures:
        return rows
    from . import plots, report

    figs = [f.name for f in plots.render_all(path, settings, rows)]
    _atomic_write(path / report.SUMMARY_FILE, report.markdown(settings, rows, grid_of(settings), figs))
    return rows


def load_settings(path) -> dict:
    sfile = Path(path) / SETTINGS_FILE
    if not sfile.exists():
        raise FileNotFoundError(f"{path} holds no sweep: {sfile} not found")
    try:
        return json.loads(sfile.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sfile} is not valid JSON: {exc}") from None
