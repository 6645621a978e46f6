"""Post-training quantization accuracy of the zoo models on the CIFAR-10 test set.

For each model: float32 (``hwsim.run(net, x, mac="fp32")``) and the quantized networks of
:func:`quant.quantize_model` -- int8, int8 with TF-Lite requantization, int6 / int4 weights with int8
activations (int4 also with MSE-optimal weight clipping), fp8_e4m3 -- top-1 on the full 10,000-image
test set (or ``--test N`` evenly spaced images). Calibration: ``--calib`` (default 1000) training images
drawn at random with seed 0, method ``--method`` (default min-max) for activations; weights per output
channel, min-max unless the row says otherwise.

    python bench/ptq_accuracy.py --models cifar_cnn --json /tmp/ptq_cifar_cnn.json
    python bench/ptq_accuracy.py --merge /tmp/ptq_cifar_cnn.json /tmp/ptq_mobilenet.json --out results/ptq_accuracy.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "int8": dict(weights="int8", activations="int8"),
    "int8, TF-Lite requant": dict(weights="int8", activations="int8", requant="tflite"),
    "int6 w / int8 a": dict(weights="int6", activations="int8"),
    "int4 w / int8 a": dict(weights="int4", activations="int8"),
    "int4 w (MSE clip) / int8 a": dict(weights="int4", activations="int8", weight_method="mse"),
    "fp8_e4m3": dict(weights="fp8_e4m3", activations="fp8_e4m3"),
}


def _load(name, path=None):
    """The IR of zoo model ``name`` (its committed weights, or the .keras file ``path``)."""
    import hwsim

    try:
        return hwsim.load_model(path or name), "hwsim.load_model"
    except ValueError as exc:
        if "is shared" not in str(exc):
            raise
        # the importer rejects a saved Sequential whose layers Keras re-called on load; same weights
        # through a freshly built model of the same architecture
        import keras

        from hwsim import zoo

        fresh = zoo.build(name)
        saved = keras.models.load_model(path, compile=False) if path else zoo.load_keras(name)
        fresh.set_weights(saved.get_weights())
        return hwsim.load_model(fresh), f"zoo.build + set_weights (importer: {exc})"


def run_model(name, n_test, n_calib, method, configs, path=None):
    import hwsim
    from quant import quantize_model

    net, how = _load(name, path)
    x, y = hwsim.load_cifar10("test")
    if n_test < len(x):
        idx = np.linspace(0, len(x) - 1, n_test).astype(int)
        x, y = x[idx], y[idx]
    xt, _ = hwsim.load_cifar10("train")
    cal = xt[np.random.default_rng(0).choice(len(xt), n_calib, replace=False)]
    rows = []
    t = time.perf_counter()
    base = hwsim.accuracy(net, x, y, mac="fp32", progress=False)
    rows.append(dict(config="float32", accuracy=base, delta=0.0, mac="fp32", seconds=time.perf_counter() - t))
    print(f"{name:10s} {'float32':28s} {base * 100:6.2f}%", flush=True)
    for label in configs:
        kw = CONFIGS[label]
        t = time.perf_counter()
        q = quantize_model(net, calibration=cal, method=method, **kw)
        tq = time.perf_counter() - t
        acc = hwsim.accuracy(q, x, y, progress=False)
        mac = sorted({q[l.name].quant.spec.name for l in net.mac_layers})
        rows.append(dict(config=label, accuracy=acc, delta=acc - base, mac=", ".join(mac), settings=kw,
                         quantize_seconds=tq, seconds=time.perf_counter() - t))
        print(f"{name:10s} {label:28s} {acc * 100:6.2f}%  ({(acc - base) * 100:+.2f})  [{', '.join(mac)}] "
              f"{time.perf_counter() - t:.0f}s", flush=True)
    import hashlib

    from hwsim import zoo

    wfile = Path(path) if path else zoo.model_path(name)
    sha = hashlib.sha256(wfile.read_bytes()).hexdigest()
    return dict(model=name, loaded_by=how, weights=str(wfile), sha256=sha, test_images=len(x), calibration_images=n_calib,
                calibration="random training images, numpy default_rng(0).choice(50000, n, replace=False)",
                method=method, rows=rows)


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:  # pragma: no cover
        return "?"


def markdown(results) -> str:
    lines = ["# Post-training quantization accuracy (CIFAR-10 test set)", "",
             "Produced by `bench/ptq_accuracy.py` (see its docstring for the commands). Top-1 accuracy in percent; "
             "delta against float32 in points. Weights per output channel (symmetric, narrow range), activations "
             "per tensor (asymmetric for integer formats, symmetric for fp8, whose scale maps the calibrated "
             "maximum to 448); int32 accumulators (wrapping) for integer operands, float32 accumulators with exact "
             "products for fp8; requantization `float` (accumulator times s_in*s_w in float64) unless the row "
             "says TF-Lite (fixed-point multiplier + shift to the next layer's int8 scale).", ""]
    for r in results:
        lines += [f"## {r['model']}", "",
                  f"{r['test_images']} test images; calibration: {r['calibration_images']} {r['calibration']}; "
                  f"activation method `{r['method']}`; commit {r.get('commit', '?')}; model loaded by "
                  f"{r['loaded_by'].split(' (')[0]} from `{Path(r.get('weights', '?')).name}` "
                  f"(SHA-256 {r.get('sha256', '?')[:16]}...).", "",
                  "| configuration | top-1 % | delta | MAC units |", "|---|---:|---:|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['config']} | {row['accuracy'] * 100:.2f} | {row['delta'] * 100:+.2f} | {row['mac']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["cifar_cnn", "mobilenet"])
    ap.add_argument("--test", type=int, default=10000, help="test images (evenly spaced; default all 10000)")
    ap.add_argument("--calib", type=int, default=1000, help="calibration training images (default 1000)")
    ap.add_argument("--method", default="minmax", help="activation calibration: minmax, percentile, mse")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="CONFIG",
                    help=f"subset of: {'; '.join(CONFIGS)}")
    ap.add_argument("--weights", nargs="+", default=[], metavar="NAME=FILE",
                    help="use this .keras file for zoo model NAME instead of hwsim/models/NAME.keras")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--merge", nargs="+", help="only merge these JSON results into --out")
    ap.add_argument("--out", help="write the markdown table here")
    a = ap.parse_args(argv)
    if a.merge:
        results = [r for p in a.merge for r in json.loads(Path(p).read_text())]
    else:
        results = []
        paths = dict(w.split("=", 1) for w in a.weights)
        commit = _commit()  # the code measured is the code at the start (the weights' SHA-256 is recorded too)
        for name in a.models:
            r = run_model(name, a.test, a.calib, a.method, a.configs, paths.get(name))
            r.update(commit=commit, python=platform.python_version())
            results.append(r)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1))
    md = markdown(results)
    if a.out:
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(md + "\n")
        tmp.replace(a.out)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
